"""The Linux side of the metadata service: a libvirtd's network namespace, the
169.254.169.254 address and listener in it, and who owns a TCP connection there.

- A local libvirtd is found through its UNIX socket: SO_PEERCRED names the process
  that listens on it (libvirtd, or systemd for a socket-activated one: either is in
  the host's network and mount namespaces), which must be root.
- Its namespace is entered by a thread made for the purpose (setns(2) changes the
  calling thread only), which adds 169.254.169.254/32 to `lo` (rtnetlink) and opens
  the listener and a sock_diag socket there, then ends: a socket stays in the
  namespace it was made in, whichever thread uses it later.
- The address is added with the label `lo:vmapp`, and Loopback.release() removes it
  when the listener closes: an address found there without that label was there
  before (the admin's, or another program's) and is left as found; one with it was
  left by an appliance killed before it could remove it, and is taken as ours.
- A connection from a local address (QEMU's user-mode stack, slirp, connects from
  the QEMU process) is looked up with sock_diag by its exact four-tuple: the peer's
  socket inode, then the process holding that inode among its open files.
"""
from __future__ import annotations

import ctypes
import errno
import ipaddress
import os
import socket
import struct
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

METADATA_ADDRESS = "169.254.169.254"
METADATA_PORT = 80
LISTEN_BACKLOG = 64
CLONE_NEWNET = 0x40000000
LOOPBACK_INDEX = 1  # `lo` is the first interface of every network namespace
# libvirt's default sockets for qemu:///system: the modular daemon's, else libvirtd's.
SYSTEM_SOCKETS = ("/run/libvirt/virtqemud-sock", "/run/libvirt/libvirt-sock")
# netlink
NLMSG_ERROR = 2
NLM_F_REQUEST, NLM_F_ACK, NLM_F_EXCL, NLM_F_CREATE = 0x1, 0x4, 0x200, 0x400
NLM_F_DUMP = 0x300
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
IFA_ADDRESS, IFA_LOCAL, IFA_LABEL = 1, 2, 3
NLMSG_DONE = 3
OUR_LABEL = "lo:vmapp"  # on the address the service adds: whose it is, after a crash
RT_SCOPE_HOST = 254
NETLINK_SOCK_DIAG, SOCK_DIAG_BY_FAMILY = 4, 20
TCP_ESTABLISHED = 1
NO_COOKIE = 0xFFFFFFFF
_NLMSG = struct.Struct("=LHHLL")
_DIAG_MSG = struct.Struct("=BBBB HH 16s 16s I II IIIII")  # inet_diag_msg (ports big-endian)
_IFADDR = struct.Struct("=BBBBI")  # ifaddrmsg: family, prefix length, flags, scope, index
_RTA = struct.Struct("=HH")
_NDMSG = struct.Struct("=BBHiHBB")  # ndmsg: family, pads, ifindex, state, flags, type
RTM_NEWNEIGH, RTM_GETNEIGH = 28, 30
NDA_DST, NDA_LLADDR = 1, 2
NUD_INCOMPLETE, NUD_FAILED = 0x01, 0x20
MAX_DUMP_PARTS = 4096  # recv()s of one neighbour table dump (each up to 64 KiB)
T = TypeVar("T")
_libc = ctypes.CDLL(None, use_errno=True)


class NamespaceError(OSError):
    pass


def socket_path(uri: str) -> str | None:
    """The UNIX socket of a local libvirt URI (qemu:///system, qemu+unix:///system
    [?socket=PATH]); None for a remote one (ssh, TLS, TCP) or libvirt's test driver."""
    parts = urllib.parse.urlsplit(uri)
    if parts.scheme not in ("qemu", "qemu+unix") or parts.netloc:
        return None
    given = dict(urllib.parse.parse_qsl(parts.query)).get("socket")
    if given:
        return given
    return next((p for p in SYSTEM_SOCKETS if os.path.exists(p)), SYSTEM_SOCKETS[-1])


def listener_pid(path: str, timeout: float = 2.0) -> int:
    """The pid of the root process listening on the UNIX socket `path` (SO_PEERCRED)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        pid, uid, _gid = struct.unpack("3i", sock.getsockopt(
            socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    if uid != 0 or pid <= 0:
        raise NamespaceError(errno.EPERM, f"{path} is not served by root")
    return pid


def namespace_key(pid: int) -> tuple[int, int]:
    """The identity of a process's network namespace (device and inode of its ns file)."""
    st = os.stat(f"/proc/{pid}/ns/net")
    return st.st_dev, st.st_ino


def open_namespace(pid: int, expected: tuple[int, int] | None = None) -> int:
    """A file descriptor of the network namespace of `pid` (it keeps the namespace alive);
    NamespaceError when it is not the namespace `expected` (namespace_key): the pid
    was looked at earlier, and a pid that ended may be another process's by now."""
    fd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    if expected is not None:
        st = os.fstat(fd)
        if (st.st_dev, st.st_ino) != tuple(expected):
            os.close(fd)
            raise NamespaceError(errno.ESRCH, f"pid {pid} is no longer in namespace {expected}")
    return fd


def in_namespace(pid: int, work: Callable[[], T], timeout: float = 10.0,
                 ns_fd: int | None = None) -> T:
    """work() run by a new thread inside the network namespace of `pid`, or of the
    namespace file `ns_fd` is open on (left open) when given."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            fd = open_namespace(pid) if ns_fd is None else ns_fd
            try:
                if _libc.setns(fd, CLONE_NEWNET) != 0:
                    code = ctypes.get_errno()
                    raise NamespaceError(code, f"setns: {os.strerror(code)}")
            finally:
                if ns_fd is None:
                    os.close(fd)
            box["value"] = work()
        except BaseException as err:  # handed to the caller  # noqa: BLE001
            box["error"] = err

    thread = threading.Thread(target=run, name=f"netns-{pid}", daemon=True)
    thread.start()
    thread.join(timeout)
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    if "value" not in box:
        raise NamespaceError(errno.ETIMEDOUT, f"entering the namespace of pid {pid} timed out")
    return box["value"]  # type: ignore[return-value]


def _netlink_ack(sock: socket.socket, seq: int) -> int:
    """The error code (0: success) of the netlink acknowledgement of request `seq`."""
    while True:
        data = sock.recv(65536)
        offset = 0
        while offset + _NLMSG.size <= len(data):
            length, kind, _flags, got, _pid = _NLMSG.unpack_from(data, offset)
            if kind == NLMSG_ERROR and got == seq:
                return -struct.unpack_from("=i", data, offset + _NLMSG.size)[0]
            offset += max((length + 3) & ~3, _NLMSG.size)


def _address_message(kind: int, flags: int, address: str, label: str | None) -> bytes:
    body = _IFADDR.pack(socket.AF_INET, 32, 0, RT_SCOPE_HOST, LOOPBACK_INDEX)
    packed = socket.inet_aton(address)
    for attr in (IFA_LOCAL, IFA_ADDRESS):
        body += _RTA.pack(8, attr) + packed
    if label is not None:
        name = label.encode() + b"\0"
        body += _RTA.pack(_RTA.size + len(name), IFA_LABEL) + name
        body += bytes(-len(body) % 4)
    return _NLMSG.pack(_NLMSG.size + len(body), kind, flags, 1, 0) + body


def _route_request(message: bytes) -> int:
    """Send one rtnetlink request of the calling thread's namespace; its error code."""
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(message)
        return _netlink_ack(sock, 1)


def loopback_label(address: str = METADATA_ADDRESS) -> str | None:
    """The label of `address` on `lo` in the calling thread's namespace (None: absent)."""
    request = _NLMSG.pack(_NLMSG.size + _IFADDR.size, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP,
                          1, 0) + _IFADDR.pack(socket.AF_INET, 0, 0, 0, 0)
    packed, found = socket.inet_aton(address), None
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.settimeout(5)
        sock.bind((0, 0))
        sock.send(request)
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset + _NLMSG.size <= len(data):
                length, kind, _flags, _seq, _pid = _NLMSG.unpack_from(data, offset)
                if kind in (NLMSG_DONE, NLMSG_ERROR):
                    return found
                if kind == RTM_NEWADDR and length >= _NLMSG.size + _IFADDR.size:
                    attrs = _attributes(data[offset + _NLMSG.size + _IFADDR.size:offset + length])
                    index = _IFADDR.unpack_from(data, offset + _NLMSG.size)[4]
                    if index == LOOPBACK_INDEX and attrs.get(IFA_LOCAL) == packed:
                        found = attrs.get(IFA_LABEL, b"").split(b"\0")[0].decode(errors="replace")
                offset += max((length + 3) & ~3, _NLMSG.size)


def _attributes(data: bytes) -> dict[int, bytes]:
    attrs, offset = {}, 0
    while offset + _RTA.size <= len(data):
        length, kind = _RTA.unpack_from(data, offset)
        if length < _RTA.size:
            break
        attrs[kind] = data[offset + _RTA.size:offset + length]
        offset += (length + 3) & ~3
    return attrs


def add_loopback_address(address: str = METADATA_ADDRESS) -> bool:
    """`ip addr add ADDRESS/32 dev lo scope host label lo:vmapp` in the calling thread's
    namespace; False when it was there already (loopback_label says whose)."""
    flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL
    code = _route_request(_address_message(RTM_NEWADDR, flags, address, OUR_LABEL))
    if code == errno.EEXIST:
        return False
    if code:
        raise NamespaceError(code, f"adding {address} to lo: {os.strerror(code)}")
    return True


def remove_loopback_address(address: str = METADATA_ADDRESS) -> bool:
    """`ip addr del ADDRESS/32 dev lo` in the calling thread's namespace; False when
    it was not there."""
    code = _route_request(_address_message(RTM_DELADDR, NLM_F_REQUEST | NLM_F_ACK, address, None))
    if code == errno.EADDRNOTAVAIL:
        return False
    if code:
        raise NamespaceError(code, f"removing {address} from lo: {os.strerror(code)}")
    return True


class Loopback:
    """169.254.169.254/32 on the `lo` of one namespace, which `fd` (open_namespace) holds:
    release() removes it if `ours` (added by this service, or found with OUR_LABEL: left
    by an appliance that could not remove it), then closes `fd`."""

    def __init__(self, pid: int, fd: int, ours: bool):
        self.pid, self.fd, self.ours = pid, fd, ours

    def release(self) -> None:
        if self.fd < 0:
            return
        try:
            if self.ours:
                in_namespace(self.pid, remove_loopback_address, ns_fd=self.fd)
        finally:
            os.close(self.fd)
            self.fd = -1


def open_listener(address: str = METADATA_ADDRESS, port: int = METADATA_PORT) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((address, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


class SocketDiag:
    """Netlink sockets of one namespace, for who is at the other end of a connection:
    sock_diag (the local TCP socket with a given four-tuple) and rtnetlink (the
    neighbour table: the MAC an address was resolved to)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG)
        self.route = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE)
        for each in (self.sock, self.route):
            each.settimeout(5)
            each.bind((0, 0))
        self._lock = threading.Lock()
        self._route_lock = threading.Lock()
        self._seq = self._route_seq = 0

    def close(self) -> None:
        self.sock.close()
        self.route.close()

    def neighbour_macs(self, address: str) -> set[str]:
        """The MACs (lowercase) this namespace's neighbour table has `address` at, in a
        usable state (not INCOMPLETE or FAILED), on any interface."""
        packed = ipaddress.IPv4Address(address).packed
        found: set[str] = set()
        with self._route_lock:
            # each dump its own seq: the rest of one that timed out is skipped
            self._route_seq = seq = self._route_seq % 0x7FFFFFFF + 1
            self.route.send(_NLMSG.pack(_NLMSG.size + _NDMSG.size, RTM_GETNEIGH,
                                        NLM_F_REQUEST | NLM_F_DUMP, seq, 0)
                            + _NDMSG.pack(socket.AF_INET, 0, 0, 0, 0, 0, 0))
            for _ in range(MAX_DUMP_PARTS):
                data = self.route.recv(1 << 16)
                offset = 0
                while offset + _NLMSG.size <= len(data):
                    length, kind, _flags, got, _pid = _NLMSG.unpack_from(data, offset)
                    if got != seq:
                        offset += max((length + 3) & ~3, _NLMSG.size)
                        continue
                    if kind in (NLMSG_DONE, NLMSG_ERROR) or length < _NLMSG.size:
                        return found
                    if kind == RTM_NEWNEIGH and length >= _NLMSG.size + _NDMSG.size:
                        state = _NDMSG.unpack_from(data, offset + _NLMSG.size)[4]
                        attrs = _attributes(data[offset + _NLMSG.size + _NDMSG.size:
                                                 offset + length])
                        lladdr = attrs.get(NDA_LLADDR, b"")
                        if attrs.get(NDA_DST) == packed and len(lladdr) == 6 \
                                and not state & (NUD_INCOMPLETE | NUD_FAILED):
                            found.add(lladdr.hex(":"))
                    offset += max((length + 3) & ~3, _NLMSG.size)
        return found  # a table longer than MAX_DUMP_PARTS reads: what was read

    def established_inode(self, src: str, sport: int, dst: str, dport: int) -> int | None:
        """The inode of this namespace's IPv4 TCP socket whose local end is src:sport and
        remote end dst:dport, in any state (a client may half-close once it has asked);
        0 when it is there without one (closed by its process: orphaned, TIME_WAIT);
        None when there is none: only then did the connection come from elsewhere. (It
        was None for any state but ESTABLISHED, so a local process that closed after
        asking was looked up by its address, as a guest on a network.)"""
        sockid = (struct.pack("!HH", sport, dport) + _addr16(src) + _addr16(dst)
                  + struct.pack("=III", 0, NO_COOKIE, NO_COOKIE))
        req = struct.pack("=BBBxI", socket.AF_INET, socket.IPPROTO_TCP, 0, 0xFFFFFFFF) + sockid
        with self._lock:
            self._seq = seq = self._seq % 0x7FFFFFFF + 1
            self.sock.send(_NLMSG.pack(_NLMSG.size + len(req), SOCK_DIAG_BY_FAMILY,
                                       NLM_F_REQUEST, seq, 0) + req)
            while True:
                data = self.sock.recv(65536)
                length, kind, _flags, got, _pid = _NLMSG.unpack_from(data, 0)
                if got == seq:
                    break
        if kind != SOCK_DIAG_BY_FAMILY or len(data) < _NLMSG.size + _DIAG_MSG.size:
            return None  # NLMSG_ERROR: ENOENT, no such socket
        (_family, _state, _timer, _retrans, got_sport, got_dport, got_src, got_dst, _if,
         _c1, _c2, _expires, _rq, _wq, _uid, inode) = _DIAG_MSG.unpack_from(data, _NLMSG.size)
        same = (socket.ntohs(got_sport), socket.ntohs(got_dport), got_src, got_dst) == (
            sport, dport, _addr16(src), _addr16(dst))
        return inode if same else None


def _addr16(address: str) -> bytes:
    return ipaddress.IPv4Address(address).packed + bytes(12)


def holds_socket(pid: int, inode: int) -> bool:
    """Whether process `pid` has the socket `inode` among its open files."""
    wanted = f"socket:[{inode}]"
    fd_dir = Path(f"/proc/{pid}/fd")
    try:
        names = os.listdir(fd_dir)
    except OSError:
        return False
    for name in names:
        try:
            if os.readlink(fd_dir / name) == wanted:
                return True
        except OSError:
            continue
    return False


def process_cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def process_uids(pid: int) -> set[int]:
    """The real, effective, saved and filesystem uids of process `pid` (empty: gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return set()
    line = next((ln for ln in status.splitlines() if ln.startswith("Uid:")), "")
    return {int(v) for v in line.split()[1:] if v.isdigit()}

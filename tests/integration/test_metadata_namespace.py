"""The metadata service's Linux side (appliance/metadata/netns.py) in a network
namespace this test makes (`unshare -n`, only its loopback): entering it from a
thread, 169.254.169.254/32 on its lo, the listener there, and the sock_diag lookup
that finds which process holds a local connection; and the service itself, on a
stand-in libvirt socket served from such a namespace, taking the address away when
it stops or its host goes, unless it was there before. No guest, about a second;
the guests' journey is tests/integration/test_netns_metadata.py (slow)."""
from __future__ import annotations

import asyncio
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.metadata import netns, service

pytestmark = pytest.mark.integration


@pytest.fixture
def holder():
    """A process alone in a new network namespace, its lo up; killed after the test."""
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c",
                             "ip link set lo up && echo up && exec sleep 600"],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield proc.pid
    finally:
        proc.kill()
        proc.wait()


def addresses(pid: int) -> str:
    return subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "-4", "addr", "show", "lo"],
                          capture_output=True, text=True, check=True).stdout


def test_the_listener_lives_in_the_hosts_namespace_and_knows_its_peers(holder):
    own = netns.namespace_key(os.getpid())
    assert netns.namespace_key(holder) != own
    assert "169.254.169.254" not in addresses(holder)

    def setup():
        return netns.add_loopback_address(), netns.add_loopback_address(), \
            netns.open_listener(), netns.SocketDiag()

    first, again, listener, diag = netns.in_namespace(holder, setup)
    try:
        assert (first, again) == (True, False)  # added once, found the second time
        assert "inet 169.254.169.254/32 scope host lo" in addresses(holder)
        # Not in this test's own namespace: the namespace of the thread was its own.
        assert netns.namespace_key(os.getpid()) == own
        assert "169.254.169.254" not in subprocess.run(
            ["ip", "-o", "-4", "addr", "show", "lo"], capture_output=True, text=True).stdout
        client = netns.in_namespace(
            holder, lambda: socket.create_connection((netns.METADATA_ADDRESS, 80), timeout=5))
        with client:
            listener.setblocking(True)
            conn, peer = listener.accept()
            with conn:
                # The peer's socket is found by its four-tuple, and this process holds it.
                inode = diag.established_inode(peer[0], peer[1], netns.METADATA_ADDRESS, 80)
                assert inode == os.fstat(client.fileno()).st_ino
                assert netns.holds_socket(os.getpid(), inode)
                assert not netns.holds_socket(holder, inode)
                # Another port, or the listener's own end, is no peer's socket.
                assert diag.established_inode(peer[0], peer[1] + 1, netns.METADATA_ADDRESS,
                                              80) is None
                assert diag.established_inode(netns.METADATA_ADDRESS, 80, peer[0],
                                              peer[1]) != inode
                # A client that half-closes or closes once it has asked is still
                # local: found in any state (0: closed, no inode), never None, which
                # would send it to the lookup by address meant for guests on networks.
                client.sendall(b"GET / HTTP/1.1\r\n\r\n")
                client.shutdown(socket.SHUT_WR)
                assert conn.recv(100)  # its request, then its FIN
                assert conn.recv(100) == b""
                assert diag.established_inode(peer[0], peer[1], netns.METADATA_ADDRESS,
                                              80) == inode
                client.close()
                for _ in range(50):  # the kernel orphans it (FIN_WAIT2): no inode
                    found = diag.established_inode(peer[0], peer[1],
                                                   netns.METADATA_ADDRESS, 80)
                    if found == 0:
                        break
                    time.sleep(0.05)
                assert found == 0
    finally:
        listener.close()
        diag.close()


def test_the_libvirt_socket_names_its_root_process(tmp_path):
    path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen(1)
        assert netns.listener_pid(str(path)) == os.getpid()  # the tests run as root
    assert netns.socket_path("qemu+unix:///system?socket=/x/libvirt-sock") == "/x/libvirt-sock"
    assert netns.socket_path("qemu:///system") in netns.SYSTEM_SOCKETS
    assert netns.socket_path("qemu+ssh://root@h2/system") is None
    assert netns.socket_path("qemu+tls://h2/system") is None
    assert netns.socket_path("test:///default") is None
    assert Path(f"/proc/{os.getpid()}/ns/net").exists()


STAND_IN = ("import socket, sys, time\n"
            "s = socket.socket(socket.AF_UNIX)\ns.bind(sys.argv[1])\ns.listen(4)\n"
            "print('up', flush=True)\ntime.sleep(600)\n")


@pytest.fixture
def libvirt_stand_in(tmp_path):
    """A root process alone in a new network namespace, its lo up, listening on a UNIX
    socket as a libvirtd would: (its pid, the qemu+unix URI of that socket)."""
    path = tmp_path / "libvirt-sock"
    command = 'ip link set lo up && exec "$0" -c "$1" "$2"'
    proc = subprocess.Popen(["unshare", "-n", "sh", "-c", command, sys.executable, STAND_IN,
                             str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
        yield proc.pid, f"qemu+unix:///system?socket={path}"
    finally:
        proc.kill()
        proc.wait()


class Hosts:
    def __init__(self, uri: str):
        self.rows = [{"name": "h1", "uri": uri}]

    def list_hosts(self):
        return self.rows


def wait_for(condition, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.05)


@pytest.mark.parametrize("before,end,after", [
    (None, "stop", ""),  # added by the service, removed when it stops
    (None, "host gone", ""),  # ... or when its listener closes
    ("lo", "stop", "lo"),  # the admin's (`ip addr add`, no label of its own): left as found
    (netns.OUR_LABEL, "stop", ""),  # left by an appliance killed before removing it
])
def test_the_service_takes_away_the_address_it_added(libvirt_stand_in, tmp_path, monkeypatch,
                                                     before, end, after):
    pid, uri = libvirt_stand_in
    if before is not None:
        subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "addr", "add",
                        f"{netns.METADATA_ADDRESS}/32", "dev", "lo", "scope", "host"]
                       + (["label", before] if before != "lo" else []), check=True)
    monkeypatch.setattr(service, "RECONCILE_SECONDS", 0.1)
    hosts = Hosts(uri)
    svc = service.MetadataService(Config(home=tmp_path / "home", libvirt_uri=uri), hosts)
    stop = asyncio.Event()

    def label() -> str:
        line = next((one for one in addresses(pid).splitlines()
                     if netns.METADATA_ADDRESS in one), "")
        return line.split("scope host ")[1].split()[0].rstrip("\\") if line else ""

    async def main() -> None:
        task = asyncio.create_task(svc.run(stop))
        try:
            await asyncio.to_thread(wait_for, lambda: svc.listeners, "listener")
            assert label() == (before or netns.OUR_LABEL)  # added with our label if absent
            if end == "host gone":
                hosts.rows = []
                await asyncio.to_thread(wait_for, lambda: not svc.listeners and label() == after,
                                        "closing and removing while the service runs")
        finally:
            stop.set()
            await asyncio.wait_for(task, 30)

    asyncio.run(main())
    assert label() == after


def test_a_pid_no_longer_in_the_namespace_it_was_seen_in_is_not_entered(holder):
    """The service looks at a libvirtd's pid, then opens its namespace: a pid that
    ended meanwhile may be another process's, in another namespace (a container's).
    Opened with the namespace it was seen in, a different one is refused before
    anything is added there; the same one is served. (It entered whichever.)"""
    own = netns.namespace_key(os.getpid())
    with pytest.raises(netns.NamespaceError):
        service.MetadataService._open(holder, own)
    assert "169.254.169.254" not in addresses(holder)
    sock, diag, loopback = service.MetadataService._open(holder, netns.namespace_key(holder))
    try:
        assert "169.254.169.254" in addresses(holder)
    finally:
        sock.close()
        diag.close()
        loopback.release()
    assert "169.254.169.254" not in addresses(holder)


def test_the_neighbour_table_says_which_mac_an_address_is_at(holder):
    """SocketDiag.neighbour_macs, which identify.py checks a guest's address against:
    a usable entry's MAC, none for an INCOMPLETE one or an unknown address, the whole
    table read when it spans several netlink messages."""
    script = ("ip link add n0 type veth peer name n1 && ip link set n0 up && ip link set n1 up"
              " && ip addr add 10.98.0.1/16 dev n0"
              " && ip neigh add 10.98.0.7 lladdr 52:54:00:AB:CD:07 dev n0 nud reachable"
              " && ip neigh add 10.98.0.8 dev n0 nud incomplete"
              " && for i in $(seq 1 300); do ip neigh add 10.98.$((1 + i / 250)).$((i % 250 + 1))"
              " lladdr 52:54:00:00:00:01 dev n0 nud stale; done")
    subprocess.run(["nsenter", "-t", str(holder), "-n", "sh", "-c", script], check=True)
    diag = netns.in_namespace(holder, netns.SocketDiag)
    try:
        assert diag.neighbour_macs("10.98.0.7") == {"52:54:00:ab:cd:07"}
        assert diag.neighbour_macs("10.98.0.8") == set()
        assert diag.neighbour_macs("10.98.0.9") == set()
        assert diag.neighbour_macs("10.98.2.50") == {"52:54:00:00:00:01"}  # past 250 entries
    finally:
        diag.close()

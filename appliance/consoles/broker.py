"""The console broker: one process per appliance that holds the VMs' serial
console streams and hands out VNC sockets and screenshots (the protocol:
protocol.py; the contract: /work/shared and README "Consoles").

It does not authorize: only root reaches its socket (dir 0700, socket 0600,
and the peer's uid must be ours), and its callers (the API, the mount, the
service) have checked the policy and hand it a VM id.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from pathlib import Path

import libvirt

from appliance.config import Config
from appliance.consoles import protocol
from appliance.consoles.hosts import HostConnections
from appliance.consoles.port import ConsoleStream, GuestInput
from appliance.consoles.protocol import BadRequest, ConsoleUnavailable, Request
from appliance.consoles.session import Session
from appliance.consoles.streams import SCREENSHOT_MAX, read_all, to_png
from appliance.errors import ApplianceError, Conflict, Failed
from appliance.model import VMState
from appliance.store import Row
from appliance.virt.reasons import connect_reason

log = logging.getLogger("appliance.consoles")

CONNECTIONS_MAX = 512  # clients at once; more are refused (503)
SEND_TIMEOUT = 30.0  # seconds a client has to take a reply (a screenshot)
INPUT_TIMEOUT = 10.0  # seconds to receive an input's bytes, and to send them on
SCREENSHOT_TIMEOUT = 10.0
READ_CHUNK = 65536
# Guests whose unanswered input is kept: the least recently opened go first, never one
# whose stream is open; one that goes starts at 0 again, which costs no other guest
# anything (a stream that blocks stalls only its own console: port.py).
GUEST_RUNS_MAX = 4096
STREAMS_MAX = 512  # console streams (a thread and a libvirt connection each) at once
OPEN_TIMEOUT = 10.0  # seconds to connect and open a console (the client waits 15)
CLOSING_WAIT = 5.0  # seconds a console waits for its VM's previous stream to close


def peer_uid(sock: socket.socket) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return int(struct.unpack("3i", creds)[1])


class Broker:
    def __init__(self, config: Config, hosts: HostConnections):
        self.config = config
        self.hosts = hosts
        self.sessions: dict[str, Session] = {}
        self.streams: dict[str, ConsoleStream] = {}  # vm id -> its stream until closed
        self._opening: dict[str, asyncio.Event] = {}  # vm id -> set once its open ended
        # vm id -> ((host, its domain's id: one run of the guest), what it was sent unanswered)
        self.sent: dict[str, tuple[tuple[str, int], GuestInput]] = {}
        self.connections = 0

    # -- the socket --------------------------------------------------------------
    def listen(self, path: Path) -> socket.socket:
        """The listening socket: its folder 0700, itself 0600, a stale one replaced."""
        path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)  # 0600 from the start, not after a window
        try:
            sock.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        sock.listen(64)
        sock.setblocking(False)
        return sock

    async def serve(self, sock: socket.socket) -> asyncio.Server:
        # limit: the reader's buffer bound; a request line longer than this is refused
        return await asyncio.start_unix_server(self.handle, sock=sock,
                                               limit=protocol.HEADER_MAX * 2)

    def close(self) -> None:
        for session in list(self.sessions.values()):
            session.close()
        self.hosts.close_all()

    # -- one connection ------------------------------------------------------------
    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            sock = writer.get_extra_info("socket")
            if sock is None or peer_uid(sock) != os.getuid():
                log.warning("refused a console client of another user")
                return
            try:
                if self.connections > CONNECTIONS_MAX:
                    raise ConsoleUnavailable(f"more than {CONNECTIONS_MAX} console clients")
                line = await protocol.read_line(reader, protocol.HEADER_MAX,
                                                protocol.HEADER_TIMEOUT)
                request = protocol.parse_request(line)
                await self.dispatch(request, reader, writer)
            except ApplianceError as err:
                await self._reply(writer, protocol.refusal(err))
            except (TimeoutError, ConnectionError):
                pass  # the client went, or would not read: nothing to tell it
            except Exception:  # a surprise ends this client, never the broker
                log.exception("console client failed")
                await self._reply(writer, protocol.refusal(Failed("internal error")))
        finally:
            self.connections -= 1
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 1.0)

    async def _reply(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        with contextlib.suppress(ConnectionError, asyncio.TimeoutError, RuntimeError):
            writer.write(data)
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)

    async def dispatch(self, request: Request, reader: asyncio.StreamReader,
                       writer: asyncio.StreamWriter) -> None:
        row = self.hosts.vm(request.vm)
        if request.op == "console":
            await self.console(row, request, reader, writer)
        elif request.op == "input":
            await self.input(row, request, reader, writer)
        elif request.op == "vnc":
            await self.vnc(row, writer)
        else:
            await self.screenshot(row, writer)

    # -- console -------------------------------------------------------------------
    async def session(self, row: Row, force: bool) -> Session:
        """The VM's session: the one open, or a new one on its console stream
        (one open at a time per VM: a second request waits for the first)."""
        vm_id = row["id"]
        while (opening := self._opening.get(vm_id)) is not None:
            await opening.wait()
        session = self.sessions.get(vm_id)
        if session is not None and not session.closed:
            return session
        self._opening[vm_id] = opening = asyncio.Event()
        try:
            return await self._open(row, force)
        finally:
            del self._opening[vm_id]
            opening.set()

    async def _open(self, row: Row, force: bool) -> Session:
        host, uri = self.hosts.console_uri(row)
        previous = self.streams.get(row["id"])
        if previous is not None:  # its close may be under way, or stuck on the guest
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(previous.done.wait(), CLOSING_WAIT)
            if not previous.done.is_set():
                raise ConsoleUnavailable(
                    f"the console of {row['name']} is still closing (its guest has not taken "
                    "what was typed, or its host does not answer): try again once the guest "
                    "reads its serial port or restarts")
        if len(self.streams) >= STREAMS_MAX:
            raise ConsoleUnavailable(f"more than {STREAMS_MAX} consoles are open")
        session = Session(row["id"], on_closed=self._forget)
        port = ConsoleStream(session, self.hosts.open_connection, on_done=self._stream_done)
        self.streams[row["id"]] = port
        try:
            dom_id = await asyncio.wait_for(port.open(uri, row["id"], force), OPEN_TIMEOUT)
        except TimeoutError:
            raise ConsoleUnavailable(f"the console of {row['name']} did not open within "
                                     f"{OPEN_TIMEOUT:g} s (host {host})") from None
        except LookupError:
            raise Conflict(f"{row['name']} is not running: start it first", "vm") from None
        except libvirt.libvirtError as err:
            raise _open_error(err, row, host) from None
        port.start(self._guest_input(row["id"], (host, dom_id)))
        session.start(port)
        self.sessions[row["id"]] = session
        log.info("console of %s (%s) opened on %s", row["name"], row["id"], host)
        return session

    def _stream_done(self, port: ConsoleStream) -> None:
        if self.streams.get(port.session.vm_id) is port:
            del self.streams[port.session.vm_id]

    def _guest_input(self, vm_id: str, run: tuple[str, int]) -> GuestInput:
        """The input this run of the guest was sent and has not answered, over all its
        sessions (a new run, on a host or with a domain id of its own, starts at 0),
        less what its console log says it wrote while no session was open (the log
        written by virtlogd, when this machine has it: else what was kept)."""
        kept = self.sent.pop(vm_id, None)
        if kept is None or kept[0] != run:
            kept = (run, GuestInput())
        sent = kept[1]
        size = self._log_size(vm_id)
        if sent.log_size is not None and size is not None:
            wrote = size - sent.log_size  # less than 0: the log was rotated (it wrote a lot)
            sent.unanswered = max(0, sent.unanswered - wrote) if wrote >= 0 else 0
        self.sent[vm_id] = kept
        if len(self.sent) > GUEST_RUNS_MAX:
            # the least recently opened whose stream is closed (STREAMS_MAX < GUEST_RUNS_MAX)
            oldest = next((vm for vm in self.sent if vm not in self.streams), None)
            if oldest is not None:
                del self.sent[oldest]
        return sent

    def _log_size(self, vm_id: str) -> int | None:
        try:
            return (self.config.vm_dir(vm_id) / "console.log").stat().st_size
        except OSError:
            return None

    def _forget(self, session: Session) -> None:
        kept = self.sent.get(session.vm_id)
        if kept is not None:  # what the guest writes from now is counted at its next session
            kept[1].log_size = self._log_size(session.vm_id)
        if self.sessions.get(session.vm_id) is session:
            del self.sessions[session.vm_id]
            log.info("console of %s closed", session.vm_id)

    async def console(self, row: Row, request: Request, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter) -> None:
        session = await self.session(row, request.force)
        history = self.history(row["id"], request.history)
        writer.write(protocol.ok(vm=row["id"], write=request.write))
        writer.write(history)
        client = session.attach(writer, request.write)
        try:
            while not session.closed:
                data = await reader.read(READ_CHUNK)
                if not data or not await session.send(client, data):
                    break  # gone, or its guest took nothing for a long time
        finally:
            session.detach(client)

    def history(self, vm_id: str, size: int) -> bytes:
        """The last `size` bytes of the VM's console log (b"" without one)."""
        if size <= 0:
            return b""
        path = self.config.vm_dir(vm_id) / "console.log"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except OSError:
            return b""
        with os.fdopen(fd, "rb") as log_file:
            length = os.fstat(fd).st_size
            log_file.seek(max(0, length - size))
            return log_file.read(size)

    async def input(self, row: Row, request: Request, reader: asyncio.StreamReader,
                    writer: asyncio.StreamWriter) -> None:
        try:
            data = await asyncio.wait_for(reader.readexactly(request.size), INPUT_TIMEOUT)
        except TimeoutError:
            raise BadRequest(f"fewer than {request.size} bytes within {INPUT_TIMEOUT:g} s",
                             "size") from None
        except asyncio.IncompleteReadError:
            raise BadRequest(f"the connection closed before {request.size} bytes",
                             "size") from None
        session = await self.session(row, force=False)
        not_reading = Conflict(f"the guest of {row['name']} does not read its console: "
                               "input refused (part of it may wait for the guest)", "console")
        if session.stalled():  # nothing of this input was taken; a session opened for it
            session.close_if_idle()  # alone (stalled from its start: GuestInput) goes again
            raise not_reading
        session.hold()
        try:
            sent = (await session.send(None, data, INPUT_TIMEOUT)
                    and await session.flushed(INPUT_TIMEOUT))
        finally:
            session.release()
        if not sent and session.reason is not None:  # closed as stuck
            raise Conflict(f"{row['name']}: {session.reason}", "console")
        if not sent and session.stalled():
            raise not_reading
        if not sent and session.port is not None and session.port.busy():
            raise Conflict(f"the guest of {row['name']} has not taken the input within "
                           f"{INPUT_TIMEOUT:g} s (a send to it has not returned): it does not "
                           "read its console", "console")
        if not sent:
            raise Failed(f"the console of {row['name']} did not take the input "
                         f"within {INPUT_TIMEOUT:g} s")
        await self._reply(writer, protocol.ok(size=len(data)))

    # -- graphics ------------------------------------------------------------------
    def _graphics_domain(self, row: Row) -> tuple[str, libvirt.virDomain]:
        if row["spec"].get("graphics", "vnc") == "none":
            raise Conflict(f"{row['name']} has no display (graphics: none)", "graphics")
        return self.hosts.running_domain(row)

    async def vnc(self, row: Row, writer: asyncio.StreamWriter) -> None:
        # Before connecting (an ssh transport would be started for nothing): what
        # the store says of its display, its state and its host's transport.
        if row["spec"].get("graphics", "vnc") == "none":
            raise Conflict(f"{row['name']} has no display (graphics: none)", "graphics")
        if row.get("host") and row.get("observed_state") in (VMState.RUNNING, VMState.PAUSED):
            passes, scheme = self.hosts.passes_fds(row["host"])
            if not passes:
                raise Conflict(f"{row['name']} runs on host {row['host']}, reached through "
                               f"{scheme}, which cannot pass the VNC socket", "host")
        _host, dom = self._graphics_domain(row)
        try:
            fd = dom.openGraphicsFD(0, libvirt.VIR_DOMAIN_OPEN_GRAPHICS_SKIPAUTH)
        except libvirt.libvirtError as err:
            raise Conflict(f"no VNC display for {row['name']}: "
                           f"{(err.get_error_message() or '')[:200]}", "graphics") from None
        try:
            writer.write(protocol.ok(vm=row["id"]))
            await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)
            await send_fd(writer, fd)
        finally:
            os.close(fd)

    async def screenshot(self, row: Row, writer: asyncio.StreamWriter) -> None:
        host, dom = self._graphics_domain(row)
        stream = self.hosts.connection(host).newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            mime = dom.screenshot(stream, 0, 0)
        except libvirt.libvirtError as err:
            with contextlib.suppress(libvirt.libvirtError):
                stream.abort()
            raise Conflict(f"no screenshot of {row['name']}: "
                           f"{(err.get_error_message() or '')[:200]}", "graphics") from None
        data = await read_all(stream, SCREENSHOT_MAX, SCREENSHOT_TIMEOUT)
        png = await asyncio.to_thread(to_png, data, mime)
        writer.write(protocol.ok(size=len(png), type="image/png"))
        writer.write(png)
        await asyncio.wait_for(writer.drain(), SEND_TIMEOUT)


def _open_error(err: libvirt.libvirtError, row: Row, host: str) -> ApplianceError:
    """What a console stream's open failing in libvirt means for its client."""
    message = err.get_error_message() or ""
    if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
        return Conflict(f"{row['name']} is not running: start it first", "vm")
    if (err.get_error_code() == libvirt.VIR_ERR_OPERATION_FAILED
            and "active console" in message.lower()):
        return Conflict(
            f"the console of {row['name']} is held elsewhere (another libvirt client, "
            "such as `virsh console` on its host); attaching with force takes it over", "force")
    if err.get_error_domain() in (libvirt.VIR_FROM_RPC, libvirt.VIR_FROM_REMOTE):
        return ConsoleUnavailable(f"host {host} is unreachable: {connect_reason(err)}")
    return Failed(f"cannot open the console of {row['name']}: {message[:200]}")


async def send_fd(writer: asyncio.StreamWriter, fd: int) -> None:
    """One byte with the descriptor attached, on the client's socket (a
    duplicate of asyncio's, made blocking with a timeout for this one call)."""
    transport_sock = writer.get_extra_info("socket")
    # closing the duplicate leaves asyncio's descriptor open; the timeout keeps
    # the file non-blocking, as asyncio wants it
    with socket.socket(fileno=os.dup(transport_sock.fileno())) as own:
        own.settimeout(5.0)
        await asyncio.to_thread(socket.send_fds, own, [b"\0"], [fd])

"""A VM's console session: one serial-port stream, its output fanned out to
every attached client, the bytes of writers sent back to the port.

The port is anything with `send(data) -> int` (bytes taken; 0 when it would
block, and it then calls `writable()` once it can take more), `stalled()`
(the guest does not read: nothing goes until it writes again), `busy()` (bytes
it took have not all gone on yet) and `close()`; it calls the session's
`output(data)`, `ended()`, and `close(reason)` when its stream is stuck.
appliance/consoles/port.py has libvirt's; the unit tests have a fake one.

All writers type at once, as in `screen -x`: a shared session, the documented
choice (one serial port, one shell; taking turns would be a policy the guest
cannot see). A client that cannot keep up (more than CLIENT_QUEUE_MAX bytes
waiting for it) is dropped, not the session; bytes for the port wait in one
bounded buffer, and a writer that fills it waits (its socket is not read);
while the port is stalled (a guest that does not read) a writer that would
overfill it is refused at once instead, and only that session's writers are.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Protocol

log = logging.getLogger("appliance.consoles")

CLIENT_QUEUE_MAX = 1024 * 1024  # bytes waiting for one client before it is dropped
PORT_QUEUE_MAX = 64 * 1024  # bytes waiting for the serial port before writers wait
# Seconds a session stays open after bytes last went to the port: libvirtd
# writes a stream's bytes to the serial port after it has taken them, and
# closing the stream at once loses them (measured: an input closed at once
# never reached the guest; 0.3 s later, it always did).
LINGER = 1.0
STALL_TIMEOUT = 30.0  # seconds a writer waits for room towards the port before it is cut off


class Port(Protocol):
    def send(self, data: bytes) -> int: ...

    def stalled(self) -> bool: ...

    def busy(self) -> bool: ...

    def close(self) -> None: ...


class Client:
    """One attached connection: where the output goes, whether its bytes count."""

    def __init__(self, writer: asyncio.StreamWriter, write: bool):
        self.writer = writer
        self.write = write

    def queued(self) -> int:
        transport = self.writer.transport
        return transport.get_write_buffer_size() if not transport.is_closing() else 0

    def close(self) -> None:
        self.writer.transport.abort()  # drop what is queued: it will not be read


class Session:
    """One VM's console, shared by its clients."""

    def __init__(self, vm_id: str, on_closed: Callable[[Session], None] = lambda _s: None):
        self.vm_id = vm_id
        self.port: Port | None = None
        self.clients: set[Client] = set()
        self.users = 0  # input requests under way (they keep the session open)
        self._last_sent = -LINGER
        self._linger: asyncio.TimerHandle | None = None
        self.closed = False
        self.reason: str | None = None  # why it closed, when it was not asked to
        self._on_closed = on_closed
        self._to_port = bytearray()
        self._room = asyncio.Event()  # set while the port's buffer has room
        self._room.set()
        self._flushed = asyncio.Event()  # set while nothing waits for the port
        self._flushed.set()

    def start(self, port: Port) -> None:
        self.port = port

    # -- clients -----------------------------------------------------------------
    def attach(self, writer: asyncio.StreamWriter, write: bool) -> Client:
        client = Client(writer, write)
        self.clients.add(client)
        self._stop_lingering()
        return client

    def hold(self) -> None:
        """An input request uses the session (until `release`)."""
        self.users += 1
        self._stop_lingering()

    def release(self) -> None:
        self.users -= 1
        self.close_if_idle()

    def _stop_lingering(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None

    def detach(self, client: Client) -> None:
        self.clients.discard(client)
        self.close_if_idle()

    def close_if_idle(self) -> None:
        """Close once nobody uses the session and the last bytes sent have had
        LINGER seconds to reach the port."""
        if self.clients or self.users or self.closed:
            return
        self._stop_lingering()
        loop = asyncio.get_running_loop()
        wait = self._last_sent + LINGER - loop.time()
        if wait > 0:
            self._linger = loop.call_later(wait, self.close_if_idle)
        else:
            self.close()

    # -- from the port -------------------------------------------------------------
    def output(self, data: bytes) -> None:
        """The guest wrote: every client gets it; one too far behind is dropped."""
        for client in list(self.clients):
            if client.writer.transport.is_closing():
                continue  # gone: its reader's end detaches it
            client.writer.write(data)
            if client.queued() > CLIENT_QUEUE_MAX:
                log.info("console of %s: a client fell %d bytes behind; dropped",
                         self.vm_id, client.queued())
                self.clients.discard(client)
                client.close()

    def ended(self) -> None:
        """The stream ended (the VM stopped, or another took the console)."""
        self.close()

    def writable(self) -> None:
        self._flush()

    def stalled(self) -> bool:
        """The guest does not read its serial port (the port takes nothing)."""
        return self.port is not None and self.port.stalled()

    # -- to the port ---------------------------------------------------------------
    async def send(self, client: Client | None, data: bytes,
                   timeout: float = STALL_TIMEOUT) -> bool:
        """Bytes typed by a client (None: an input request); a read-only client's
        bytes are dropped. Waits while the port's buffer is full: False when it
        stayed full `timeout` seconds, or the port is stalled (a guest that does
        not read its serial port: at once), or the session closed, and the
        bytes were not taken."""
        if client is not None and not client.write:
            return True
        deadline = asyncio.get_running_loop().time() + timeout
        while not self.closed and len(self._to_port) >= PORT_QUEUE_MAX:
            if self.stalled():
                log.info("console of %s: the guest does not read its serial port; "
                         "%d bytes refused", self.vm_id, len(data))
                return False
            self._room.clear()
            left = deadline - asyncio.get_running_loop().time()
            try:
                await asyncio.wait_for(self._room.wait(), max(left, 0))
            except TimeoutError:
                return False
        if self.closed:
            return False
        self._to_port += data
        self._flushed.clear()
        self._flush()
        return True

    async def flushed(self, timeout: float) -> bool:
        """Wait until every byte sent has gone to the port; False on timeout or
        close, or as soon as the port is stalled with bytes still waiting."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not self._flushed.is_set() and not self.stalled():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            try:  # a short wait: the port stalls without telling (polled)
                await asyncio.wait_for(self._flushed.wait(), min(left, 0.05))
            except TimeoutError:
                pass
        return self._flushed.is_set() and not self.closed

    def _flush(self) -> None:
        if self.port is None or self.closed:
            return
        while self._to_port:
            taken = self.port.send(bytes(self._to_port[:65536]))
            if taken <= 0:
                break  # the port calls writable() when it can take more
            del self._to_port[:taken]
            self._last_sent = asyncio.get_running_loop().time()
        if len(self._to_port) < PORT_QUEUE_MAX:
            self._room.set()
        if not self._to_port and not self.port.busy():
            self._flushed.set()

    # -- end -----------------------------------------------------------------------
    def close(self, reason: str | None = None) -> None:
        """Close the port and every client's connection (a reason: told to each
        first, on a line of its own); wake every waiter."""
        if self.closed:
            return
        self.closed = True
        self.reason = reason
        self._stop_lingering()
        for client in list(self.clients):
            if reason is not None and not client.writer.transport.is_closing():
                client.writer.write(f"\r\n[console closed: {reason}]\r\n".encode())
            client.writer.close()  # what is queued still goes out
        self.clients.clear()
        self._to_port.clear()
        self._room.set()
        self._flushed.set()
        if self.port is not None:
            self.port.close()
        self._on_closed(self)

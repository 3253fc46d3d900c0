"""A domain's serial console as a Session's port: a libvirt connection and a
thread of its own per console stream, so that a guest's stream can block no
other guest's console and never the broker's event loop.

Why (security review, S13; tests/integration/test_console_stuck_stream.py):
once a guest stops reading its serial port, its pty fills, libvirtd stops
reading the *connection* the stream is on (every stream and call on it), and
libvirt's virStreamSend, and a stream's finish or abort, block the thread that
calls them until the guest reads, stops, or libvirtd's keepalive drops the
connection (~30 s). On one shared connection driven from the loop, that froze
every console of every VM. So each console stream has:

- its own libvirt connection (opened in its thread): what blocks is that guest's;
- its own thread, which alone calls libvirt on the stream (open, recv, send,
  finish, abort) and hands what it reads to the loop; libvirt's events run in
  the default event implementation's thread (streams.start_libvirt_events),
  which is thread-safe, unlike libvirtaio's;
- bounds: one chunk of input in flight (at most UNANSWERED_MAX bytes), at most
  OUTPUT_IN_FLIGHT bytes of output handed to the loop and not yet taken (the
  thread stops reading beyond), and a send that has not returned within
  STUCK_TIMEOUT seconds closes the session with its reason (`stuck`). The thread
  itself ends when its blocked call returns; the broker opens no other stream
  for that VM until then (broker.py), and at most STREAMS_MAX at once.

Input credit (unchanged): a guest is sent at most UNANSWERED_MAX bytes more than
it wrote back since, counted over all its console sessions of one run
(GuestInput). A guest that writes without reading earns credit it does not
deserve (its output is what anyone sees first); with the above, all it gets is
its own console closed.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Any

import libvirt

from appliance.consoles.session import Session
from appliance.consoles.streams import READ_CHUNK, WATCHED

log = logging.getLogger("appliance.consoles")

# Bytes sent to a guest that has written nothing since: below what its pty
# takes, so that libvirtd never holds a stream's bytes it cannot write. Measured
# on a halted guest (tests/integration/test_console_unread_guest.py): 4 and 8 KiB
# never block; 16 KiB and 32 KiB do, in send or later in finish/abort (30-70 s).
UNANSWERED_MAX = 4 * 1024
OUTPUT_IN_FLIGHT = 1024 * 1024  # bytes read and not yet taken by the loop
STUCK_TIMEOUT = 10.0  # seconds a send may take before the session is closed as stuck
STUCK_REASON = ("the guest does not take its console's input (a send to it has not returned "
                f"in {STUCK_TIMEOUT:g} s): the console is closed; it opens again once the "
                "guest reads its serial port or restarts")


class GuestInput:
    """Bytes sent to one run of a guest less bytes it wrote since (>= 0), whichever
    console session sent them: what it did not read stays in its pty when a session
    closes. Counted per session, a guest that never reads was sent UNANSWERED_MAX
    afresh by each new session until its pty was full (fuzz-mount, S13)."""

    def __init__(self) -> None:
        self.unanswered = 0
        self.log_size: int | None = None  # its console log's size when its last session closed


class ConsoleStream:
    """The port (see session.py) of one console session. The loop's side:
    `open`, `start`, `send`, `stalled`, `busy`, `close`, and `done` (set once the
    thread has closed the stream and its connection). `sent` is the guest's
    GuestInput (shared by the sessions of one run of the guest)."""

    def __init__(self, session: Session,
                 open_connection: Callable[[str], libvirt.virConnect] = libvirt.open,
                 on_done: Callable[[ConsoleStream], None] = lambda _p: None):
        self.session = session
        self.open_connection = open_connection
        self.on_done = on_done
        self.loop = asyncio.get_running_loop()
        self.sent = GuestInput()
        self.closed = False
        self.running = False  # started: its session is the VM's
        self.done = asyncio.Event()
        self._busy = False  # loop: a chunk was handed to the thread and is not sent yet
        self._stuck: asyncio.TimerHandle | None = None  # closes the session if it stays so
        # under _cond: what the thread is asked to do, and what its stream said
        self._cond = threading.Condition()
        self._chunk: bytes | None = None
        self._started = self._armed = self._readable = self._writable = False
        self._want_write = self._closing = self._abort = False
        self._callback = False  # added to the stream
        self._in_flight = 0
        self._stream: Any = None  # the thread's (and the event callback's)

    # -- the loop's side -----------------------------------------------------------
    async def open(self, uri: str, vm_id: str, force: bool) -> int:
        """Connect, look the domain up and open its console, in the stream's own
        thread; the domain's id. Raises what libvirt raised (LookupError: not
        running). Cancelled (its caller's timeout), the thread closes all once done."""
        opened: asyncio.Future[int] = self.loop.create_future()
        flags = libvirt.VIR_DOMAIN_CONSOLE_FORCE if force else 0
        thread = threading.Thread(target=self._run, args=(uri, vm_id, flags, opened),
                                  name=f"console-{vm_id[:8]}", daemon=True)
        thread.start()
        try:
            return await opened
        except BaseException:
            self.close()
            raise

    def start(self, sent: GuestInput) -> None:
        """Count against `sent`, and watch the stream from now on."""
        self.sent = sent
        self.running = True
        self._tell(_started=True)

    def stalled(self) -> bool:
        """The guest was sent UNANSWERED_MAX bytes more than it wrote back: it
        is taken not to read its port, and nothing more is sent to it."""
        return self.sent.unanswered >= UNANSWERED_MAX

    def busy(self) -> bool:
        """Bytes handed to the thread have not all gone to libvirt yet."""
        return self._busy

    def send(self, data: bytes) -> int:
        """Hand at most the guest's credit to the thread; 0 while a chunk is under
        way (the session's `writable` follows it) or the guest is stalled."""
        if self.closed or self._busy or self.stalled():
            return 0
        chunk = data[:UNANSWERED_MAX - self.sent.unanswered]
        self.sent.unanswered += len(chunk)
        self._busy = True
        self._stuck = self.loop.call_later(STUCK_TIMEOUT, self._closed_as_stuck)
        self._tell(_chunk=chunk)
        return len(chunk)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self._stuck is not None:
            self._stuck.cancel()
        self._tell(_closing=True)

    def _tell(self, **fields: Any) -> None:
        with self._cond:
            for name, value in fields.items():
                setattr(self, name, value)
            self._cond.notify()

    def _closed_as_stuck(self) -> None:
        log.warning("console of %s: a send has not returned in %g s: closed as stuck",
                    self.session.vm_id, STUCK_TIMEOUT)
        self._tell(_abort=True)
        self.session.close(STUCK_REASON)

    def _sent(self) -> None:
        self._busy = False
        if self._stuck is not None:
            self._stuck.cancel()
        if not self.closed:
            self.session.writable()

    def _output(self, data: bytes) -> None:
        with self._cond:
            self._in_flight -= len(data)
            self._cond.notify()
        if self.closed:
            return
        if self.stalled():
            self.loop.call_soon(self.session.writable)  # it reads again: send the rest
        # credit as much as it wrote (an echo answers byte for byte), not all: a
        # guest that read one key must not be sent another pty-full
        self.sent.unanswered = max(0, self.sent.unanswered - len(data))
        self.session.output(data)

    def _ended(self) -> None:
        if self.running and not self.closed:
            self.session.ended()

    def _post(self, callback: Callable[..., None], *args: Any) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed (the broker stopped)
            self.loop.call_soon_threadsafe(callback, *args)

    # -- the stream's thread -------------------------------------------------------
    def _run(self, uri: str, vm_id: str, flags: int, opened: asyncio.Future[int]) -> None:
        conn = None
        try:
            conn = self.open_connection(uri)
            if not uri.startswith("test:"):
                with contextlib.suppress(libvirt.libvirtError):
                    conn.setKeepAlive(2, 3)
            dom = conn.lookupByUUIDString(vm_id)
            if not dom.isActive():
                raise LookupError(vm_id)
            self._stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
            dom.openConsole(None, self._stream, flags)
            dom_id = int(dom.ID())
        except Exception as err:  # noqa: BLE001  # handed to the loop, which says what it means
            self._abort = True
            self._finish(conn)
            self._post(_settle, opened, err)
            return
        self._post(_settle, opened, dom_id)
        try:
            self._serve()
        except Exception:  # noqa: BLE001  # this stream ends, not the broker
            log.exception("console of %s failed", vm_id)
            self._abort = True
        self._finish(conn)

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._work():
                    self._cond.wait()
                if self._closing:
                    return
                if self._rearm():
                    self._arm()
                read = self._readable and self._in_flight < OUTPUT_IN_FLIGHT
                chunk = None if self._want_write and not self._writable else self._chunk
            if read and not self._read():
                return
            if chunk is not None and not self._send(chunk):
                return

    def _rearm(self) -> bool:
        """Watch again: once started, when nothing it said is waiting to be read
        (after a read, `_read` does; watched with data waiting, it fires at once)."""
        return self._started and not self._armed and not self._readable

    def _work(self) -> bool:
        return (self._closing or self._rearm()
                or (self._readable and self._in_flight < OUTPUT_IN_FLIGHT)
                or (self._chunk is not None and (not self._want_write or self._writable)))

    def _arm(self) -> None:
        """Watch the stream (under _cond): the callback stops watching once it fires,
        so that libvirt's event thread does not spin on data not yet read."""
        events = WATCHED | (libvirt.VIR_STREAM_EVENT_WRITABLE if self._want_write else 0)
        if not self._callback:
            self._stream.eventAddCallback(events, self._on_event, None)
            self._callback = True
        else:
            self._stream.eventUpdateCallback(events)
        self._armed = True

    def _on_event(self, stream: libvirt.virStream, events: int, _opaque: object) -> None:
        """libvirt's event thread: note what happened, for the stream's thread."""
        with self._cond:
            if not self._armed:
                return
            self._armed = False
            with contextlib.suppress(libvirt.libvirtError):
                stream.eventUpdateCallback(0)
            if events & WATCHED:
                self._readable = True
            if events & libvirt.VIR_STREAM_EVENT_WRITABLE:
                self._writable = True
            self._cond.notify()

    def _read(self) -> bool:
        """What is readable now, to the loop; False once the stream ended."""
        while True:
            try:
                data = self._stream.recv(READ_CHUNK)
            except libvirt.libvirtError as err:
                log.info("console of %s: %s", self.session.vm_id, err.get_error_message())
                data = b""
            if data == -2:
                with self._cond:
                    self._readable = False
                    self._arm()
                return True
            if not data:
                self._post(self._ended)
                return False
            with self._cond:
                self._in_flight += len(data)
                full = self._in_flight >= OUTPUT_IN_FLIGHT
            self._post(self._output, data)
            if full:
                return True  # more once the loop has taken some (it notifies)

    def _send(self, chunk: bytes) -> bool:
        """libvirt's send, which may block (the guest does not read): only this thread."""
        try:
            taken = self._stream.send(chunk)
        except libvirt.libvirtError as err:
            log.info("console of %s: %s", self.session.vm_id, err.get_error_message())
            self._post(self._ended)
            return False
        with self._cond:
            if taken == -2:  # local drivers: would block; WRITABLE says when
                self._want_write, self._writable = True, False
                self._arm()
                return True
            self._want_write = False
            rest = chunk[int(taken):]
            self._chunk = rest or None
        if not rest:
            self._post(self._sent)
        return True

    def _finish(self, conn: libvirt.virConnect | None) -> None:
        """Close the stream (finish: what was sent reaches the port first; abort
        when stuck or failed) and the connection: may block, on this thread only."""
        stream = self._stream
        if stream is not None:
            with contextlib.suppress(libvirt.libvirtError):
                if self._callback:
                    stream.eventRemoveCallback()
            try:
                if not self._abort:
                    stream.finish()
            except libvirt.libvirtError as err:
                log.info("console of %s: finish: %s", self.session.vm_id, err.get_error_message())
                self._abort = True
            if self._abort:
                with contextlib.suppress(libvirt.libvirtError):
                    stream.abort()
        if conn is not None:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
        self._post(self._done)

    def _done(self) -> None:
        self.done.set()
        self.on_done(self)
        self._ended()


def _settle(future: asyncio.Future[int], outcome: int | BaseException) -> None:
    if future.done():
        return
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)

"""libvirt streams on the asyncio loop (libvirtaio): a domain's serial console
as a session's port, and a screenshot read whole, bounded.

Streams are non-blocking; libvirt calls back (in the loop's thread) when one
can be read or written. `recv` gives -2 for "again" and b"" at the end.

A console's `send` is not, over a remote connection (qemu:///system too): once
the guest stops reading its serial port, libvirtd stops reading the connection
(its pty is full) and virStreamSend, and a stream's finish or abort, block the loop, so every
console on that connection (tests/soak/notes.md). A guest is therefore sent at
most UNANSWERED_MAX bytes more than it wrote back since (a reading guest
echoes, or answers), counted over all its console sessions of one run
(GuestInput: its pty keeps what it did not read after a session closes); beyond
that the port is `stalled` and takes nothing until the guest writes again. A
guest that reads without writing anything (a password prompt) gets
UNANSWERED_MAX bytes at a time; one that writes without reading gets credit it
does not deserve (not handled: its output is what anyone sees first); a new
broker (serve restarted) starts each guest at 0 again.
"""
from __future__ import annotations

import asyncio
import io
import logging

import libvirt

from appliance.consoles.session import Session
from appliance.errors import Failed

log = logging.getLogger("appliance.consoles")

READ_CHUNK = 65536
SCREENSHOT_MAX = 32 * 1024 * 1024  # bytes of libvirt's answer (a PPM of 4K x 2K is 24 MiB)
SCREENSHOT_PIXELS_MAX = 4096 * 4096
# Bytes sent to a guest that has written nothing since: below what its pty
# takes, so that libvirtd never holds a stream's bytes it cannot write. Measured
# on a halted guest (tests/integration/test_console_unread_guest.py): 4 and 8 KiB
# never block; 16 KiB and 32 KiB do, in send or later in finish/abort (30-70 s).
UNANSWERED_MAX = 4 * 1024
_WATCHED = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
            | libvirt.VIR_STREAM_EVENT_HANGUP)


class GuestInput:
    """Bytes sent to one run of a guest less bytes it wrote since (>= 0), whichever
    console session sent them: what it did not read stays in its pty when a session
    closes. Counted per session, a guest that never reads was sent UNANSWERED_MAX
    afresh by each new session until its pty was full and a stream's finish froze
    the broker (fuzz-mount: the 4th session of a halted guest)."""

    def __init__(self) -> None:
        self.unanswered = 0
        self.log_size: int | None = None  # its console log's size when its last session closed


class ConsoleStream:
    """A domain's console stream as a Session's port; `sent`: its guest's GuestInput
    (shared by the sessions of one run of the guest)."""

    def __init__(self, stream: libvirt.virStream, session: Session, sent: GuestInput | None = None):
        self.stream = stream
        self.session = session
        self.loop = asyncio.get_running_loop()
        self.waiting_to_write = False
        self.sent = sent if sent is not None else GuestInput()
        self.closed = False
        stream.eventAddCallback(_WATCHED, self._on_event, None)

    def _on_event(self, _stream: libvirt.virStream, events: int, _opaque: object) -> None:
        if self.closed:
            return
        if events & libvirt.VIR_STREAM_EVENT_READABLE and not self._read():
            return
        if events & libvirt.VIR_STREAM_EVENT_WRITABLE:
            self._watch(write=False)
            self.session.writable()
        if events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
            self._end()

    def _read(self) -> bool:
        """Everything readable now, to the session; False once the stream ended."""
        while not self.closed:
            try:
                data = self.stream.recv(READ_CHUNK)
            except libvirt.libvirtError as err:
                log.info("console of %s: %s", self.session.vm_id, err.get_error_message())
                self._end()
                return False
            if data == -2:
                return True
            if not data:
                self._end()
                return False
            if self.stalled():
                self.loop.call_soon(self.session.writable)  # it reads again: send the rest
            # credit as much as it wrote (an echo answers byte for byte), not
            # all: a guest that read one key must not be sent another pty-full
            self.sent.unanswered = max(0, self.sent.unanswered - len(data))
            self.session.output(data)
        return False

    def stalled(self) -> bool:
        """The guest was sent UNANSWERED_MAX bytes more than it wrote back: it
        is taken not to read its port, and nothing more is sent to it."""
        return self.sent.unanswered >= UNANSWERED_MAX

    def _watch(self, write: bool) -> None:
        if write == self.waiting_to_write:
            return
        self.waiting_to_write = write
        events = _WATCHED | (libvirt.VIR_STREAM_EVENT_WRITABLE if write else 0)
        try:
            self.stream.eventUpdateCallback(events)
        except libvirt.libvirtError:
            self._end()

    def send(self, data: bytes) -> int:
        if self.closed or self.stalled():
            return 0
        try:
            taken = self.stream.send(data[:UNANSWERED_MAX - self.sent.unanswered])
        except libvirt.libvirtError as err:
            log.info("console of %s: %s", self.session.vm_id, err.get_error_message())
            self._end()
            return 0
        if taken == -2:
            self._watch(write=True)
            return 0
        self.sent.unanswered += int(taken)
        return int(taken)

    def _end(self) -> None:
        # not from inside the session's own call (send): on the loop's next turn
        self.loop.call_soon(self.session.ended)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.stream.eventRemoveCallback()
        except libvirt.libvirtError:
            pass
        try:
            # finish: what was sent reaches the port before the stream goes
            self.stream.finish()
        except libvirt.libvirtError as err:
            log.info("console of %s: finish: %s", self.session.vm_id, err.get_error_message())
            try:
                self.stream.abort()
            except libvirt.libvirtError:
                pass


async def read_all(stream: libvirt.virStream, most: int, timeout: float) -> bytes:
    """Everything a non-blocking stream gives until its end: at most `most`
    bytes, within `timeout` seconds (Failed otherwise; the stream is aborted)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    buffer = io.BytesIO()

    def on_event(_stream: libvirt.virStream, _events: int, _opaque: object) -> None:
        while not done.done():
            try:
                data = stream.recv(READ_CHUNK)
            except libvirt.libvirtError as err:
                done.set_exception(Failed(f"the stream failed: {err.get_error_message()}"))
                return
            if data == -2:
                return
            if not data:
                done.set_result(buffer.getvalue())
                return
            if buffer.tell() + len(data) > most:
                done.set_exception(Failed(f"more than {most} bytes"))
                return
            buffer.write(data)

    stream.eventAddCallback(_WATCHED, on_event, None)
    try:
        data = await asyncio.wait_for(done, timeout)
    except BaseException as err:
        _remove_callback(stream)
        _abort(stream)
        if isinstance(err, asyncio.TimeoutError):
            raise Failed(f"no whole answer within {timeout:g} s") from None
        raise
    _remove_callback(stream)
    try:
        stream.finish()
    except libvirt.libvirtError:
        _abort(stream)
    return data


def _remove_callback(stream: libvirt.virStream) -> None:
    try:
        stream.eventRemoveCallback()
    except libvirt.libvirtError:
        pass


def _abort(stream: libvirt.virStream) -> None:
    try:
        stream.abort()
    except libvirt.libvirtError:
        pass


def to_png(data: bytes, mime: str | None) -> bytes:
    """libvirt's screenshot as PNG: as is when it is one, else converted with
    Pillow (QEMU gives PPM, or PNG when it was built with it). The image comes
    from the guest's screen: decoding is bounded in pixels."""
    if mime == "image/png" and data.startswith(b"\x89PNG\r\n\x1a\n"):
        return data
    from PIL import Image  # imported here: only conversions need it

    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > SCREENSHOT_PIXELS_MAX:
                raise Failed(f"the screenshot is {width}x{height}: too large")
            out = io.BytesIO()
            image.save(out, format="PNG")
    except (OSError, ValueError, Image.DecompressionBombError) as err:
        raise Failed(f"the screenshot ({mime}) could not be read: {err}") from None
    return out.getvalue()

"""libvirt's events for the console broker, and a screenshot's stream read
whole, bounded (a console's stream: port.py).

libvirt's events run in a thread of their own with libvirt's default event
implementation (start_libvirt_events), which is thread-safe: each console
stream has a thread that makes libvirt calls that may block (port.py), which
libvirtaio's implementation, driven by the asyncio loop, does not allow.
Streams are non-blocking; their callbacks run in that thread and hand over to
the loop. `recv` gives -2 for "again" and b"" at the end.
"""
from __future__ import annotations

import asyncio
import io
import threading

import libvirt

from appliance.errors import Failed

READ_CHUNK = 65536
SCREENSHOT_MAX = 32 * 1024 * 1024  # bytes of libvirt's answer (a PPM of 4K x 2K is 24 MiB)
SCREENSHOT_PIXELS_MAX = 4096 * 4096
# a stream's events that mean: read (or its end); console streams too (port.py)
WATCHED = (libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR
           | libvirt.VIR_STREAM_EVENT_HANGUP)
_events_lock = threading.Lock()
_events_started = False


def start_libvirt_events() -> None:
    """libvirt's default event implementation, run by a daemon thread; before
    any connection is opened (once per process; later calls do nothing)."""
    global _events_started
    with _events_lock:
        if _events_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        threading.Thread(target=_run_events, name="libvirt-events", daemon=True).start()
        _events_started = True


def _run_events() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


async def read_all(stream: libvirt.virStream, most: int, timeout: float) -> bytes:
    """Everything a non-blocking stream gives until its end: at most `most`
    bytes, within `timeout` seconds (Failed otherwise; the stream is aborted)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future[bytes] = loop.create_future()
    buffer = io.BytesIO()
    armed = threading.Lock()  # held while the callback is not to fire (it stops watching)

    def on_event(_stream: libvirt.virStream, _events: int, _opaque: object) -> None:
        # libvirt's event thread: stop watching (it would fire again and again
        # until the loop has read), and let the loop read
        if armed.acquire(blocking=False):
            try:
                stream.eventUpdateCallback(0)
            except libvirt.libvirtError:
                pass
            loop.call_soon_threadsafe(read)

    def read() -> None:
        while not done.done():
            try:
                data = stream.recv(READ_CHUNK)
            except libvirt.libvirtError as err:
                done.set_exception(Failed(f"the stream failed: {err.get_error_message()}"))
                return
            if data == -2:
                armed.release()
                try:
                    stream.eventUpdateCallback(WATCHED)
                except libvirt.libvirtError:
                    pass
                return
            if not data:
                done.set_result(buffer.getvalue())
                return
            if buffer.tell() + len(data) > most:
                done.set_exception(Failed(f"more than {most} bytes"))
                return
            buffer.write(data)

    stream.eventAddCallback(WATCHED, on_event, None)
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

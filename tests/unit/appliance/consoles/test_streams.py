"""Reading a libvirt stream whole (bounded in bytes and time), and the
screenshot's conversion to PNG, with a fake stream and real images."""
import asyncio
import io

import libvirt
import pytest
from PIL import Image

from appliance.consoles import streams
from appliance.errors import Failed


class FakeStream:
    """Gives its chunks one callback at a time; b"" at the end unless `endless`."""

    def __init__(self, chunks, endless=False):
        self.chunks = list(chunks)
        self.endless = endless
        self.callback = None
        self.finished = self.aborted = False

    def eventAddCallback(self, events, callback, opaque):
        self.callback = callback
        asyncio.get_running_loop().call_soon(self._fire)

    def _fire(self):
        if self.callback is not None:
            self.callback(self, libvirt.VIR_STREAM_EVENT_READABLE, None)

    def eventUpdateCallback(self, events):
        pass  # fires only when recv says there is more (as libvirt would, once watched)

    def eventRemoveCallback(self):
        self.callback = None

    def recv(self, size):
        if self.chunks:
            chunk = self.chunks.pop(0)
            asyncio.get_running_loop().call_soon(self._fire)
            return -2 if chunk is None else chunk
        return -2 if self.endless else b""

    def finish(self):
        self.finished = True

    def abort(self):
        self.aborted = True


def read(stream, most=100, timeout=1.0):
    return asyncio.run(streams.read_all(stream, most, timeout))


def test_a_stream_is_read_to_its_end():
    stream = FakeStream([b"ab", None, b"cd"])
    assert read(stream) == b"abcd" and stream.finished and stream.callback is None


def test_a_stream_longer_than_its_bound_is_aborted():
    stream = FakeStream([b"x" * 60, b"x" * 60])
    with pytest.raises(Failed, match="more than 100 bytes"):
        read(stream)
    assert stream.aborted and not stream.finished and stream.callback is None


def test_a_stream_that_never_ends_is_aborted_in_time():
    stream = FakeStream([b"x"], endless=True)
    with pytest.raises(Failed, match="within"):
        read(stream, timeout=0.2)
    assert stream.aborted and stream.callback is None


def image_bytes(fmt, size=(64, 48)):
    out = io.BytesIO()
    Image.new("RGB", size, (200, 10, 10)).save(out, format=fmt)
    return out.getvalue()


def test_a_png_stays_as_it_is_and_a_ppm_becomes_a_png():
    png = image_bytes("PNG")
    assert streams.to_png(png, "image/png") == png
    converted = streams.to_png(image_bytes("PPM"), "image/x-portable-pixmap")
    with Image.open(io.BytesIO(converted)) as image:
        assert image.format == "PNG" and image.size == (64, 48)
        assert image.getpixel((0, 0)) == (200, 10, 10)


def test_what_is_no_image_or_too_large_is_refused():
    with pytest.raises(Failed, match="could not be read"):
        streams.to_png(b"P6 not really", "image/x-portable-pixmap")
    # a PPM header that claims 5000 x 5000 pixels: refused before decoding them
    with pytest.raises(Failed, match="too large"):
        streams.to_png(b"P6\n5000 5000\n255\n" + b"\0" * 1000, "image/x-portable-pixmap")


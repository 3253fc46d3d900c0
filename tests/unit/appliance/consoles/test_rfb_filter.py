"""The read-only RFB filter (appliance/consoles/rfb.py): byte streams in, what
passes out. A viewer's VNC session must never carry a key, a pointer event, a
clipboard or a resize to the VM, nor an exclusive ClientInit, however the
bytes are split into WebSocket messages."""
from __future__ import annotations

import struct

import pytest

from appliance.consoles.rfb import ReadOnlyFilter, RFBRefused

HANDSHAKE_38 = b"RFB 003.008\n" + b"\x01" + b"\x00"  # version, security None, ClientInit exclusive
SET_PIXEL_FORMAT = b"\x00\x00\x00\x00" + bytes(range(16))
SET_ENCODINGS = b"\x02\x00" + struct.pack(">H", 3) + struct.pack(">iii", 7, 0, -223)
UPDATE_REQUEST = b"\x03\x01" + struct.pack(">HHHH", 0, 0, 640, 480)
KEY_EVENT = b"\x04\x01\x00\x00" + struct.pack(">I", 0x61)  # 'a' down
POINTER_EVENT = b"\x05\x01" + struct.pack(">HH", 10, 20)
CUT_TEXT = b"\x06\x00\x00\x00" + struct.pack(">i", 5) + b"hello"
EXTENDED_CUT_TEXT = b"\x06\x00\x00\x00" + struct.pack(">i", -8) + b"\x10\x00\x00\x01" + b"xyzw"
QEMU_KEY = b"\xff\x00\x00\x01" + struct.pack(">II", 0x61, 30)
DESKTOP_SIZE = b"\xfb\x00" + struct.pack(">HH", 800, 600) + b"\x01\x00" + bytes(16)
FENCE = b"\xf8\x00\x00\x00" + struct.pack(">I", 0) + b"\x02" + b"ab"


def session() -> tuple[ReadOnlyFilter, bytes]:
    rfb = ReadOnlyFilter()
    return rfb, rfb.feed(HANDSHAKE_38)


def test_the_handshake_passes_and_client_init_becomes_shared():
    _, out = session()
    assert out == b"RFB 003.008\n\x01\x01"


def test_rfb_3_3_has_no_security_choice():
    rfb = ReadOnlyFilter()
    assert rfb.feed(b"RFB 003.003\n\x00") == b"RFB 003.003\n\x01"
    assert rfb.feed(UPDATE_REQUEST) == UPDATE_REQUEST


def test_display_messages_pass_input_is_dropped():
    rfb, _ = session()
    stream = (SET_PIXEL_FORMAT + KEY_EVENT + SET_ENCODINGS + POINTER_EVENT + CUT_TEXT
              + QEMU_KEY + EXTENDED_CUT_TEXT + DESKTOP_SIZE + FENCE + UPDATE_REQUEST)
    assert rfb.feed(stream) == SET_PIXEL_FORMAT + SET_ENCODINGS + FENCE + UPDATE_REQUEST
    assert (rfb.passed, rfb.dropped) == (4, 6)


def test_messages_split_anywhere_give_the_same_output():
    whole = HANDSHAKE_38 + KEY_EVENT + SET_ENCODINGS + CUT_TEXT + UPDATE_REQUEST + POINTER_EVENT
    want = ReadOnlyFilter().feed(whole)
    for size in (1, 2, 3, 5, 7, 13):
        rfb = ReadOnlyFilter()
        out = b"".join(rfb.feed(whole[i:i + size]) for i in range(0, len(whole), size))
        assert out == want, size
    assert b"\x04" not in want[14:] and b"hello" not in want


def test_a_key_hidden_in_a_clipboard_length_does_not_pass():
    """The cut text's bytes are skipped whole, whatever they look like."""
    rfb, _ = session()
    payload = KEY_EVENT * 4
    sneaky = b"\x06\x00\x00\x00" + struct.pack(">i", len(payload)) + payload
    assert rfb.feed(sneaky + UPDATE_REQUEST) == UPDATE_REQUEST


@pytest.mark.parametrize("stream", [
    b"GET / HTTP/1.1\r\n\r\n",  # not RFB
    b"RFB 003.008\n\x02",  # VNC authentication: only None is offered
    HANDSHAKE_38 + b"\x07\x00\x00\x00",  # an unknown message type
    HANDSHAKE_38 + b"\xff\x09\x00\x00",  # an unknown QEMU message
    HANDSHAKE_38 + b"\x06\x00\x00\x00" + struct.pack(">i", 1 << 30),  # a 1 GiB clipboard
])
def test_what_does_not_parse_closes_the_session(stream):
    with pytest.raises(RFBRefused):
        ReadOnlyFilter().feed(stream)


def test_nothing_is_held_back_once_a_message_is_whole():
    rfb, _ = session()
    assert rfb.feed(UPDATE_REQUEST[:4]) == b""
    assert rfb.feed(UPDATE_REQUEST[4:]) == UPDATE_REQUEST
    assert rfb.buffer == b""

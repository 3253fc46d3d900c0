"""A read-only RFB (VNC) session: the client's side of the stream, filtered.

A viewer may watch a VM's display, not type into it. QEMU's VNC server has
no read-only client of its own over openGraphicsFD, so the WebSocket proxy
(appliance/api/websocket.py) passes a viewer's client->server bytes through
ReadOnlyFilter, which parses RFB 3.3/3.7/3.8 (RFC 6143) as it goes:

- the handshake: ProtocolVersion (12 bytes), the security type the client
  picks (1 byte, 3.7 and 3.8 only: in 3.3 the server decides), which must be
  None (1): openGraphicsFD's socket skips VNC's own authentication, the
  appliance did it); ClientInit (1 byte), forced to shared=1, so a viewer
  cannot push other clients off (a non-shared client disconnects the rest);
- then the client's messages, each whole before it is judged:
  SetPixelFormat (0), SetEncodings (2), FramebufferUpdateRequest (3),
  EnableContinuousUpdates (150) and ClientFence (248) carry no input and pass;
  KeyEvent (4), PointerEvent (5), ClientCutText (6), SetDesktopSize (251),
  xvp (250: power actions) and QEMU's extended key and audio messages (255)
  are dropped; anything else (a type this parser cannot size) closes the
  session: a message it cannot delimit would let the next bytes pass as
  something else.

The server's side (the framebuffer) is not filtered. Read-write sessions
are not parsed at all.
"""
from __future__ import annotations

import re
import struct

PROTOCOL_VERSION = re.compile(rb"RFB \d{3}\.\d{3}\n")
SECURITY_NONE = 1
# Message types, client to server (RFC 6143 7.5, and the registered extensions).
SET_PIXEL_FORMAT, SET_ENCODINGS, FRAMEBUFFER_UPDATE_REQUEST = 0, 2, 3
KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT = 4, 5, 6
ENABLE_CONTINUOUS_UPDATES, XVP, SET_DESKTOP_SIZE, CLIENT_FENCE, QEMU = 150, 250, 251, 248, 255
QEMU_EXTENDED_KEY, QEMU_AUDIO = 0, 1
PASSED = frozenset({SET_PIXEL_FORMAT, SET_ENCODINGS, FRAMEBUFFER_UPDATE_REQUEST,
                    ENABLE_CONTINUOUS_UPDATES, CLIENT_FENCE})
# The longest clipboard text (or extended clipboard data) skipped before the session closes.
MAX_CUT_TEXT = 256 << 10


class RFBRefused(Exception):
    """The client sent what a read-only session may not carry, or what does not parse."""


def _sized(buffer: bytes) -> int | None:
    """The length of the client message at the start of `buffer` (None: more bytes
    are needed to tell); RFBRefused for a type this parser does not know."""
    kind = buffer[0]
    fixed = {SET_PIXEL_FORMAT: 20, FRAMEBUFFER_UPDATE_REQUEST: 10, KEY_EVENT: 8,
             POINTER_EVENT: 6, ENABLE_CONTINUOUS_UPDATES: 10, XVP: 4}
    if kind in fixed:
        return fixed[kind]
    if kind == SET_ENCODINGS:
        return None if len(buffer) < 4 else 4 + 4 * struct.unpack_from(">H", buffer, 2)[0]
    if kind == CLIENT_CUT_TEXT:
        if len(buffer) < 8:
            return None
        # Negative: the extended clipboard's data, of the absolute length.
        length = abs(struct.unpack_from(">i", buffer, 4)[0])
        if length > MAX_CUT_TEXT:
            raise RFBRefused(f"clipboard message of {length} bytes")
        return 8 + length
    if kind == SET_DESKTOP_SIZE:
        return None if len(buffer) < 8 else 8 + 16 * buffer[6]
    if kind == CLIENT_FENCE:
        return None if len(buffer) < 9 else 9 + buffer[8]
    if kind == QEMU:
        return _qemu_sized(buffer)
    raise RFBRefused(f"client message type {kind} is not allowed in a read-only session")


def _qemu_sized(buffer: bytes) -> int | None:
    if len(buffer) < 2:
        return None
    if buffer[1] == QEMU_EXTENDED_KEY:
        return 12
    if buffer[1] == QEMU_AUDIO:
        if len(buffer) < 4:
            return None
        operation = struct.unpack_from(">H", buffer, 2)[0]
        if operation in (0, 1):  # enable, disable
            return 4
        if operation == 2:  # set format: sample format, channels, frequency
            return 10
        raise RFBRefused(f"QEMU audio operation {operation}")
    raise RFBRefused(f"QEMU client message {buffer[1]}")


class ReadOnlyFilter:
    """feed(the client's bytes) -> the bytes the server may see, in order.
    RFBRefused: close the session."""

    def __init__(self) -> None:
        self.buffer = b""
        self.stage = "version"  # version, security, init, messages
        self.passed = self.dropped = 0  # messages, for the tests and the logs

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = bytearray()
        while self.buffer:
            taken = self._handshake() if self.stage != "messages" else self._message()
            if taken is None:
                break
            out += taken
        return bytes(out)

    def _take(self, size: int) -> bytes | None:
        if len(self.buffer) < size:
            return None
        head, self.buffer = self.buffer[:size], self.buffer[size:]
        return head

    def _handshake(self) -> bytes | None:
        if self.stage == "version":
            version = self._take(12)
            if version is None:
                return None
            if not PROTOCOL_VERSION.fullmatch(version):
                raise RFBRefused("not an RFB ProtocolVersion")
            # 3.3 (and any version a server must treat as 3.3): no security choice.
            self.stage = "security" if version in (b"RFB 003.007\n", b"RFB 003.008\n") else "init"
            return version
        if self.stage == "security":
            choice = self._take(1)
            if choice is None:
                return None
            if choice[0] != SECURITY_NONE:
                raise RFBRefused(f"security type {choice[0]}: only None (1) is offered")
            self.stage = "init"
            return choice
        init = self._take(1)
        if init is None:
            return None
        self.stage = "messages"
        return b"\x01"  # shared: do not disconnect the other clients

    def _message(self) -> bytes | None:
        size = _sized(self.buffer)
        if size is None:
            return None
        message = self._take(size)
        if message is None:
            return None
        if message[0] in PASSED:
            self.passed += 1
            return message
        self.dropped += 1
        return b""

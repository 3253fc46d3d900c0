"""The console broker's client side, for the API, the mount and the service.

The broker does not authorize: check the policy before calling these. Refusals
raise appliance.errors: NotFound (404), Conflict (409: not running, graphics
none, the console held elsewhere), Failed (500), ConsoleUnavailable (503: the
broker is not running, or the VM's host cannot be reached).
"""
from __future__ import annotations

import asyncio
import json
import socket
import time
from pathlib import Path

from appliance.consoles import protocol
from appliance.consoles.protocol import ConsoleUnavailable
from appliance.errors import Failed

__all__ = ["ConsoleUnavailable", "open_console", "open_vnc", "screenshot", "send_input"]

CONNECT_TIMEOUT = 5.0
REPLY_TIMEOUT = 15.0  # the broker may be opening a connection to a remote host
PNG_MAX = 64 * 1024 * 1024  # bytes of a screenshot a client accepts


def _request(op: str, vm_id: str, **fields: object) -> bytes:
    line = json.dumps({"op": op, "vm": vm_id, **fields}, separators=(",", ":")).encode() + b"\n"
    if len(line) > protocol.HEADER_MAX:
        raise Failed("the console request is too long")
    return line


def _unavailable(err: OSError) -> ConsoleUnavailable:
    return ConsoleUnavailable(
        f"the console broker is not running ({err.strerror or err}); `vmctl serve` starts it")


async def open_console(socket_path: str | Path, vm_id: str, *, write: bool, force: bool = False,
                       history: int = 0) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection to the VM's console: after history, what the guest writes
    comes from the reader; what goes to the writer is typed (write=True)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_unix_connection(str(socket_path), limit=protocol.REPLY_MAX * 2),
            CONNECT_TIMEOUT)
    except (TimeoutError, OSError) as err:
        raise _unavailable(err if isinstance(err, OSError) else OSError("timed out")) from None
    try:
        writer.write(_request("console", vm_id, write=write, force=force, history=history))
        await asyncio.wait_for(writer.drain(), CONNECT_TIMEOUT)
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), REPLY_TIMEOUT)
        except asyncio.IncompleteReadError as err:
            line = err.partial
        except asyncio.LimitOverrunError:
            raise Failed("the console broker's answer is too long") from None
        protocol.parse_reply(line)
    except BaseException as err:
        writer.close()
        if isinstance(err, (OSError, asyncio.TimeoutError)):
            raise ConsoleUnavailable("the console broker did not answer") from None
        raise
    return reader, writer


class _Connection:
    """A blocking connection to the broker with one deadline for the whole exchange."""

    def __init__(self, socket_path: str | Path, timeout: float):
        self.deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self.sock.settimeout(min(timeout, CONNECT_TIMEOUT))
            self.sock.connect(str(socket_path))
        except OSError as err:
            self.sock.close()
            raise _unavailable(err) from None

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise Failed("the console broker did not answer in time")
        self.sock.settimeout(left)
        return left

    def send(self, data: bytes) -> None:
        self._left()
        try:
            self.sock.sendall(data)
        except OSError as err:
            raise ConsoleUnavailable(f"the console broker went away ({err})") from None

    def recv(self, size: int) -> bytes:
        self._left()
        try:
            return self.sock.recv(size)
        except TimeoutError:
            raise Failed("the console broker did not answer in time") from None
        except OSError as err:
            raise ConsoleUnavailable(f"the console broker went away ({err})") from None

    def reply(self) -> dict:
        """The reply line, read one byte at a time: nothing after it is consumed
        (a descriptor may ride on the next byte)."""
        line = bytearray()
        while not line.endswith(b"\n") and len(line) <= protocol.REPLY_MAX:
            byte = self.recv(1)
            if not byte:
                break
            line += byte
        return protocol.parse_reply(bytes(line))

    def exactly(self, size: int) -> bytes:
        data = bytearray()
        while len(data) < size:
            chunk = self.recv(min(65536, size - len(data)))
            if not chunk:
                raise Failed("the console broker's answer was cut short")
            data += chunk
        return bytes(data)

    def close(self) -> None:
        self.sock.close()


def screenshot(socket_path: str | Path, vm_id: str, timeout: float = 10.0) -> bytes:
    """The VM's screen as PNG."""
    conn = _Connection(socket_path, timeout)
    try:
        conn.send(_request("screenshot", vm_id))
        reply = conn.reply()
        size = reply.get("size")
        if not isinstance(size, int) or not 0 < size <= PNG_MAX:
            raise Failed(f"the console broker announced a screenshot of {size!r} bytes")
        return conn.exactly(size)
    finally:
        conn.close()


def send_input(socket_path: str | Path, vm_id: str, data: bytes, timeout: float = 10.0) -> None:
    """Type data (at most protocol.INPUT_MAX bytes) into the VM's serial port."""
    if len(data) > protocol.INPUT_MAX:
        raise Failed(f"at most {protocol.INPUT_MAX} bytes at a time")
    conn = _Connection(socket_path, timeout)
    try:
        conn.send(_request("input", vm_id, size=len(data)) + data)
        conn.reply()
    finally:
        conn.close()


def _open_vnc(socket_path: str | Path, vm_id: str, timeout: float) -> socket.socket:
    conn = _Connection(socket_path, timeout)
    try:
        conn.send(_request("vnc", vm_id))
        conn.reply()
        conn._left()
        try:
            _data, fds, _flags, _addr = socket.recv_fds(conn.sock, 1, 1)
        except OSError as err:
            raise ConsoleUnavailable(f"the console broker went away ({err})") from None
        if len(fds) != 1:
            for fd in fds:
                socket.close(fd)
            raise Failed("the console broker sent no VNC socket")
        rfb = socket.socket(fileno=fds[0])
        rfb.setblocking(True)
        return rfb
    finally:
        conn.close()


async def open_vnc(socket_path: str | Path, vm_id: str, timeout: float = 15.0) -> socket.socket:
    """A connected RFB socket to the VM's display (blocking mode; the caller
    may make it non-blocking for its loop)."""
    return await asyncio.to_thread(_open_vnc, socket_path, vm_id, timeout)

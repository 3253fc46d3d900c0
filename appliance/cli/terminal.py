"""The terminal side of `vmctl console`: raw mode, the escape byte, and the
pump between this process's stdin/stdout and a console socket.

Like `virsh console`: the terminal is raw (every key, ^C included, goes to the
guest) and Ctrl-] detaches. The guest's bytes reach the terminal as they are
(its escape sequences too, as with virsh); what the terminal answers them and
is still unread when the session ends is discarded, never left for the shell.
The terminal is restored on every way out: detach, the connection closing,
an error, SIGTERM or SIGHUP. When stdin is not a terminal (a script pipes
into it) nothing is raw, no byte is an escape: stdin is forwarded as it is
until its end, then what the guest answers is printed until it has been
quiet for a moment, and the pump returns.

The socket is anything with send(bytes), recv() -> bytes (raising
ConsoleClosed when the far end closed) and close(): the WebSocket of
appliance/cli/consoles.py, or a fake in the unit tests.
"""
from __future__ import annotations

import contextlib
import os
import select
import signal
import termios
import threading
import time
import tty
from collections.abc import Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Protocol

ESCAPE = 0x1D  # Ctrl-], as virsh console, telnet and docker attach's default
READ_SIZE = 4096
QUIET_AFTER_EOF = 1.0  # stdin ended: print the answers until the guest is quiet this long
LINGER_LIMIT = 10.0  # but not longer than this in all


class ConsoleClosed(Exception):
    """The far end closed the console: code (a WebSocket close code) and why."""

    def __init__(self, code: int, reason: str):
        super().__init__(reason)
        self.code = code
        self.reason = reason


class ConsoleSocket(Protocol):
    def send(self, data: bytes) -> None: ...
    def recv(self) -> bytes: ...
    def close(self) -> None: ...


class Terminated(Exception):
    """SIGTERM or SIGHUP arrived: raised in the main thread so that every
    `finally` (the terminal's restore first) runs on the way out."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def split_at_escape(chunk: bytes) -> tuple[bytes, bool]:
    """(the bytes to send, whether the user pressed the escape): what follows
    the escape in the same read is dropped, as virsh does."""
    index = chunk.find(ESCAPE)
    if index < 0:
        return chunk, False
    return chunk[:index], True


@contextlib.contextmanager
def raw_terminal(fd: int) -> Iterator[bool]:
    """Raw mode on fd while inside, when it is a terminal (yields whether it
    is); its previous settings come back however the block is left."""
    if not os.isatty(fd):
        yield False
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd, termios.TCSANOW)
        yield True
    finally:
        # TCSAFLUSH, as virsh console: what the guest sent is written out before the line
        # discipline changes, and input not read yet is discarded: keys typed after the
        # escape, and what the terminal answered the guest's escape sequences (device
        # status, a window title in some terminals), which the shell would read as typed.
        termios.tcsetattr(fd, termios.TCSAFLUSH, saved)


@contextlib.contextmanager
def signals_raise() -> Iterator[None]:
    """SIGTERM and SIGHUP raise Terminated while inside (the default handlers
    would end the process with the terminal still raw)."""
    def handler(signum: int, frame: FrameType | None) -> None:
        raise Terminated(signum)

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


@dataclass
class Outcome:
    """How the pump ended: "detached" (the escape), "eof" (stdin ended),
    "closed" (by the far end: code, reason) or "output" (stdout went away)."""

    how: str
    code: int = 1000
    reason: str = ""


class _Receiver(threading.Thread):
    """Copies what the socket receives to out_fd until it closes; wakes the
    main thread through a pipe when it stops."""

    def __init__(self, sock: ConsoleSocket, out_fd: int, wake_fd: int):
        super().__init__(name="console-receiver", daemon=True)
        self.sock = sock
        self.out_fd = out_fd
        self.wake_fd = wake_fd
        self.outcome: Outcome | None = None
        self.output_seen = threading.Event()

    def run(self) -> None:
        try:
            while True:
                data = self.sock.recv()
                self.output_seen.set()
                _write_all(self.out_fd, data)
        except ConsoleClosed as closed:
            self.outcome = Outcome("closed", closed.code, closed.reason)
        except OSError as err:  # stdout closed (a pipe's reader left) or full disk
            self.outcome = Outcome("output", reason=str(err))
        except Exception as err:  # the WebSocket library's own: still one line, no traceback
            self.outcome = Outcome("closed", 1011, f"the connection failed: {err}")
        finally:
            with contextlib.suppress(OSError):
                os.write(self.wake_fd, b"x")


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def pump(sock: ConsoleSocket, in_fd: int, out_fd: int, *, interactive: bool) -> Outcome:
    """Forward in_fd to sock and sock to out_fd until the escape (interactive),
    the end of in_fd (not interactive), or the far end closing. Closes sock."""
    wake_read, wake_write = os.pipe()
    receiver = _Receiver(sock, out_fd, wake_write)
    receiver.start()
    try:
        outcome = _forward_input(sock, in_fd, wake_read, interactive)
        if outcome.how == "eof":
            _linger(receiver)
        return receiver.outcome or outcome
    finally:
        with contextlib.suppress(Exception):
            sock.close()
        receiver.join(timeout=2)
        os.close(wake_read)
        os.close(wake_write)


def _forward_input(sock: ConsoleSocket, in_fd: int, wake_fd: int, interactive: bool) -> Outcome:
    while True:
        ready, _, _ = select.select([in_fd, wake_fd], [], [])
        if wake_fd in ready:  # the receiver stopped: the far end closed, or stdout did
            return Outcome("closed")
        chunk = os.read(in_fd, READ_SIZE)
        if not chunk:
            return Outcome("eof")
        detached = False
        if interactive:
            chunk, detached = split_at_escape(chunk)
        if chunk:
            try:
                sock.send(chunk)
            except ConsoleClosed:
                return Outcome("closed")  # the receiver has, or will have, the reason
        if detached:
            return Outcome("detached")


def _linger(receiver: _Receiver) -> None:
    """stdin ended: let the guest's answer to it arrive (until quiet or closed)."""
    deadline = time.monotonic() + LINGER_LIMIT
    while receiver.is_alive() and time.monotonic() < deadline:
        receiver.output_seen.clear()
        if not receiver.output_seen.wait(min(QUIET_AFTER_EOF, deadline - time.monotonic())):
            return

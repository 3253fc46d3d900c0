"""A nudge from whoever records an operation to the controller that runs it.

The store is the only channel that matters; this datagram only spares the
controller from polling it often. A lost nudge costs at most one poll interval.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path


class Notifier:
    def __init__(self, path: str | Path):
        self.path = str(path)
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def __call__(self) -> None:
        try:
            self._sock.sendto(b"!", self.path)
        except OSError:
            pass  # controller not running or its queue full: it polls anyway


def listening(path: str | Path) -> bool:
    """Whether a controller's Listener is bound at `path` now (a datagram socket
    connects only to a bound one)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


class Listener:
    def __init__(self, path: str | Path):
        self.path = str(path)
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.bind(self.path)

    def wait(self, timeout: float) -> bool:
        """Wait up to timeout for a nudge; drain any backlog. True if nudged."""
        self._sock.settimeout(timeout)
        try:
            self._sock.recv(16)
        except (TimeoutError, BlockingIOError):
            return False
        self._sock.setblocking(False)
        try:
            while self._sock.recv(16):
                pass
        except BlockingIOError:
            pass
        return True

    def close(self) -> None:
        self._sock.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass

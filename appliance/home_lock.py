"""One `vmctl serve` per home (issue 16): an exclusive flock on HOME/run/serve.lock,
taken before serve touches anything in the home (the shared metrics directory it
wipes, config.json, the store, the children) and held for the serve process's life.

The file says who holds it ("PID LISTEN"), so that a second serve can say whom it
met and exit at once. The kernel drops the lock when the serve process dies, even
by SIGKILL; nothing is ever left to clean up by hand.

Only the serve process holds it: the descriptor is not inherited by exec'd children
(Python opens it close-on-exec) and is closed in forked ones (os.register_at_fork),
so that the API, console broker or mount of a serve that was killed, still winding
down, never keeps the next serve out (serve waits for their port and mount itself).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path

LOCK_NAME = "serve.lock"
# What a `vmctl admin restore` writes after its pid (a serve writes its listen address).
RESTORING = "restoring (vmctl admin restore)"


class AlreadyServing(Exception):
    """Another serve holds the home: its pid and listen address, as its lock file says."""

    def __init__(self, home: Path, pid: int | None, listen: str | None):
        self.home, self.pid, self.listen = home, pid, listen
        shown_pid = pid if pid else "?"
        if listen == RESTORING:
            super().__init__(f"{home} is being restored (pid {shown_pid}, vmctl admin restore)")
        else:
            super().__init__(f"already serving {home} (pid {shown_pid}, "
                             f"listening on {listen or '?'})")


class HomeLock:
    """The held lock; release() (or the process's exit) lets go of it."""

    def __init__(self, path: Path, fd: int):
        self.path = path
        self._fd: int | None = fd
        os.register_at_fork(after_in_child=self._close_in_child)

    def _close_in_child(self) -> None:
        # the child's copy only: the parent's descriptor keeps the lock
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def lock_path(home: Path) -> Path:
    return Path(home).absolute() / "run" / LOCK_NAME


def acquire(home: Path, listen: str) -> HomeLock:
    """Lock HOME for this process and record its pid and listen address; raises
    AlreadyServing (without waiting) when another process holds it."""
    path = lock_path(home)
    path.parent.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.parent.mkdir(exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        pid, holder_listen = holder(path)
        raise AlreadyServing(path.parent.parent, pid, holder_listen) from None
    except BaseException:
        os.close(fd)
        raise
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()} {listen}\n".encode(), 0)
    return HomeLock(path, fd)


def holder(path: Path, patience: float = 1.0) -> tuple[int | None, str | None]:
    """The pid and listen address in the lock file; a holder that has just taken
    the lock writes them a moment later, so an empty file is read again for up to
    `patience` seconds."""
    deadline = time.monotonic() + patience
    while True:
        try:
            pid_text, _, listen = path.read_text(encoding="utf-8", errors="replace").partition(" ")
        except OSError:
            pid_text, listen = "", ""
        if pid_text.strip().isdigit():
            return int(pid_text), listen.strip()[:200] or None
        if time.monotonic() > deadline:
            return None, None
        time.sleep(0.05)

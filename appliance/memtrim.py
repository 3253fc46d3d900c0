"""Freed heap memory given back to the system, in each of the appliance's processes.

glibc keeps what a process freed inside its heaps for the next allocations and
returns only the free space at a heap's top. After a burst (1,000 creates in serve,
a `GET /v1/vms` of 1,000 VMs or 8 clients at once in an API worker, a listing in the
mount) most of what was freed lies below data still in use and stays resident:
malloc_trim(0) gave back 2 MiB in serve, 2 MiB in the mount and 3.5-8 MiB in each
API worker at 1,000 VMs (issue 10's memory goal, tests/bench/notes.md).

A daemon thread looks every CHECK_SECONDS at the process's resident size (one read
of /proc/self/statm) and, once it has grown by THRESHOLD_BYTES since the last look
that trimmed (a burst touched that much more memory), asks glibc how much its heaps
hold free (mallinfo2, a walk of the free lists) and trims when that is at least
THRESHOLD_BYTES too. An idle process reads one small file every few seconds;
a trim happens after a burst, not again until the next (trimmed pages stay on
glibc's free lists, so the free count alone would trim every time). Python's own
small-object arenas are not glibc's heap and are not affected.
"""
from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import threading

log = logging.getLogger("appliance.memtrim")

CHECK_SECONDS = 5.0
THRESHOLD_BYTES = 1 << 20
PAGE = os.sysconf("SC_PAGE_SIZE")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]


def _libc() -> ctypes.CDLL | None:
    with contextlib.suppress(OSError):
        libc = ctypes.CDLL("libc.so.6")
        if hasattr(libc, "malloc_trim") and hasattr(libc, "mallinfo2"):
            libc.mallinfo2.restype = _MallInfo2
            libc.malloc_trim.argtypes = [ctypes.c_size_t]
            return libc
    return None  # not glibc (or older than 2.33): nothing to do


def free_bytes(libc: ctypes.CDLL) -> int:
    """What glibc's heaps hold free (`fordblks`: every free chunk, the top one included)."""
    return int(libc.mallinfo2().fordblks)


def resident_bytes() -> int:
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * PAGE


class Trimmer:
    """Trims this process's heaps after each growth of its resident size (module doc)."""

    def __init__(self, libc: ctypes.CDLL, threshold: int = THRESHOLD_BYTES) -> None:
        self.libc = libc
        self.threshold = threshold
        self.baseline = resident_bytes()

    def check(self) -> bool:
        """Whether it trimmed."""
        resident = resident_bytes()
        if resident - self.baseline < self.threshold:
            self.baseline = min(self.baseline, resident)
            return False
        trimmed = free_bytes(self.libc) >= self.threshold
        if trimmed:
            self.libc.malloc_trim(0)
        self.baseline = resident_bytes()
        return trimmed


def start(check_seconds: float = CHECK_SECONDS, threshold: int = THRESHOLD_BYTES,
          stop: threading.Event | None = None) -> threading.Thread | None:
    """The trimming thread of this process (None where glibc's calls are missing).
    Start it after any fork this process makes while it must have one thread
    (appliance/forked.py)."""
    libc = _libc()
    if libc is None:
        return None
    stopped = stop or threading.Event()
    trimmer = Trimmer(libc, threshold)

    def loop() -> None:
        while not stopped.wait(check_seconds):
            try:
                trimmer.check()
            except Exception:  # noqa: BLE001 - never worth the process
                log.exception("malloc_trim")
                return

    thread = threading.Thread(target=loop, name="memtrim", daemon=True)
    thread.start()
    return thread

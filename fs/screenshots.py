"""Files made when they are read (vms/NAME/screen.png): their size, and one
content per open.

A screenshot is taken by the console broker (~0.1 s, up to its timeout), so
it is never taken for a listing, and never twice for one `file screen.png`
or `cp`: getattr asks its size, open its bytes, fstat its size again. This
mount keeps the last one it took of each VM for FRESH_SECONDS and serves
both from it, so the size getattr reports is the size the reads end at.
An open file keeps the bytes it was opened with (fs/handles.py `fixed`):
a copy is never a mix of two screens.

What a listing shows (no screenshot: `ls vms/NAME` stays fast, and a stopped
VM's directory lists; `ls -l` stats the file, which takes one): the last size
known, or 0. What is kept is bounded
(KEPT_BYTES): a guest chooses how large its screen is. The kernel does not cache
such a file's attributes (fs/operations.py), so the next stat asks again.
"""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from appliance.errors import ApplianceError, Conflict
from appliance.files import File

if TYPE_CHECKING:
    from appliance.service import Service

FRESH_SECONDS = 1.0
# A guest chooses its screen, so a screenshot may be large (the broker allows 32 MiB):
# the bytes kept are bounded in all, and kept only while fresh; a listing's sizes outlive
# them (a few per VM, forgotten all at once beyond SIZES_KEPT).
KEPT_BYTES = 64 << 20
SIZES_KEPT = 4096
# Each open screen.png holds its bytes until closed: open ones hold at most this in all
# (an open beyond is EBUSY; many shared the same bytes, counted for each: a bound, not a
# measure).
OPEN_BYTES = 256 << 20

Key = tuple[str, str]  # (VM id, file name): a name means another VM in another project


class Screenshots:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._taken: dict[Key, tuple[float, bytes]] = {}
        self._sizes: dict[Key, int] = {}
        self.lent = 0  # bytes held by open files
        self._lock = threading.Lock()  # the mount's worker threads share it

    def _kept(self, key: Key) -> bytes | None:
        with self._lock:
            found = self._taken.get(key)
        if found is None or self.clock() - found[0] > FRESH_SECONDS:
            return None
        return found[1]

    def _keep(self, key: Key, data: bytes) -> None:
        now = self.clock()
        with self._lock:
            self._taken = {k: v for k, v in self._taken.items()
                           if now - v[0] <= FRESH_SECONDS and k != key}
            while self._taken and sum(len(v[1]) for v in self._taken.values()) + len(data) \
                    > KEPT_BYTES:
                del self._taken[min(self._taken, key=lambda k: self._taken[k][0])]
            if len(data) <= KEPT_BYTES:
                self._taken[key] = (now, data)
            if len(self._sizes) >= SIZES_KEPT:
                self._sizes.clear()
            self._sizes[key] = len(data)

    def take(self, key: Key, make: Callable[[], bytes]) -> bytes:
        """The fresh snapshot of key, or a new one (make's refusal raised as it is)."""
        data = self._kept(key)
        if data is not None:
            return data
        data = make()
        self._keep(key, data)
        return data

    def size(self, key: Key, make: Callable[[], bytes] | None = None) -> int:
        """Its size: of a fresh one, else of a new one when make is given (getattr), else
        of the last one, or 0 (a listing). A refusal (a stopped VM, no graphics, no broker)
        is 0: the file is there, and its open says why it cannot be read."""
        if make is None:
            with self._lock:
                return self._sizes.get(key, 0)
        try:
            return len(self.take(key, make))
        except ApplianceError:
            return 0

    def lend(self, size: int) -> None:
        """An open file holds size bytes until give_back; Conflict (EBUSY) beyond OPEN_BYTES."""
        with self._lock:
            if self.lent + size > OPEN_BYTES:
                raise Conflict(f"open screenshots hold {self.lent >> 20} MiB already: "
                               "close some first", "screen.png")
            self.lent += size

    def give_back(self, size: int) -> None:
        with self._lock:
            self.lent = max(0, self.lent - size)

    # -- for the tree: a file of the table, of the VM NAME, as the caller sees it ------------------
    def content(self, service: Service, file: File, name: str) -> bytes:
        return self.take(_key(service, file, name), functools.partial(file.data, service, name))

    def size_of(self, service: Service, file: File, name: str, listing: bool) -> int:
        make = None if listing else functools.partial(file.data, service, name)
        return self.size(_key(service, file, name), make)


def _key(service: Service, file: File, name: str) -> Key:
    return service.vm_row(name, with_xml=False)["id"], file.name

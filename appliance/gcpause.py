"""The cyclic garbage collector paused while one thread builds a large answer.

Listing every VM makes some 40 objects per VM (its row, its decoded spec, its
view) that all survive until the answer is sent: each of the collector's full
passes on the way walks all of them again, and it makes more passes the more
there are. At 40,000 VMs that was half of `GET /v1/vms` (issue 17, `make
scale`: 6.1 s with the collector, 2.8 s without; no difference at 2,000).
Nothing those answers make is cyclic garbage, so nothing is lost by waiting:
the collector resumes (and catches up) when the last paused section ends. Its
state is process-wide, so nested and concurrent sections count, and a process
whose collector was off (disabled by someone else) keeps it off.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Iterator

_lock = threading.Lock()
_depth = 0
_resume = False  # whether the collector was on when the first section began


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    global _depth, _resume
    with _lock:
        if _depth == 0:
            _resume = gc.isenabled()
            gc.disable()
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0 and _resume:
                gc.enable()

"""Where a soak part's time goes: seconds by what they were spent on (the fuzz parts log
it each round and keep it in their record)."""
from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator


class Spent(Counter):
    @contextlib.contextmanager
    def timed(self, what: str) -> Iterator[None]:
        started = time.monotonic()
        try:
            yield
        finally:
            self[what] += time.monotonic() - started

    def line(self) -> str:
        return ", ".join(f"{k} {v:.1f}" for k, v in sorted(self.items()))

    def record(self) -> dict[str, float]:
        return {k: round(v, 1) for k, v in sorted(self.items())}

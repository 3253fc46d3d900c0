"""The store's part of the API's /metrics, rendered again only when the store changed
(or after MAX_AGE seconds).

Why: at 5 idle running VMs the API's /metrics cost ~10 ms of CPU more than
`vmctl exporter`, a good part of it the store's families: a dozen queries
(VMs by state, operations, events, hosts and claims, projects, backups), their
decoding, and prometheus_client's rendering of each sample (its label-name
checks and escaping are most of generate_latest's time). Between two scrapes
of an idle appliance the store often did not change at all.

What is kept: the rendered text of the store's families (ApplianceCollector)
and the VM names, running-since times and hosts the libvirt collector asks
the store for, per thread (each thread reads with its own connection:
appliance/store/unchanged.py says how the mark works). A kept answer is
served again only while no commit was made to the store, by anyone, since
it was read, AND it is at most MAX_AGE seconds old: the few values computed
from the clock rather than the rows (`vmappliance_host_heartbeat_up`, which
turns 0 once a heartbeat is older than heartbeat_age) are at most MAX_AGE
late. Uptimes are computed at each scrape from the kept start times, so they
never lag.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from appliance.store import Store
from appliance.store.unchanged import Mark, commit_mark

MAX_AGE = 1.0  # seconds; README (exporter/README.md) states it


class UnchangedStore:
    """Answers computed from the store, per thread and per key, reused while the store is
    unchanged and younger than max_age."""

    def __init__(self, store: Store, max_age: float = MAX_AGE,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.max_age = max_age
        self.clock = clock
        self._local = threading.local()

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        """compute()'s answer, or the one kept for key if nothing was committed since and it
        is young enough. The mark is taken before compute() reads, so a commit racing
        the read only costs a read more at the next call."""
        mark = commit_mark(self.store.db.conn, self.store.wal)
        now = self.clock()
        kept: dict[str, tuple[Mark, float, Any]] | None = getattr(
            self._local, "kept", None)
        if kept is None:
            kept = self._local.kept = {}
        found = kept.get(key)
        if found is not None and found[0] == mark and now - found[1] <= self.max_age:
            return found[2]
        value = compute()
        kept[key] = (mark, now, value)
        return value

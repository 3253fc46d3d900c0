"""Scheduler metrics: how long each placement took and which filters turned hosts away.

    vmappliance_scheduler_decision_seconds{result}   histogram, result = placed | no_valid_host
    vmappliance_scheduler_rejections_total{filter}   hosts rejected, by the first filter each failed

`placement.place` is wrapped by `timed_placement` (or calls `observe_decision`
itself). Placement runs in three kinds of process, and the numbers of all of
them reach /metrics the way the API's request histogram does (exporter/registry.py):

- under `vmctl serve` (gunicorn workers, the FUSE child, and the serve process
  itself, whose controller places evacuated VMs) PROMETHEUS_MULTIPROC_DIR is
  set before prometheus_client is imported (exporter/shared_metrics.py), so
  prometheus_client writes these metrics to per-process files there and
  `MultiProcessCollector` sums them at a scrape;
- anywhere else (tests, a single process) they stay in memory and
  `exporter.registry.build_registry` registers them directly.

Every label value is created up front (both results, every filter in
scheduler.FILTERS), so the series exist at 0 before the first decision and a
`rate()` or an alert on them has data to work with.
"""
from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable, Mapping

from prometheus_client import Counter, Histogram

from scheduler import FILTERS

log = logging.getLogger(__name__)

RESULTS = ("placed", "no_valid_host")
# A decision reads the hosts and the claims from SQLite, then filters and weighs in
# Python: about a millisecond for a few hosts, tens of ms for thousands of VMs.
DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


# registry=None: registered where they are served (exporter.registry.build_registry).
DECISIONS = Histogram("vmappliance_scheduler_decision_seconds",
                      "Time one placement decision took (reading the hosts and claims, "
                      "filtering, weighing), by result.",
                      ["result"], buckets=DECISION_BUCKETS, registry=None)
REJECTIONS = Counter("vmappliance_scheduler_rejections",
                     "Hosts a placement turned away, by the first filter each failed.",
                     ["filter"], registry=None)
_BY_RESULT = {result: DECISIONS.labels(result) for result in RESULTS}
_BY_FILTER = {name: REJECTIONS.labels(name) for name in FILTERS}


def collectors() -> list:
    """The two metrics, for a registry of a single process (not multiprocess mode)."""
    return [DECISIONS, REJECTIONS]


def observe_decision(seconds: float, result: str,
                     rejected_by: Mapping[str, int] | None = None) -> None:
    """One decision: its duration, placed or no_valid_host, and how many hosts each filter rejected.
    Never raises: a metric is not worth failing a placement for."""
    try:
        _BY_RESULT[result].observe(seconds)
        for name, count in (rejected_by or {}).items():
            if count:
                _BY_FILTER[name].inc(count)
    except Exception:
        log.exception("scheduler metrics: %s %s %s", seconds, result, rejected_by)


def observe(decision, seconds: float) -> None:
    """`observe_decision` for a scheduler.Decision."""
    try:
        result = "placed" if decision.host is not None else "no_valid_host"
        rejected = decision.rejected_by()
    except Exception:
        log.exception("scheduler metrics: reading %r", decision)
        return
    observe_decision(seconds, result, rejected)


def timed_placement(place: Callable) -> Callable:
    """Decorator for placement.place: times each call and records its Decision.
    A call that raises (bad input) is not a decision and is not recorded."""

    @functools.wraps(place)
    def timed(*args, **kwargs):
        started = time.perf_counter()
        decision = place(*args, **kwargs)
        observe(decision, time.perf_counter() - started)
        return decision

    return timed


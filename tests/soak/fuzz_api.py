"""Stateful API fuzzing (issue 17): schemathesis's state machine over /v1/openapi.json.

schemathesis infers the links between operations (a POST's answer feeding the GET,
PATCH, PUT and DELETE of what it made: its dependency analysis and Location headers) and
Hypothesis walks them with generated data, valid and not. The appliance is
tests/bench/bench_scale.py's World: the real store, Service, Controller (its loop,
operation pool, heartbeat) and REST app in this process, on one FakeDriver host (no HTTP:
falcon's WSGI app called directly), so that thousands of cases take minutes and a fuzzed
create makes no QEMU. Left out: tokens, users and hosts (a fuzzed DELETE of the token in
use, or of the only host, ends the run's reach, not the appliance's) and adoption.

Checked on every case: no 5xx; on every write answered 4xx, no change of state: the
store's rows (what the controller itself updates on its own, observed states, timestamps,
heartbeats, events and operations, left out) are the same after the call as before it
(tests/soak/store_changes.py: triggers log each row touched, so that a check costs what
the call changed, not the store's size), the call made once the controller has no
operation pending or running, and with its own work
held for the call (Gate): what changes is the call's, or that of an operation it started
(counted apart when that operation failed and the call answers its failure). A change
is reported by table, row and column, with the operations and events the call recorded.
"""
from __future__ import annotations

import contextlib
import logging
import sqlite3
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

from tests.soak.spent import Spent
from tests.soak.store_changes import StoreChanges

log = logging.getLogger("soak.fuzz_api")
EXCLUDED_PATHS = r"^/v1/(tokens|users|hosts)|^/v1/vms/adopt"
STEPS = 12


# What a held piece of work answers (its callers read it): none looked at, no event, not connected.
SKIPPED = {"resync_recent": 0, "_drain_events": False, "reconnect": False}


class Gate:
    """Holds the controller's own work (what it does with no call: resync, lifecycle
    events, pools, probes, host follow-ups, heartbeats, scheduled backups, claim checks)
    while a call is checked, so that a change seen around a call is the call's or its
    operation's. Operations still run (a call may wait for the one it started): they
    are checked apart. A held piece of work is skipped, not queued: it runs on a later
    pass (a fuzz case takes milliseconds)."""

    HELD = (("vms", "resync"), ("vms", "resync_recent"), ("pools", "tick"), ("prober", "tick"),
            ("backup_schedule", "tick"), ("hosts", "follow_up"), ("hosts", "sync_links"),
            ("hosts", "reconnect"), ("", "_drain_events"), ("", "_heartbeat_if_due"), ("", "check_claims"))

    def __init__(self, controller):
        self._cond = threading.Condition()
        self._closed = False
        self._inside = 0
        self.skipped = 0
        for part, name in self.HELD:
            obj = getattr(controller, part) if part else controller
            setattr(obj, name, self._wrap(getattr(obj, name), SKIPPED.get(name)))

    def _wrap(self, real, skipped):
        def held(*args, **kwargs):
            with self._cond:
                if self._closed:
                    self.skipped += 1
                    return skipped
                self._inside += 1
            try:
                return real(*args, **kwargs)
            finally:
                with self._cond:
                    self._inside -= 1
                    self._cond.notify_all()
        return held

    @contextlib.contextmanager
    def closed(self):
        """No controller work of its own under way or begun until the block ends."""
        with self._cond:
            self._closed = True
            self._cond.wait_for(lambda: self._inside == 0, timeout=60)
        try:
            yield
        finally:
            with self._cond:
                self._closed = False


def run_fuzz_api(_world, count: int, budget: float, derandomize: bool = False) -> dict:
    """`count` cases (API calls) at most, within `budget` seconds. Its own appliance (in
    process, on a fake host): the soak's serve is not used here. derandomize: the same
    cases every run (the short version in make test)."""
    import hypothesis
    import schemathesis

    from appliance.api.app import create_app
    from tests.bench.bench_scale import World
    from tests.bench.common import remove_tree

    base = Path(tempfile.mkdtemp(prefix="vmapp-fuzz-api-"))
    world = World(base, hosts=1, mount=False)
    token = world.config.token()
    db_path = world.config.db_path
    stats: Counter = Counter()
    failures: list[str] = []
    counters = {"cases": 0, "writes_refused": 0}
    harness: Counter = Counter()  # rounds Hypothesis ended with an error of its own (not a finding)

    spent = Spent()  # seconds of the writes by what they were spent on (logged each round)
    timed = spent.timed

    def idle(timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        with timed("waiting for operations"):
            while world.store.list_operations(status="pending") or world.store.list_operations(status="running"):
                if time.monotonic() > deadline:
                    spent["idle timeouts"] += 1
                    return False
                time.sleep(0.02)
        return True

    # one connection for the marks (a new one parses the schema: 3 ms a write)
    reader = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30, isolation_level=None,
                             check_same_thread=False)

    def since(mark: tuple[int, int]) -> tuple[list[str], list[str]]:
        """The operations (kind: status) and events (kind by actor) recorded after `mark`."""
        ops = [f"{k}: {st}" for k, st in reader.execute(
            "SELECT kind, status FROM operations WHERE rowid > ? ORDER BY rowid", (mark[0],))]
        events = [f"{k} by {who}" for k, who in reader.execute(
            "SELECT kind, actor FROM events WHERE id > ? ORDER BY id", (mark[1],))]
        return ops, events

    def mark() -> tuple[int, int]:
        return (reader.execute("SELECT coalesce(max(rowid), 0) FROM operations").fetchone()[0],
                reader.execute("SELECT coalesce(max(id), 0) FROM events").fetchone()[0])

    gate = Gate(world.controller)
    store_changes = StoreChanges(db_path)
    try:
        schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", create_app(world.service, token))
        schema = schema.exclude(path_regex=EXCLUDED_PATHS)
        base_machine = schema.as_state_machine()

        class Machine(base_machine):  # type: ignore[misc, valid-type]
            seen: tuple[list[str], tuple[int, int]] | None = None  # what changed, operations' and events' mark

            def get_call_kwargs(self, case):
                return {"headers": {"Authorization": f"Bearer {token}"}}

            def call(self, case, **kwargs):
                """A write runs with the controller's own work held (Gate), after the
                operations under way ended: what changes around it is its doing."""
                self.seen = None
                if case.method.upper() == "GET":
                    return super().call(case, **kwargs)
                idle()  # the operations under way end with the controller free to observe them
                with contextlib.ExitStack() as held:
                    with timed("closing the gate"):
                        held.enter_context(gate.closed())
                    idle()
                    with timed("check"):
                        at = store_changes.mark(), mark()
                    with timed("call"):
                        response = super().call(case, **kwargs)
                    if 400 <= response.status_code < 500:  # what is checked (an operation it
                        with timed("check"):  # ran has ended then)
                            self.seen = (store_changes.since(at[0]), at[1])
                return response

            def validate_response(self, response, case, **kwargs):
                counters["cases"] += 1
                status = response.status_code
                stats[f"{case.method.upper()} {status // 100}xx"] += 1
                label = f"{case.method.upper()} {case.formatted_path} -> {status}"
                if status == 503 and "ConsoleUnavailable" in response.text:
                    stats["503 (no console broker in this harness)"] += 1  # as documented: not a fault
                elif status >= 500:
                    failures.append(f"5xx: {label}: {response.text[:300]}")
                elif status >= 400 and self.seen is not None:
                    counters["writes_refused"] += 1
                    changed, at = self.seen
                    if changed:
                        ops, events = since(at)
                        # a call whose operation started and then failed (its answer is that
                        # failure) changed what the operation did before failing: counted apart
                        failed = any(o.endswith((": failed", ": cancelled")) for o in ops)
                        kind = "changed by a failed operation" if failed else "changed on a 4xx"
                        failures.append(f"{kind}: {label}: {'; '.join(changed)[:400]}; operations {ops}; "
                                        f"events {events[:8]}; body {str(case.body)[:200]}")

        t0 = time.monotonic()
        rounds = 0
        while counters["cases"] < count and time.monotonic() - t0 < budget:
            rounds += 1
            scenarios = max(1, min(25, (count - counters["cases"]) // STEPS))
            try:  # generation alone: no replay, whose data the live answers would change
                Machine.run(settings=hypothesis.settings(
                    max_examples=scenarios, stateful_step_count=STEPS, deadline=None, database=None,
                    phases=[hypothesis.Phase.generate], print_blob=False, derandomize=derandomize,
                    suppress_health_check=list(hypothesis.HealthCheck)))
            except Exception as err:  # noqa: BLE001 - Hypothesis' own complaint: noted, next round
                harness[type(err).__name__] += 1
            log.info("round %d: %d cases in %.0f s; %s", rounds, counters["cases"], time.monotonic() - t0,
                     spent.line())
    finally:
        reader.close()
        store_changes.close()
        world.close()
        remove_tree(base)
    by_status = dict(sorted(stats.items()))
    return {"cases": counters["cases"], "writes_refused": counters["writes_refused"],
            "server_errors_5xx": sum(1 for f in failures if f.startswith("5xx")),
            "changed_on_4xx": sum(1 for f in failures if f.startswith("changed on")),
            "changed_by_failed_operation": sum(1 for f in failures if f.startswith("changed by")),
            "controller_work_held": gate.skipped,
            "failures": len(failures), "failure_examples": failures[:15], "by_status": by_status,
            "scenario_rounds": rounds, "harness_errors": dict(harness),
            "writes_spent_s": spent.record()}

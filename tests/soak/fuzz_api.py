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
heartbeats, events and operations, left out) are the same after the call as before it,
taken once the controller has no operation pending or running.
"""
from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import tempfile
import time
from collections import Counter
from pathlib import Path

log = logging.getLogger("soak.fuzz_api")
EXCLUDED_PATHS = r"^/v1/(tokens|users|hosts)|^/v1/vms/adopt"
# Tables and columns the controller (or every request) changes by itself.
OWN_TABLES = {"events", "operations", "meta", "tickets", "hosts"}
OWN_COLUMNS = {"observed_state", "observed_reason", "state_changed", "domain_xml", "addresses", "ready",
               "boot_console_offset", "running_spec", "updated", "last_error", "last_used", "last_seen", "up",
               "info", "down_since", "last_attempt", "connect_error", "cpu_warning", "restart_required",
               "instance_id", "pinned_cpus", "host", "state", "size", "progress", "finished", "started"}
STEPS = 12


def fingerprint(db_path: Path) -> dict[str, str]:
    """table -> digest of its rows, less what changes by itself."""
    db = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True, timeout=30)
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")
                  if not r[0].startswith("sqlite_") and r[0] not in OWN_TABLES]
        out = {}
        for table in tables:
            cols = [r[1] for r in db.execute(f'PRAGMA table_info("{table}")') if r[1] not in OWN_COLUMNS]
            rows = db.execute(f'SELECT {", ".join(chr(34) + c + chr(34) for c in cols)} FROM "{table}"').fetchall()
            out[table] = hashlib.sha256(json.dumps(sorted(map(repr, rows))).encode()).hexdigest()
        return out
    finally:
        db.close()


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

    def idle(timeout: float = 10) -> bool:
        deadline = time.monotonic() + timeout
        while world.store.list_operations(status="pending") or world.store.list_operations(status="running"):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)
        return True

    try:
        schema = schemathesis.openapi.from_wsgi("/v1/openapi.json", create_app(world.service, token))
        schema = schema.exclude(path_regex=EXCLUDED_PATHS)
        base_machine = schema.as_state_machine()

        class Machine(base_machine):  # type: ignore[misc, valid-type]
            before: dict[str, str] | None = None

            def get_call_kwargs(self, case):
                return {"headers": {"Authorization": f"Bearer {token}"}}

            def before_call(self, case):
                self.before = None
                if case.method.upper() != "GET":
                    idle()
                    self.before = fingerprint(db_path)

            def validate_response(self, response, case, **kwargs):
                counters["cases"] += 1
                status = response.status_code
                stats[f"{case.method.upper()} {status // 100}xx"] += 1
                label = f"{case.method.upper()} {case.formatted_path} -> {status}"
                if status == 503 and "ConsoleUnavailable" in response.text:
                    stats["503 (no console broker in this harness)"] += 1  # as documented: not a fault
                elif status >= 500:
                    failures.append(f"5xx: {label}: {response.text[:300]}")
                elif status >= 400 and self.before is not None:
                    counters["writes_refused"] += 1
                    after = fingerprint(db_path)
                    changed = sorted(t for t in after if after[t] != self.before.get(t))
                    if changed:
                        failures.append(f"changed on a 4xx: {label}: tables {changed}; body "
                                        f"{str(case.body)[:200]}")

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
    finally:
        world.close()
        remove_tree(base)
    by_status = dict(sorted(stats.items()))
    return {"cases": counters["cases"], "writes_refused": counters["writes_refused"],
            "server_errors_5xx": sum(1 for f in failures if f.startswith("5xx")),
            "changed_on_4xx": sum(1 for f in failures if f.startswith("changed")),
            "failures": len(failures), "failure_examples": failures[:15], "by_status": by_status,
            "scenario_rounds": rounds, "harness_errors": dict(harness)}

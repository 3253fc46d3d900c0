"""Pool scale-up 0 -> 10 with stopped members (run strategy Halted: each member
created and defined, not booted), until all 10 exist (observed stopped: their
domains defined), against ten sequential creates of the same spec through the
API (POST /v1/vms, each waiting for its VM to be defined), in the same run.

Rounds are interleaved (the order alternates each round) after one warm-up of
each; every round's VMs are deleted before the next. The pool's time runs from
the PATCH of replicas to the first GET of the pool that shows 10 stopped
members (polled every 50 ms: the figure is at most that much late).
"""
from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from pathlib import Path

from tests.bench.common import ms, p50, ratio

MEMBERS = 10
TEMPLATE = {"image": "demo", "run_strategy": "Halted"}
GOAL = 1.2


def run(base: Path, rounds: int = 5) -> dict:
    from tests.appliance_process import Appliance

    app = Appliance(base / "pool-home", prefix=f"bp{uuid.uuid4().hex[:6]}-", extra_args=["--no-mount"])
    try:
        app.start()

        def pool_once(i: int) -> float:
            name = f"p{i}"
            resp = app.api("POST", "/v1/pools", json={"name": name, "template": TEMPLATE})
            assert resp.status_code == 201, resp.text
            started = time.perf_counter()
            resp = app.api("PATCH", f"/v1/pools/{name}", json={"replicas": MEMBERS})
            assert resp.status_code == 200, resp.text
            deadline = time.monotonic() + 300
            while time.monotonic() < deadline:
                status = app.api("GET", f"/v1/pools/{name}").json()["status"]
                if sum(1 for m in status["members"] if m["state"] == "stopped") == MEMBERS:
                    break
                time.sleep(0.05)
            else:
                raise AssertionError(f"pool {name}: not {MEMBERS} stopped members: {status}")
            elapsed = time.perf_counter() - started
            assert app.api("DELETE", f"/v1/pools/{name}").status_code == 204
            return elapsed

        def sequential_once(i: int) -> float:
            names = [f"s{i}-{n}" for n in range(MEMBERS)]
            started = time.perf_counter()
            for name in names:
                resp = app.api("POST", "/v1/vms", json={"name": name, **TEMPLATE})
                assert resp.status_code == 201 and resp.json()["state"] == "stopped", resp.text
            elapsed = time.perf_counter() - started
            for name in names:
                assert app.api("DELETE", f"/v1/vms/{name}").status_code == 204
            return elapsed

        pool_once(0)  # warm-up, not counted
        sequential_once(0)
        pools, creates = [], []
        load_before = os.getloadavg()[0]
        for i in range(1, rounds + 1):
            order = [(pool_once, pools), (sequential_once, creates)]
            for fn, samples in (order if i % 2 else order[::-1]):
                time.sleep(0.5)
                samples.append(fn(i))
        load_after = os.getloadavg()[0]
        pool_p50, creates_p50 = p50(pools), p50(creates)
        return {
            "members": MEMBERS,
            "rounds": rounds,
            "pool_p50_ms": ms(pool_p50, 1),
            "sequential_creates_p50_ms": ms(creates_p50, 1),
            "ratio": ratio(pool_p50, creates_p50),
            "goal_ratio": GOAL,
            "pass": pool_p50 / creates_p50 <= GOAL,
            "pool_samples_ms": [ms(s, 1) for s in pools],
            "sequential_samples_ms": [ms(s, 1) for s in creates],
            "paired_ratio_median": round(p50([p / c for p, c in zip(pools, creates, strict=True)]), 3),
            "load_before_after": [round(load_before, 2), round(load_after, 2)],
        }
    finally:
        app.cleanup()


def summary(r: dict) -> tuple[str, str, str, bool]:
    return (f"pool scale-up 0 → {r['members']} stopped members vs {r['members']} sequential API creates",
            f"{r['ratio']}×", f"≤ {r['goal_ratio']:g}×", r["pass"])


def section(r: dict) -> list[str]:
    """Its part of BENCHMARKS.md (tests/bench/report.py calls it)."""
    verdict = "**PASS**" if r["pass"] else "**MISS**"
    return [
        f"## 12. Pool scale-up 0 → {r['members']}, stopped members (tests/bench/bench_pool.py)",
        "",
        "| way | p50 | samples | ratio | goal | result |",
        "|---|---|---|---|---|---|",
        (f"| `PATCH /v1/pools/NAME {{\"replicas\": {r['members']}}}` until {r['members']} members are "
         f"defined (stopped) | {r['pool_p50_ms']:.0f} ms | {', '.join(f'{s:.0f}' for s in r['pool_samples_ms'])} "
         f"| {r['ratio']}× | ≤ {r['goal_ratio']:g}× | {verdict} |"),
        (f"| {r['members']} sequential `POST /v1/vms` of the same spec, each waiting (the reference) "
         f"| {r['sequential_creates_p50_ms']:.0f} ms "
         f"| {', '.join(f'{s:.0f}' for s in r['sequential_samples_ms'])} | | (reference) | |"),
        f"| per round, pool / sequential: median | | | {r['paired_ratio_median']}× | (context) | |",
        "",
        ("The pool controller records every missing member in one pass (each through the create path: "
         "checks, quota, placement, events) and the controller's workers define them in parallel; the "
         "reference waits for each create before the next."),
        "",
    ]


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    import tempfile
    with tempfile.TemporaryDirectory(prefix="vmapp-bench-pool-") as tmp:
        print(json.dumps(run(Path(tmp), args.rounds), indent=2))

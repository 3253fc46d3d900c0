"""`make soak`: sustained abuse of the appliance, its figures into RELIABILITY.md (issue 17).

    .venv/bin/python -m tests.soak.run [--quick] [--part kill,fuzz-api,...] [--no-write] [--kills N]
    .venv/bin/python -m tests.soak.run --render-only   # after editing tests/soak/notes.md

Parts (each runs alone with --part; `kill` is its three kill parts):
  kill-serve, kill-mount, kill-worker   tests/soak/kill.py: random SIGKILLs during a random mix
                                        of operations from concurrent clients, checked after each
  fuzz-api                              tests/soak/fuzz_api.py: schemathesis, stateful, in process (FakeDriver)
  fuzz-mount                            tests/soak/fuzz_mount.py: random writes into every writable file
  disk-full                             tests/soak/disk_full.py: the home on a small file system, filled
  concurrent                            tests/soak/concurrent.py: 50 clients on shared VMs (ETags, room)
  libvirtd                              kill.py again, on a private libvirtd (packaging/local-hosts)
                                        SIGKILLed or restarted in turn, guests running
  host-loss                             tests/soak/host_loss.py: one of two local hosts powered off
                                        (all its processes SIGKILLed), evacuated, brought back

Bounded: every part stops after its count or its time budget, whichever comes first. The
full run puts its kill parts side by side, each on an appliance and two local hosts of its
own (--one-by-one: one after the other on one appliance), so that the whole soak takes at
most an hour; each part's record names the parts that ran beside it (`alongside`).
--quick (what `make test` runs, via `make soak-quick`) is the short version: a few kills of
each kind, a few hundred fuzz cases, one round of disk full, 10 s of 20 concurrent clients, no
libvirtd and no host-loss part: about two minutes, writing nothing; it exits
1 when any part has a finding, as the full run does. The full run rewrites RELIABILITY.md:
the parts it ran replace theirs, the others are kept from the file's JSON record.
Only 127.0.0.1 is used; the appliance's domains carry a prefix of this run and are removed by
it; every process killed is one this run started (serve, a local host's libvirtd) or one of
serve's children, by pid.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from tests.bench.common import ROOT, background, machine, remove_tree
from tests.soak.report import load_previous, render

KILL_PARTS = ("kill-serve", "kill-mount", "kill-worker")
PARTS = (*KILL_PARTS, "fuzz-api", "fuzz-mount", "disk-full", "concurrent", "libvirtd", "host-loss")
GROUPS = {"kill": KILL_PARTS, "fuzz": ("fuzz-api", "fuzz-mount")}
# part: (full, quick) counts, and the full run's budget in seconds
COUNTS = {"kill-serve": (200, 5), "kill-mount": (200, 3), "kill-worker": (200, 2),
          "fuzz-api": (10000, 300), "fuzz-mount": (3000, 200), "disk-full": (20, 1),
          "concurrent": (600, 10),  # seconds of 50 clients (20 in the short run)
          "libvirtd": (20, 2), "host-loss": (10, 1)}
# The whole soak within 60 minutes (issue 17): the kill parts run side by side (side_by_side),
# so they count once; the others one after the other (tests/unit/soak/test_budgets.py).
BUDGET = {"kill-serve": 1400, "kill-mount": 1400, "kill-worker": 1400, "fuzz-api": 300,
          "fuzz-mount": 400, "disk-full": 120, "concurrent": 780, "libvirtd": 300, "host-loss": 300}
# The full run's kill parts: uniform seconds from the clients' start to the kill (the short
# run's are shorter still)
KILL_GAP, QUICK_KILL_GAP = (0.3, 2.0), (0.3, 1.5)
QUICK_BUDGET = 60


def _sigterm(signum, _frame):  # let every finally: clean up
    raise SystemExit(128 + signum)


# The short version leaves out the libvirtd part (a local host of its own to start: ~30 s more)
# and the host-loss part (two local hosts and a serve of its own: ~35 s for one round).
QUICK_PARTS = tuple(p for p in PARTS if p not in ("libvirtd", "host-loss"))


def parts_of(text: str | None, quick: bool = False) -> list[str]:
    if not text:
        return list(QUICK_PARTS if quick else PARTS)
    out: list[str] = []
    for word in text.split(","):
        word = word.strip()
        if word in GROUPS:
            names: tuple[str, ...] = GROUPS[word]
        elif word in ("serve", "mount", "worker"):
            names = (f"kill-{word}",)
        else:
            names = (word,)
        for name in names:
            if name not in PARTS:
                raise SystemExit(f"unknown part {name!r}: one of {', '.join(PARTS)} (or kill, fuzz)")
            if name not in out:
                out.append(name)
    return out


def run_part(part: str, world, count: int, budget: float, quick: bool) -> dict:
    if part in KILL_PARTS:
        from tests.soak.kill import run_kills

        # each kill part its own moments (side by side, the same seed would kill in step)
        return run_kills(world, part.split("-")[1], count, budget=budget, seed=17 + KILL_PARTS.index(part),
                         gap=QUICK_KILL_GAP if quick else KILL_GAP)  # paused VMs move too
    if part == "fuzz-api":
        from tests.soak.fuzz_api import run_fuzz_api

        return run_fuzz_api(world, count, budget, derandomize=quick)
    if part == "libvirtd":  # an appliance of its own, on a local host's libvirtd
        return run_on_local_host(world.base / "libvirtd", count, budget, quick)
    if part == "host-loss":  # an appliance of its own, on two local hosts it powers off in turn
        from tests.soak.host_loss import run_host_loss

        return run_host_loss(world.base / "host-loss", count, budget, down_more=0 if quick else 3.0)
    if part == "concurrent":
        from tests.soak.concurrent import run_concurrent

        return run_concurrent(world, seconds=count, clients=50 if not quick else 20)
    if part == "disk-full":  # an appliance of its own, its home on a loop-mounted file system
        from tests.soak.disk_full import run_disk_full

        return run_disk_full(world.base / "disk-full", rounds=count)
    from tests.soak.fuzz_mount import run_fuzz_mount

    return run_fuzz_mount(world, count, budget)


def run_on_local_host(base: Path, count: int, budget: float, quick: bool) -> dict:
    from tests.local_hosts import LocalHost
    from tests.soak.kill import run_kills
    from tests.soak.world import SoakWorld

    with LocalHost() as host:
        world = SoakWorld(base, local_host=host)
        try:
            world.start()
            return run_kills(world, "libvirtd", count, budget=budget, gap=(0.3, 1.5) if quick else (0.5, 3.0))
        finally:
            host.start_libvirtd()  # the cleanup undefines through it
            world.close()


def cache_bytecode() -> None:
    """The appliance's processes that the soak starts (serve, 200 times in kill-serve; the
    mount's restarts) read their modules' bytecode from a cache, as an installed appliance
    does (where PYTHONDONTWRITEBYTECODE is set, under .cache/pycache, as `make test`'s
    pytest): without it every start compiles some 400 modules again."""
    if os.environ.get("PYTHONDONTWRITEBYTECODE"):
        os.environ["PYTHONDONTWRITEBYTECODE"] = ""
        os.environ.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / ".cache" / "pycache"))


def findings_of(result: dict) -> int:
    """What counts as a failure of the part (its figures say which)."""
    return int(result.get("failures", 0)) + (result.get("kills", 0) - result.get("survived", 0)) \
        + int(result.get("server_error_count", 0))


def measure(part: str, world, count: int, budget: float, quick: bool, facts: dict,
            alongside: tuple[str, ...] = ()) -> dict:
    """One part's run and its record (a part that breaks is reported, the others still run)."""
    before = background()
    started = time.monotonic()
    try:
        result = run_part(part, world, count, budget, quick)
    except Exception as err:
        traceback.print_exc()
        result = {"error": f"{type(err).__name__}: {err}", "failures": 1}
    result.update(took_s=round(time.monotonic() - started, 1), background_before=before,
                  background_after=background(), date_utc=facts["date_utc"], commit=facts["commit"],
                  uncommitted=facts["uncommitted_in_measured_code"], quick=quick)
    if alongside:
        result["alongside"] = list(alongside)
    print(json.dumps({part: result}, indent=1, default=str), flush=True)
    return result


def side_by_side(parts: list[str], base: Path, count_of, budget_of, facts: dict) -> dict[str, dict]:
    """The full run's kill parts at once, each on an appliance (tests/soak/world.py) and two
    local hosts of its own, so that nothing one part kills is another's: one after the other
    they take longer than the whole soak may (issue 17: 60 minutes). Each part's figures are
    its own; the others' load is in its background_* figures, and its record names them."""
    from tests.soak.migrations import start_hosts, stop_hosts
    from tests.soak.world import SoakWorld

    results: dict[str, dict] = {}
    live: dict[str, tuple] = {}

    def one(part: str) -> None:
        others = tuple(p for p in parts if p != part)
        try:
            hosts = start_hosts()
        except Exception as err:  # noqa: BLE001 - reported as the part's failure
            traceback.print_exc()
            results[part] = {"error": f"{type(err).__name__}: {err}", "failures": 1}
            return
        world = SoakWorld(base / part, *hosts)
        live[part] = (world, hosts)
        try:
            world.start()
            results[part] = measure(part, world, count_of(part), budget_of(part), False, facts, others)
        except Exception as err:  # noqa: BLE001 - the appliance did not start: reported
            traceback.print_exc()
            results[part] = {"error": f"{type(err).__name__}: {err}", "failures": 1}
        finally:
            if live.pop(part, None):
                world.close()
                stop_hosts(hosts)

    threads = [threading.Thread(target=one, args=(part,), name=f"soak-{part}", daemon=True) for part in parts]
    for thread in threads:
        thread.start()
    try:
        for thread in threads:
            while thread.is_alive():
                thread.join(1)
    finally:  # SIGTERM: the parts' appliances and hosts go before this process does
        for part in list(live):
            if (pair := live.pop(part, None)) is not None:
                pair[0].close()
                stop_hosts(pair[1])
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.soak.run")
    parser.add_argument("--quick", action="store_true", help="the short version (make test)")
    parser.add_argument("--part", help=f"comma-separated: {', '.join(PARTS)}, or kill, fuzz")
    parser.add_argument("--kills", type=int, help="count for every part run (kills, cases, writes)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RELIABILITY.md")
    parser.add_argument("--one-by-one", action="store_true",
                        help="the kill parts one after the other on one appliance (the full run "
                             "runs them side by side, each on its own)")
    parser.add_argument("--render-only", action="store_true",
                        help="rewrite RELIABILITY.md from its JSON record (after editing tests/soak/notes.md)")
    args = parser.parse_args(argv)
    if args.render_only:
        path = ROOT / "RELIABILITY.md"
        path.write_text(render(load_previous(path), machine()))
        return 0
    signal.signal(signal.SIGTERM, _sigterm)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cache_bytecode()
    from tests.soak.migrations import start_hosts, stop_hosts
    from tests.soak.world import SoakWorld

    parts = parts_of(args.part, args.quick)
    together = [] if args.quick or args.one_by_one else [p for p in parts if p in KILL_PARTS]
    together = together if len(together) > 1 else []

    def count_of(part: str) -> int:
        full, short = COUNTS[part]
        return args.kills or (short if args.quick else full)

    def budget_of(part: str) -> float:
        return QUICK_BUDGET if args.quick else BUDGET[part]

    results: dict[str, dict] = {}
    facts = machine()
    base = Path(tempfile.mkdtemp(prefix="vmapp-soak-"))
    hosts: tuple = ()
    world = None
    t0 = time.monotonic()
    try:
        if together:
            results.update(side_by_side(together, base, count_of, budget_of, facts))
        rest = [p for p in parts if p not in together]
        if rest:
            hosts = start_hosts()  # private libvirtds: the kill parts migrate VMs between the two
            world = SoakWorld(base, *hosts)
            world.start()
        for part in rest:
            results[part] = measure(part, world, count_of(part), budget_of(part), args.quick, facts)
    finally:
        if world is not None:
            world.close()
        stop_hosts(hosts)
        failed = any(findings_of(r) > 0 for r in results.values())
        if failed:  # kept for a look: the home (store, logs) of the run that found something
            print(f"soak: the run's files are kept in {base}", flush=True)
        else:
            remove_tree(base)
    took = time.monotonic() - t0
    print(f"soak: {', '.join(parts)} in {took:.0f} s; {'FAILED' if failed else 'ok'}", flush=True)
    if not args.no_write and not args.quick:
        path = ROOT / "RELIABILITY.md"
        merged = {**load_previous(path), **results}
        path.write_text(render(merged, facts))
        print(f"wrote {path}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: every benchmark in one run, each side by side with its reference.

    .venv/bin/python -m tests.bench.run [--quick] [--only create,api,fs,exporter,scheduler,migration,web,console,backup,snapshot,pool,hotplug,scale] [--no-write]
    .venv/bin/python -m tests.bench.run --quick --skip scale    # every section but those named
    .venv/bin/python -m tests.bench.run --render-only   # after editing tests/bench/notes.md

Prints a JSON summary and (re)writes BENCHMARKS.md at the repository root. The
sections this run measured replace those of the previous BENCHMARKS.md; the
others are kept from it (its full JSON, at the end of the file, is the record),
each with the date and commit it was measured at, so that `--only` re-runs one
benchmark without losing the rest. A section that fails in this run is shown
as FAILED with its error, never with an older run's figures: BENCHMARKS.md
shows no figure the current code cannot reproduce. Exits 1 when a section
failed (`make bench-quick`, run by `make test`, relies on it).
Only 127.0.0.1 is used; every process is started here and stopped by pid;
every libvirt domain carries a prefix made for this run and is removed by
that prefix, even on failure; every directory is a temporary one under /tmp.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from tests.bench.common import ROOT, background, machine

COMMAND = "make bench"
SECTIONS = ("create", "api", "fs", "exporter", "scheduler", "migration", "web", "console", "backup", "snapshot",
            "pool", "hotplug", "scale")
# `make scale`'s sizes (VMs in the store); SCALE_SIZES=200,2000 in the environment picks others.
SCALE_SIZES = "200,2000,20000,40000"


def _sigterm(signum, _frame):  # let every finally: clean up
    raise SystemExit(128 + signum)


def run_fs(rounds: int, vms: int, start_rounds: int) -> dict:
    """tests/bench/bench_fs.py, the colleague's FS benchmark, as a subprocess; its JSON merged."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "bench_fs.py"), "--rounds", str(rounds),
                           "--vms", str(vms), "--start-rounds", str(start_rounds)],
                          cwd=ROOT, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_fs.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    return json.loads(out[out.index("{"):])


def run_exporter(vms: str, rounds: int, test_domains: int, boot_wait: float) -> dict:
    """tests/bench/bench_exporter.py (our exporter vs prometheus-libvirt-exporter), as a subprocess."""
    proc = subprocess.run([sys.executable, str(ROOT / "tests" / "bench" / "bench_exporter.py"), "--vms", vms,
                           "--rounds", str(rounds), "--test-domains", str(test_domains), "--boot-wait", str(boot_wait)],
                          cwd=ROOT, capture_output=True, text=True, timeout=1500, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_exporter.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    return json.loads(out[out.index("{"):])


def run_console(rounds: int, keystrokes: int) -> dict:
    """tests/bench/bench_console.py (keystroke round trips, WebSocket vs virsh console), as a subprocess:
    it registers libvirtaio's event loop for the whole process, which must not outlive it here."""
    proc = subprocess.run([sys.executable, "-m", "tests.bench.bench_console", "--rounds", str(rounds),
                           "--keystrokes", str(keystrokes)],
                          cwd=ROOT, capture_output=True, text=True, timeout=900, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"bench_console.py exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    out = proc.stdout
    return json.loads(out[out.index("{"):])


def settle(limit: float) -> None:
    """Wait (bounded) for the machine to calm down: the 1-minute load average under the CPU count.
    Others' work still disturbs a run; BENCHMARKS.md then says so."""
    deadline = time.monotonic() + limit
    while os.getloadavg()[0] > (os.cpu_count() or 1) and time.monotonic() < deadline:
        time.sleep(5)


def previous_results(path: Path) -> dict | None:
    """The full JSON a previous run left at the end of BENCHMARKS.md, or None."""
    try:
        text = path.read_text()
        start = text.rindex("```json\n") + len("```json\n")
        return json.loads(text[start:text.index("\n```", start)])
    except (OSError, ValueError):
        return None


def merge(results: dict, previous: dict | None) -> dict:
    """This run's sections, plus every section of the previous run that this run did
    not try, each keeping its own provenance under "measured" (a section the previous
    run failed stays failed, with its error). A section this run tried and failed is
    not replaced by an older figure: it is shown failed."""
    if not previous:
        return results
    merged = dict(results)
    merged["errors"] = dict(results.get("errors", {}))
    merged["measured"] = dict(results.get("measured", {}))
    merged["background"] = dict(results.get("background", {}))
    merged["seconds"] = dict(results.get("seconds", {}))
    pm = previous.get("machine", {})
    for name in SECTIONS:
        if name in results or name in results.get("errors", {}):
            continue
        if name in previous.get("errors", {}):
            merged["errors"][name] = previous["errors"][name]
        elif name in previous:
            merged[name] = previous[name]
        else:
            continue
        # Runs before per-section provenance existed measured every section at the run's date and commit.
        # A section pasted in by hand carries its provenance in its note instead.
        legacy = ({"date_utc": "see the section's note", "commit": "see the note"}
                  if name in previous and previous[name].get("note")
                  else {"date_utc": pm.get("date_utc"), "commit": pm.get("commit"),
                        "uncommitted_in_measured_code": pm.get("uncommitted_in_measured_code", []),
                        "quick": previous.get("quick", False)})
        measured = dict(previous.get("measured", {}).get(name) or legacy)
        measured["kept_from_previous_run"] = True
        merged["measured"][name] = measured
        if name in previous.get("background", {}):
            merged["background"][name] = previous["background"][name]
        if name in previous.get("seconds", {}):
            merged["seconds"][name] = previous["seconds"][name]
    return merged


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true",
                        help="every section at its smallest, seconds each (CI: make bench-quick); not for BENCHMARKS.md")
    parser.add_argument("--only", default=",".join(SECTIONS))
    parser.add_argument("--skip", default="",
                        help="sections left out of --only's (make test: scale, run beside the soak)")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite BENCHMARKS.md")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: rewrite BENCHMARKS.md from its own JSON and tests/bench/notes.md")
    args = parser.parse_args()
    if args.render_only:
        from tests.bench.report import render

        target, notes = ROOT / "BENCHMARKS.md", ROOT / "tests" / "bench" / "notes.md"
        previous = previous_results(target)
        if previous is None:
            parser.error("BENCHMARKS.md holds no JSON to render from")
        target.write_text(render(previous, notes.read_text() if notes.exists() else None))
        return 0
    signal.signal(signal.SIGTERM, _sigterm)
    signal.signal(signal.SIGHUP, _sigterm)
    os.chdir(ROOT)
    wanted = set(args.only.split(","))
    skipped = {name for name in args.skip.split(",") if name}
    unknown = (wanted | skipped) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s) {', '.join(sorted(unknown))}; known: {', '.join(SECTIONS)}")
    wanted -= skipped
    results: dict = {"machine": machine(), "command": COMMAND, "errors": {}}
    timings = {}
    with tempfile.TemporaryDirectory(prefix="vmapp-bench-") as tmp:
        base = Path(tmp)
        steps = []
        # The scheduler first: pure Python on the CPUs, it was always measured
        # right after the exporter's 50 guests had left the load at 4-5.
        if "scheduler" in wanted:
            from tests.bench import bench_scheduler

            steps.append(("scheduler", lambda: bench_scheduler.run(rounds=1 if args.quick else 5)))
        if "create" in wanted:
            from tests.bench import bench_create

            steps.append(("create", lambda: bench_create.run(base / "create", rounds=1 if args.quick else 7)))
        if "fs" in wanted:
            steps.append(("fs", lambda: run_fs(30, 100, 1) if args.quick else run_fs(300, 1000, 15)))
        if "api" in wanted:
            from tests.bench import bench_api

            quick_api = {"vms": 50, "extra": 50, "latency_n": 100, "list_n": 3, "wrk_seconds": 1, "wrk_rounds": 1,
                         "idle_seconds": 1, "resync_wait": 1}
            steps.append(("api", lambda: bench_api.run(base / "api", **quick_api) if args.quick
                          else bench_api.run(base / "api", vms=1000, extra=1000)))
        if "exporter" in wanted:
            # 5 and 50 idle guests: the sizes issue 10's exporter goal is set at.
            steps.append(("exporter", lambda: run_exporter("2", 3, 100, 2) if args.quick
                          else run_exporter("5,50", 10, 1000, 15)))
        if "migration" in wanted:
            from tests.bench import bench_migration

            steps.append(("migration", lambda: bench_migration.run(base / "migration", rounds=1 if args.quick else 15)))
        if "web" in wanted:
            from tests.bench import bench_web

            steps.append(("web", lambda: bench_web.run(base / "web", vms=100, rounds=2 if args.quick else 15)))
        if "console" in wanted:
            steps.append(("console", lambda: run_console(1, 5) if args.quick else run_console(10, 30)))
        if "backup" in wanted:
            from tests.bench import bench_backup

            # quick: a 128 MiB data disk with 64 MiB in it, one round (the boot takes longer than the rest)
            steps.append(("backup", lambda: bench_backup.run(base / "backup", rounds=1, disk_mib=128, data_mib=64)
                          if args.quick else bench_backup.run(base / "backup", rounds=5)))
        if "snapshot" in wanted:
            from tests.bench import bench_snapshot

            steps.append(("snapshot", lambda: bench_snapshot.run(base / "snapshot", rounds=1 if args.quick else 15)))
        if "pool" in wanted:
            from tests.bench import bench_pool

            steps.append(("pool", lambda: bench_pool.run(base / "pool", rounds=1 if args.quick else 5)))
        if "hotplug" in wanted:
            from tests.bench import bench_hotplug

            steps.append(("hotplug", lambda: bench_hotplug.run(base / "hotplug", rounds=1 if args.quick else 5)))
        if "scale" in wanted:
            from tests.bench import bench_scale

            # quick (CI, in make bench-quick): 200 and 2,000 VMs, 2 rounds, short idle windows, one point
            # of the host sweep (20 hosts: the sweep's code; a second point was ~16 s of fixed waits)
            sizes = tuple(int(n) for n in os.environ.get("SCALE_SIZES", SCALE_SIZES).split(",") if n)
            steps.append(("scale", lambda: bench_scale.run(
                base / "scale", sizes=(200, 2000), rounds=2, idle_seconds=6, scrape_rounds=2, sweep=(20,),
                sweep_vms=500, libvirt_scrape_max=2000) if args.quick
                else bench_scale.run(base / "scale", sizes=sizes)))
        for name, step in steps:
            if not args.quick:  # a quick run checks that the sections work, not their figures
                settle(90)
            started, when = time.monotonic(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
            results.setdefault("background", {})[name] = {"before": background()}
            print(f"bench: {name} ... ({results['background'][name]['before']})", file=sys.stderr, flush=True)
            measured = {key: results["machine"][key] for key in ("date_utc", "commit", "uncommitted_in_measured_code")}
            measured.update(date_utc=when, quick=args.quick)
            results.setdefault("measured", {})[name] = measured
            try:
                results[name] = step()
            except Exception:  # noqa: BLE001 - report it, run the others
                results["errors"][name] = traceback.format_exc()
                measured["failed"] = True
                print(results["errors"][name], file=sys.stderr)
            timings[name] = round(time.monotonic() - started, 1)
            results["background"][name]["after"] = background()
            print(f"bench: {name} done in {timings[name]} s", file=sys.stderr, flush=True)
    results["seconds"] = timings
    results["quick"] = args.quick
    print(json.dumps(results, indent=2))
    if not args.no_write:
        from tests.bench.report import render

        notes = ROOT / "tests" / "bench" / "notes.md"
        target = ROOT / "BENCHMARKS.md"
        merged = merge(results, previous_results(target))
        target.write_text(render(merged, notes.read_text() if notes.exists() else None))
        kept = sorted(n for n, m in merged.get("measured", {}).items() if m.get("kept_from_previous_run"))
        print(f"bench: wrote BENCHMARKS.md (kept from the previous run: {', '.join(kept) or 'nothing'})",
              file=sys.stderr)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())

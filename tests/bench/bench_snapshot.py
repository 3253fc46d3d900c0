"""A snapshot with memory of a running 256 MiB guest: the appliance against `virsh
snapshot-create-as` of the same kind on the same domain.

    .venv/bin/python -m tests.bench.bench_snapshot [--rounds 15]

One real `vmctl serve` (tests/appliance_process.Appliance, --no-mount) and its VM (the demo
guest, TCG, 1 vCPU, 256 MiB, created running through `POST /v1/vms`), booted and idle at its
shell prompt (console READY_LINE) before anything is timed. The snapshots are libvirt
internal qcow2 snapshots with the guest's memory and device state (the appliance's kind, per
issue 13's contract). Each round, in an order rotating round by round, on that one domain:

- appliance: `POST /v1/vms/NAME/snapshots {"name", "memory": true}` (the API waits for the
  operation), timed from the request until the client has the result;
- virsh: `virsh snapshot-create-as DOMAIN NAME` (a running domain's default: an internal
  snapshot with its memory): the reference;
- libvirt (context): `virDomainSnapshotCreateXML` with just the name, from Python: libvirt's
  own work, without virsh's process start or anything of the appliance's.

Each snapshot is deleted (untimed) right after it is taken (`DELETE
/v1/vms/NAME/snapshots/S`, `virsh snapshot-delete`), so every one is taken on a disk with no
other snapshot, and those of virsh and libvirt are gone before the appliance could see them.
The same domain for every way (as the issue allows: alternating, deleting between) keeps
two guests' differences out of the ratio: on this shared 2-CPU host, libvirt's own time for
the same snapshot differs by hundreds of ms between two twin domains.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.bench.appliance_ops import operation_split, timed_operation
from tests.bench.common import LIBVIRT_URI, ms, p50, pct, ratio, remove_domains

GOAL_RATIO = 1.2
VM = "snapbench"
MEMORY_MIB = 256
BOOT_SECONDS = 240
WAYS = ("appliance", "virsh", "libvirt")


def virsh(*args: str) -> float:
    command = ["virsh", "-q", "-c", LIBVIRT_URI, *args]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


def run(base: Path, rounds: int = 15) -> dict:
    from tests.appliance_process import DEMO_IMAGE, Appliance

    if not DEMO_IMAGE.exists():
        raise RuntimeError(f"{DEMO_IMAGE} is missing: run `make image`")
    prefix = f"bs{uuid.uuid4().hex[:6]}-"
    app = Appliance(Path(base) / "snapshot-home", prefix=prefix, extra_args=["--no-mount"])
    try:
        app.start()
        return _measure(app, rounds)
    finally:
        app.stop()
        remove_domains(prefix)  # with their snapshot metadata, which a plain undefine refuses
        app.cleanup()


def take(app, dom, way: str, name: str) -> tuple[float, dict | None]:
    """One snapshot with memory the given way, timed, then deleted (untimed); the appliance's
    operation split and whether its record says memory and ready."""
    if way == "appliance":
        sent = time.time()
        seconds, op = timed_operation(app, "POST", f"/v1/vms/{VM}/snapshots", {"name": name, "memory": True})
        split = operation_split(op, sent, time.time())
        snap = app.api("GET", f"/v1/vms/{VM}/snapshots/{name}").json()
        split["checked"] = bool(snap.get("memory")) and snap.get("state") == "ready"
        resp = app.api("DELETE", f"/v1/vms/{VM}/snapshots/{name}", timeout=600)
        if resp.status_code >= 300:
            raise RuntimeError(f"DELETE snapshot {name}: HTTP {resp.status_code} {resp.text}")
        return seconds, split
    if way == "virsh":
        seconds = virsh("snapshot-create-as", dom.name(), name)
        virsh("snapshot-delete", dom.name(), name)
        return seconds, None
    started = time.perf_counter()
    snapshot = dom.snapshotCreateXML(f"<domainsnapshot><name>{name}</name></domainsnapshot>", 0)
    seconds = time.perf_counter() - started
    snapshot.delete(0)
    return seconds, None


def _measure(app, rounds: int) -> dict:
    import libvirt

    from tests.appliance_process import READY_LINE

    started = time.monotonic()
    vm = app.create_vm(VM, state="running", memory=MEMORY_MIB)
    app.wait_console(VM, READY_LINE, BOOT_SECONDS)
    boot_s = round(time.monotonic() - started, 1)
    conn = libvirt.open(LIBVIRT_URI)
    try:
        dom = conn.lookupByUUIDString(vm["id"])
        domain = dom.name()
        # info()[2]: the memory the guest has (info()[1], the maximum, counts the
        # virtio-mem area it may grow into: issue 14's hotplug).
        if dom.info()[2] != MEMORY_MIB * 1024:
            raise RuntimeError(f"the domain has {dom.info()[2]} KiB of memory, not {MEMORY_MIB} MiB")
        samples: dict[str, list[float]] = {way: [] for way in WAYS}
        splits = []
        load = [round(os.getloadavg()[0], 2)]
        for r in range(rounds):
            for way in WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]:
                os.sync()
                seconds, split = take(app, dom, way, f"{way[0]}{r}")
                samples[way].append(seconds)
                if split is not None:
                    splits.append(split)
        load.append(round(os.getloadavg()[0], 2))
        running = bool(dom.isActive()) and app.api("GET", f"/v1/vms/{VM}").json().get("state") == "running"
        left = dom.snapshotNum()
    finally:
        conn.close()
    checked = [s.pop("checked") for s in splits]
    stats = {way: {"p50_ms": ms(p50(s), 1), "p90_ms": ms(pct(s, 0.9), 1), "min_ms": ms(min(s), 1),
                   "max_ms": ms(max(s), 1), "samples_ms": [ms(x, 1) for x in s]} for way, s in samples.items()}
    app_p50, virsh_p50 = p50(samples["appliance"]), p50(samples["virsh"])
    paired = sorted(a / v for a, v in zip(samples["appliance"], samples["virsh"], strict=True))
    keys = {k for s in splits for k in s}
    return {
        "rounds": rounds, "memory_mib": MEMORY_MIB,
        **stats,
        "ratio": ratio(app_p50, virsh_p50),
        "ratio_libvirt": ratio(p50(samples["libvirt"]), virsh_p50),
        # the appliance's own share: against libvirt's call from Python, same domain
        "ratio_to_libvirt": ratio(app_p50, p50(samples["libvirt"])),
        "paired_ratio_median": round(p50(paired), 3),
        "paired_ratio_range": [round(paired[0], 3), round(paired[-1], 3)],
        "goal_ratio": GOAL_RATIO,
        "pass": app_p50 <= GOAL_RATIO * virsh_p50 and all(checked) and running and left == 0,
        "checks": {"appliance_snapshots_had_memory_and_were_ready": all(checked), "still_running": running,
                   "no_snapshot_left": left == 0},
        "appliance_split_p50_ms": {k: round(p50([s[k] for s in splits if k in s]), 1) for k in sorted(keys)},
        "guest": {"vm_id": vm["id"], "domain": domain, "create_and_boot_s": boot_s},
        "loadavg_1min_before_after": load,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmapp-bench-snapshot-") as tmp:
        result = run(Path(tmp), args.rounds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

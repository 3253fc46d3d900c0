"""A snapshot with memory of a running 256 MiB guest: the appliance against `virsh
snapshot-create-as` of the same kind on a twin domain.

    .venv/bin/python -m tests.bench.bench_snapshot [--rounds 10]

One real `vmctl serve` (tests/appliance_process.Appliance, --no-mount) and its VM (the demo
guest, TCG, 1 vCPU, 256 MiB, created running through `POST /v1/vms`), and a twin domain the
appliance does not manage: the VM's own persistent domain XML with another name, no UUID and
no appliance <metadata>, its own qcow2 overlay on the same base image, its own seed copy and
console log (tests/bench/bench_migration.reference_xml). Both booted and idle at their shell
prompt (console READY_LINE) before anything is timed. The snapshots are libvirt internal
qcow2 snapshots with the guest's memory and device state (the appliance's kind, per issue
13's contract). Each round, in an order rotating round by round:

- appliance: `POST /v1/vms/NAME/snapshots {"name", "memory": true}` (the API waits for the
  operation), timed from the request until the client has the result;
- virsh: `virsh snapshot-create-as TWIN NAME` (a running domain's default: an internal
  snapshot with its memory): the reference;
- libvirt (context): `virDomainSnapshotCreateXML` with just the name, from Python, on the
  twin: libvirt's own work without virsh's process start;
- same_domain (context): the same call on the appliance's own domain (the snapshot is
  deleted right after, so the appliance never sees it): what the appliance adds to
  libvirt's work, apart from any difference between the two domains.

Each snapshot is deleted (untimed) before the next round, so every one is taken on a disk
with no other snapshot (`DELETE /v1/vms/NAME/snapshots/S`, `virsh snapshot-delete`).
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

from tests.bench.appliance_ops import operation_split, remove_domains_and_metadata, timed_operation
from tests.bench.common import LIBVIRT_URI, ms, p50, pct, ratio

GOAL_RATIO = 1.2
VM = "snapbench"
MEMORY_MIB = 256
BOOT_SECONDS = 240
WAYS = ("appliance", "virsh", "libvirt", "same_domain")


def virsh(*args: str) -> float:
    command = ["virsh", "-q", "-c", LIBVIRT_URI, *args]
    started = time.perf_counter()
    proc = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    elapsed = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} exited {proc.returncode}: {proc.stderr.strip()}")
    return elapsed


def run(base: Path, rounds: int = 10) -> dict:
    from tests.appliance_process import DEMO_IMAGE, Appliance

    if not DEMO_IMAGE.exists():
        raise RuntimeError(f"{DEMO_IMAGE} is missing: run `make image`")
    tag = uuid.uuid4().hex[:6]
    prefix, twin_prefix = f"bs{tag}-", f"bt{tag}-"
    app = Appliance(Path(base) / "snapshot-home", prefix=prefix, extra_args=["--no-mount"])
    try:
        app.start()
        return _measure(app, f"{twin_prefix}twin", rounds)
    finally:
        app.stop()
        remove_domains_and_metadata(prefix)  # before cleanup's plain undefine, which a snapshot refuses
        remove_domains_and_metadata(twin_prefix)
        app.cleanup()


def _boot(app, twin_name: str) -> tuple[dict, str, float]:
    import libvirt

    from tests.appliance_process import READY_LINE
    from tests.bench.bench_migration import reference_xml
    from tests.cluster_helpers import wait_for

    started = time.monotonic()
    vm = app.create_vm(VM, state="running", memory=MEMORY_MIB)
    app.wait_console(VM, READY_LINE, BOOT_SECONDS)
    conn = libvirt.open(LIBVIRT_URI)
    try:
        app_xml = conn.lookupByUUIDString(vm["id"]).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        workdir = app.home / "bench-twin"
        workdir.mkdir()
        xml, log = reference_xml(app_xml, twin_name, workdir)
        twin = conn.defineXML(xml)
        twin.create()
        memory_kib = twin.info()[1]
    finally:
        conn.close()
    wait_for("twin guest ready", lambda: log.exists() and READY_LINE in log.read_text(errors="replace"),
             BOOT_SECONDS, 0.5)
    if memory_kib != MEMORY_MIB * 1024:
        raise RuntimeError(f"the twin has {memory_kib} KiB of memory, not {MEMORY_MIB} MiB")
    return vm, twin_name, round(time.monotonic() - started, 1)


def _measure(app, twin_name: str, rounds: int) -> dict:
    import libvirt

    vm, twin_name, boot_s = _boot(app, twin_name)
    conn = libvirt.open(LIBVIRT_URI)
    try:
        twin = conn.lookupByName(twin_name)
        own = conn.lookupByUUIDString(vm["id"])
        samples: dict[str, list[float]] = {way: [] for way in WAYS}
        splits, checked = [], []
        load = [round(os.getloadavg()[0], 2)]
        for r in range(rounds):
            for way in WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]:
                name = f"{way[0]}{r}"
                os.sync()
                if way == "appliance":
                    sent = time.time()
                    seconds, op = timed_operation(app, "POST", f"/v1/vms/{VM}/snapshots",
                                                  {"name": name, "memory": True})
                    splits.append(operation_split(op, sent, time.time()))
                    snap = app.api("GET", f"/v1/vms/{VM}/snapshots/{name}").json()
                    checked.append(bool(snap.get("memory")) and snap.get("state") == "ready")
                    resp = app.api("DELETE", f"/v1/vms/{VM}/snapshots/{name}", timeout=600)
                    if resp.status_code >= 300:
                        raise RuntimeError(f"DELETE snapshot {name}: HTTP {resp.status_code} {resp.text}")
                elif way == "virsh":
                    seconds = virsh("snapshot-create-as", twin_name, name)
                    virsh("snapshot-delete", twin_name, name)
                else:  # libvirt from Python, on the twin or on the appliance's own domain
                    dom = twin if way == "libvirt" else own
                    started = time.perf_counter()
                    snapshot = dom.snapshotCreateXML(f"<domainsnapshot><name>{name}</name></domainsnapshot>", 0)
                    seconds = time.perf_counter() - started
                    snapshot.delete(0)
                samples[way].append(seconds)
        load.append(round(os.getloadavg()[0], 2))
        running = twin.isActive() and app.api("GET", f"/v1/vms/{VM}").json().get("state") == "running"
    finally:
        conn.close()
    stats = {way: {"p50_ms": ms(p50(s), 1), "p90_ms": ms(pct(s, 0.9), 1), "min_ms": ms(min(s), 1),
                   "max_ms": ms(max(s), 1), "samples_ms": [ms(x, 1) for x in s]} for way, s in samples.items()}
    app_p50, virsh_p50 = p50(samples["appliance"]), p50(samples["virsh"])
    paired = sorted(a / v for a, v in zip(samples["appliance"], samples["virsh"]))
    keys = {k for s in splits for k in s}
    return {
        "rounds": rounds, "memory_mib": MEMORY_MIB,
        **stats,
        "ratio": ratio(app_p50, virsh_p50),
        "ratio_libvirt": ratio(p50(samples["libvirt"]), virsh_p50),
        "ratio_same_domain": ratio(p50(samples["same_domain"]), virsh_p50),
        # the appliance's own share: against the same libvirt call on its own domain
        "ratio_to_same_domain": ratio(app_p50, p50(samples["same_domain"])),
        "paired_ratio_median": round(p50(paired), 3),
        "paired_ratio_range": [round(paired[0], 3), round(paired[-1], 3)],
        "goal_ratio": GOAL_RATIO,
        "pass": app_p50 <= GOAL_RATIO * virsh_p50 and all(checked) and running,
        "checks": {"appliance_snapshots_had_memory_and_were_ready": all(checked), "both_still_running": running},
        "appliance_split_p50_ms": {k: round(p50([s[k] for s in splits if k in s]), 1) for k in sorted(keys)},
        "guest": {"vm_id": vm["id"], "twin": twin_name, "create_and_boot_both_s": boot_s},
        "loadavg_1min_before_after": load,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmapp-bench-snapshot-") as tmp:
        result = run(Path(tmp), args.rounds)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

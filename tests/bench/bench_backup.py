"""Backups of a running guest: the appliance's full backup against `qemu-img convert` of the
same disks to the same file system, and its incremental backup after 1 MiB written in the guest.

    .venv/bin/python -m tests.bench.bench_backup [--rounds 5] [--disk-mib 1024] [--data-mib 512]

One real `vmctl serve` (tests/appliance_process.Appliance, --no-mount) with a backup
target (a directory in this run's temporary folder, beside the appliance's home: the
same file system as the reference's copies). One demo guest (TCG, 128 MiB) with a data
disk of DISK MiB whose first DATA MiB were written before its first boot (qemu-io, a
non-zero pattern per 64 MiB), booted and idle at its shell prompt (console READY_LINE),
its guest agent connected (wait_agent), before anything is timed. Each round, in an order rotating round by round:

- appliance: `POST /v1/vms/NAME/backups {"target", "full": true}` (the API waits for the
  operation), timed from the request until the client has the good result;
- qemu-img convert: `qemu-img convert -U -t writeback -f qcow2 -O qcow2 DISK TARGET/...` of
  each disk the backup copies (the root overlay, flattened as a full backup is, and the data
  disk), one after the other: the reference. `-t writeback` flushes the copy to storage when
  it closes (fdatasync), as QEMU does a backup's target files before the job ends (strace:
  fdatasync on the target's descriptor at the job's end), and as a backup must be before it
  is called good. qemu-img convert's default target cache mode is `unsafe` (qemu-img --help:
  "'unsafe' (default for convert)"): it returns with the copy still in the page cache;
- convert_unsafe (context): that default, `qemu-img convert` without `-t`: its time is how
  fast the page cache takes dirty pages, which swings with what writeback has still to do;
- libvirt (context): `virDomainBackupBegin` in push mode from Python, no checkpoint, the
  same disks to the same file system, polled until its job ends: libvirt's job alone,
  without the appliance around it;
- convert_odirect (context): the reference reading its sources with O_DIRECT (`-T none`),
  as QEMU reads a running VM's disks (cache='none').

Before each, the disks' files are dropped from the host's page cache (sync, then
POSIX_FADV_DONTNEED): every way reads them from storage, as it would a real VM's disks
(QEMU's O_DIRECT I/O leaves nothing there; qemu-io's fill and the previous round would).

Then, untimed between: an incremental with nothing written since the full (its size is the
fixed overhead: a qcow2 header and tables per disk, the manifest); 1 MiB of random data
written in the guest (`dd ... conv=fsync` on the data disk, through the serial console);
the timed incremental. Its size is compared with 2 MiB + that fixed overhead, its time with
the full's. Each round's backups are deleted through the API afterwards (untimed).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.bench.appliance_ops import (
    operation_split,
    qemu_img,
    timed_operation,
    tree_bytes,
    type_and_wait,
)
from tests.bench.common import LIBVIRT_URI, ms, p50, ratio, remove_domains

GOAL_FULL_THROUGHPUT_RATIO = 0.7  # appliance full backup throughput / qemu-img convert's, at least
GOAL_INCREMENTAL_TIME_RATIO = 0.2  # incremental after 1 MiB / full, at most
GOAL_INCREMENTAL_DATA_MIB = 2  # incremental size at most this + the fixed overhead
VM = "bkbench"
TARGET = "benchtarget"
BOOT_SECONDS = 240
AGENT_SECONDS = 60  # the guest agent's connection after the ready line, at most (~1 s here)
WAYS = ("appliance", "convert", "libvirt", "convert_odirect", "convert_unsafe")
# the target cache mode of each way of converting: writeback flushes at close (durable, as a
# backup's files are when libvirt's job ends); unsafe is qemu-img convert's default (no flush)
CONVERT_OPTIONS = {"convert": ("-t", "writeback"), "convert_odirect": ("-t", "writeback", "-T", "none"),
                   "convert_unsafe": ()}
MIB = 1024 * 1024


def fill(path: Path, data_mib: int) -> None:
    """DATA MiB of non-zero data at the start of the disk, before its first boot: 64 MiB
    chunks, each with its own byte pattern (so that no copier can skip them as zeros)."""
    import subprocess

    commands, offset, pattern = [], 0, 1
    while offset < data_mib:
        size = min(64, data_mib - offset)
        commands += ["-c", f"write -P {pattern} {offset}M {size}M"]
        offset, pattern = offset + size, pattern % 255 + 1
    subprocess.run(["qemu-io", "-f", "qcow2", *commands, str(path)], check=True, capture_output=True, timeout=600)


def guest_disks(domain_xml: str) -> tuple[list[tuple[str, str, Path]], list[str]]:
    """The domain's writable disks as (backup name, target dev, file) and its read-only ones' devs."""
    disks, readonly = [], []
    for disk in ET.fromstring(domain_xml).findall("devices/disk"):
        dev = disk.find("target").get("dev")
        source = disk.find("source")
        if disk.find("readonly") is not None or source is None:
            readonly.append(dev)
            continue
        path = Path(source.get("file"))
        name = "root" if path.name == "root.qcow2" else path.stem.removeprefix("disk-")
        disks.append((name, dev, path))
    return disks, readonly


def evict(disks) -> None:
    """Drop the disks' files from the host's page cache, after a sync: every way then reads
    them from storage, as it would a running VM's disks, which QEMU reads and writes with
    O_DIRECT (cache='none') and so never leaves in the page cache. (Without this the
    reference would read what qemu-io's fill, or the previous round, left there.)"""
    os.sync()
    for _name, _dev, path in disks:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def convert(disks, outdir: Path, *options: str) -> float:
    outdir.mkdir()
    started = time.perf_counter()
    for name, _dev, path in disks:
        qemu_img("convert", "-U", *options, "-f", "qcow2", "-O", "qcow2", str(path), str(outdir / f"{name}.qcow2"))
    return time.perf_counter() - started


def libvirt_backup(dom, disks, readonly: list[str], outdir: Path) -> tuple[float, dict]:
    """A push backup straight through libvirt (no checkpoint, so the appliance's chain is not
    touched): the seconds until its job ended, and libvirt's completed-job statistics."""
    import libvirt

    outdir.mkdir()
    parts = [f"<disk name='{dev}' backup='yes' type='file'><target file='{outdir / (name + '.qcow2')}'/>"
             "<driver type='qcow2'/></disk>" for name, dev, _ in disks]
    parts += [f"<disk name='{dev}' backup='no'/>" for dev in readonly]
    xml = f"<domainbackup><disks>{''.join(parts)}</disks></domainbackup>"
    started = time.perf_counter()
    dom.backupBegin(xml, None, 0)
    while dom.jobInfo()[0] != libvirt.VIR_DOMAIN_JOB_NONE:
        time.sleep(0.01)
    elapsed = time.perf_counter() - started
    stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED)
    if stats.get("type") != libvirt.VIR_DOMAIN_JOB_COMPLETED:
        raise RuntimeError(f"libvirt backup job did not complete: {stats}")
    return elapsed, stats


def _backups(app) -> list[dict]:
    body = app.api("GET", f"/v1/vms/{VM}/backups").json()
    return body["items"] if isinstance(body, dict) else body


def inside_the_operation(app, op: dict, dom) -> dict:
    """Where the controller's time went (ms), from the operation's events and libvirt's
    statistics of the job it ran: until the backup was recorded (backup-started), the
    libvirt job's own time, from the record until the backup was published
    (backup-finished), and after that until the operation ended (older checkpoints
    dropped, retention)."""
    import libvirt

    events = app.api("GET", "/v1/events", params={"vm": VM}).json()["items"]
    at = {e["kind"]: e["time"] for e in events if e.get("operation") == op["id"]}
    stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    split = {"libvirt_job_ms": stats.get("time_elapsed")}
    if "backup-started" in at and "backup-finished" in at:
        split.update(until_recorded_ms=ms(at["backup-started"] - op["started"], 1),
                     recorded_to_published_ms=ms(at["backup-finished"] - at["backup-started"], 1),
                     published_to_op_end_ms=ms(op["finished"] - at["backup-finished"], 1))
    return split


def appliance_backup(app, full: bool, known: set[str], dom) -> dict:
    """One backup through the API: its time, where it went, and its size on disk."""
    body = {"target": TARGET, **({"full": True} if full else {})}
    sent = time.time()
    seconds, op = timed_operation(app, "POST", f"/v1/vms/{VM}/backups", body)
    answered = time.time()
    inside = inside_the_operation(app, op, dom)
    new = [b for b in _backups(app) if b["id"] not in known]
    if len(new) != 1:
        raise RuntimeError(f"expected one new backup after {op['id']}, found {new}")
    backup = new[0]
    known.add(backup["id"])
    if backup["status"] != "good" or backup["kind"] != ("full" if full else "incremental"):
        raise RuntimeError(f"backup {backup['id']}: {backup['kind']} {backup['status']} (wanted "
                           f"{'full' if full else 'incremental'} good): {backup}")
    return {"s": seconds, "id": backup["id"], "split": {**operation_split(op, sent, answered), **inside},
            "size": tree_bytes(Path(backup["path"])),
            "disks": {d["name"]: d.get("bytes") for d in backup.get("disks", [])},
            "backup_seconds": (round(backup["finished"] - backup["created"], 3)
                               if backup.get("finished") and backup.get("created") else None)}


def delete_backups(app, ids: list[str]) -> list[str]:
    """Newest first (a full is kept while an incremental depends on it); what could not be deleted."""
    left = []
    for backup_id in reversed(ids):
        resp = app.api("DELETE", f"/v1/backups/{backup_id}", timeout=600)
        if resp.status_code >= 300:
            left.append(f"{backup_id}: HTTP {resp.status_code} {resp.text[:200]}")
    return left


def run(base: Path, rounds: int = 5, disk_mib: int = 1024, data_mib: int = 512, write_mib: int = 1) -> dict:
    from tests.appliance_process import DEMO_IMAGE, Appliance

    if not DEMO_IMAGE.exists():
        raise RuntimeError(f"{DEMO_IMAGE} is missing: run `make image`")
    if data_mib + 4 * rounds + write_mib > disk_mib:
        raise ValueError("the data disk is too small for the data and the rounds' writes")
    base = Path(base)
    prefix = f"bb{uuid.uuid4().hex[:6]}-"
    target = base / "backup-target"
    target.mkdir(parents=True)
    app = Appliance(base / "backup-home", prefix=prefix, extra_args=["--no-mount"])
    try:
        app.start()
        return _measure(app, target, rounds, disk_mib, data_mib, write_mib)
    finally:
        app.stop()
        remove_domains(prefix)  # with their checkpoint metadata, which a plain undefine refuses
        app.cleanup()


def _prepare(app, target: Path, disk_mib: int, data_mib: int) -> tuple[dict, str, float | None]:
    import libvirt

    resp = app.api("POST", "/v1/backup-targets", json={"name": TARGET, "path": str(target)})
    if resp.status_code >= 300:
        raise RuntimeError(f"POST /v1/backup-targets: HTTP {resp.status_code} {resp.text}")
    started = time.monotonic()
    vm = app.create_vm(VM, state="stopped", disks=[{"name": "data", "size": disk_mib}])
    conn = libvirt.open(LIBVIRT_URI)
    try:
        xml = conn.lookupByUUIDString(vm["id"]).XMLDesc(0)
    finally:
        conn.close()
    disks, _ = guest_disks(xml)
    data = next(path for name, _, path in disks if name == "data")
    fill(data, data_mib)
    resp = app.api("PUT", f"/v1/vms/{VM}/state", json={"state": "running"})
    if resp.status_code >= 300:
        raise RuntimeError(f"start {VM}: HTTP {resp.status_code} {resp.text}")
    from tests.appliance_process import READY_LINE

    app.wait_console(VM, READY_LINE, BOOT_SECONDS)
    agent_s = wait_agent(vm["id"])
    return vm, f"{round(time.monotonic() - started, 1)}", agent_s


def wait_agent(vm_id: str) -> float | None:
    """Seconds until libvirt shows the guest agent's channel connected (the demo guest's
    qemu-ga starts after its ready line), None if not within AGENT_SECONDS. Before it,
    a backup would wait for it (controller/quiesce.py) and libvirt's own job (the
    "libvirt" way) would stall libvirt's handling of the agent's connection for 30 s:
    neither is what the rounds measure."""
    import libvirt

    from appliance.virt.domain import agent_channel_state

    began = time.monotonic()
    conn = libvirt.open(LIBVIRT_URI)
    try:
        dom = conn.lookupByUUIDString(vm_id)
        while agent_channel_state(dom.XMLDesc(0)) != "connected":
            if time.monotonic() - began > AGENT_SECONDS:
                return None
            time.sleep(0.1)
    finally:
        conn.close()
    return round(time.monotonic() - began, 2)


def _measure(app, target: Path, rounds: int, disk_mib: int, data_mib: int, write_mib: int) -> dict:
    import libvirt

    vm, boot_s, agent_s = _prepare(app, target, disk_mib, data_mib)
    conn = libvirt.open(LIBVIRT_URI)
    try:
        dom = conn.lookupByUUIDString(vm["id"])
        disks, readonly = guest_disks(dom.XMLDesc(0))
        virtual = sum(int(json.loads(qemu_img("info", "-U", "--output=json", str(p)))["virtual-size"])
                      for _, _, p in disks)
        sectors = disk_mib * MIB // 512
        known: set[str] = set()
        full, direct, empty, inc, undeleted = [], [], [], [], []
        converts: dict[str, list[float]] = {way: [] for way in CONVERT_OPTIONS}
        load = [round(os.getloadavg()[0], 2)]
        for r in range(rounds):
            order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]
            for way in order:
                evict(disks)  # and the previous copy's dirty pages are not written during this one
                if way == "appliance":
                    full.append(appliance_backup(app, True, known, dom))
                elif way.startswith("convert"):
                    converts[way].append(convert(disks, target / f"{way}-{r}", *CONVERT_OPTIONS[way]))
                    shutil.rmtree(target / f"{way}-{r}")
                else:
                    seconds, stats = libvirt_backup(dom, disks, readonly, target / f"libvirt-{r}")
                    direct.append({"s": seconds, "job_elapsed_ms": stats.get("time_elapsed")})
                    shutil.rmtree(target / f"libvirt-{r}")
            evict(disks)
            empty.append(appliance_backup(app, False, known, dom))
            seek = data_mib + 4 * r
            type_and_wait(app, VM, (f"for d in /sys/block/vd*; do [ \"$(cat $d/size)\" = {sectors} ] && D=/dev/${{d##*/}}; "
                                    f"done; dd if=/dev/urandom of=$D bs=1M count={write_mib} seek={seek} conv=fsync "
                                    f"2>/dev/null && echo wrote-$((40+2))-{r}"), f"wrote-42-{r}")
            evict(disks)
            inc.append(appliance_backup(app, False, known, dom))
            undeleted += delete_backups(app, [full[-1]["id"], empty[-1]["id"], inc[-1]["id"]])
        load.append(round(os.getloadavg()[0], 2))
    finally:
        conn.close()
    return summarize(full, converts, direct, empty, inc, virtual, write_mib, rounds, load, undeleted,
                     {"vm_id": vm["id"], "disk_mib": disk_mib, "data_mib": data_mib, "create_fill_and_boot_s": boot_s,
                      "agent_connected_after_ready_s": agent_s,
                      "disks": [name for name, _, _ in disks], "virtual_bytes": virtual})


def summarize(full, converts, direct, empty, inc, virtual, write_mib, rounds, load, undeleted, guest) -> dict:
    full_s = [f["s"] for f in full]
    convert_s, odirect, unsafe = converts["convert"], converts["convert_odirect"], converts["convert_unsafe"]
    app_p50, ref_p50 = p50(full_s), p50(convert_s)
    overhead = p50([e["size"]["apparent_bytes"] for e in empty])
    inc_size = p50([i["size"]["apparent_bytes"] for i in inc])
    inc_s = p50([i["s"] for i in inc])
    seen = [i["size"]["apparent_bytes"] - e["size"]["apparent_bytes"] for i, e in zip(inc, empty, strict=True)]
    paired = sorted(c / f for c, f in zip(convert_s, full_s, strict=True))
    limit = GOAL_INCREMENTAL_DATA_MIB * MIB + overhead
    return {
        "rounds": rounds,
        "guest": guest,
        "full": {
            "appliance_p50_ms": ms(app_p50, 1), "convert_p50_ms": ms(ref_p50, 1),
            "libvirt_p50_ms": ms(p50([d["s"] for d in direct]), 1), "convert_odirect_p50_ms": ms(p50(odirect), 1),
            "convert_unsafe_p50_ms": ms(p50(unsafe), 1), "unsafe_throughput_ratio": ratio(p50(unsafe), app_p50),
            "libvirt_job_elapsed_p50_ms": p50([d["job_elapsed_ms"] for d in direct if d["job_elapsed_ms"]] or [0]),
            "appliance_mib_s": round(virtual / MIB / app_p50, 1), "convert_mib_s": round(virtual / MIB / ref_p50, 1),
            "libvirt_mib_s": round(virtual / MIB / p50([d["s"] for d in direct]), 1),
            "throughput_ratio": ratio(ref_p50, app_p50),  # same bytes: throughput ratio = inverse time ratio
            "paired_ratio_median": round(p50(paired), 3), "paired_ratio_range": [round(paired[0], 3), round(paired[-1], 3)],
            "goal_ratio": GOAL_FULL_THROUGHPUT_RATIO,
            "pass": ref_p50 >= GOAL_FULL_THROUGHPUT_RATIO * app_p50,
            "backup_bytes_p50": p50([f["size"]["apparent_bytes"] for f in full]),
            "split_p50_ms": _split_p50([f["split"] for f in full]),
            "splits_ms": [f["split"] for f in full],  # each one's: an outlier says where it went
            "samples_ms": {"appliance": [ms(s, 1) for s in full_s], "convert": [ms(s, 1) for s in convert_s],
                           "libvirt": [ms(d["s"], 1) for d in direct], "convert_odirect": [ms(s, 1) for s in odirect],
                           "convert_unsafe": [ms(s, 1) for s in unsafe]},
        },
        "incremental": {
            "write_mib": write_mib,
            "p50_ms": ms(inc_s, 1), "time_ratio_to_full": ratio(inc_s, app_p50),
            "goal_time_ratio": GOAL_INCREMENTAL_TIME_RATIO,
            "pass_time": inc_s <= GOAL_INCREMENTAL_TIME_RATIO * app_p50,
            "size_bytes_p50": inc_size, "fixed_overhead_bytes_p50": overhead,
            "size_limit_bytes": limit, "goal_data_mib": GOAL_INCREMENTAL_DATA_MIB,
            # the 1 MiB must be in it: else the size says nothing
            "written_data_seen": all(s >= write_mib * MIB for s in seen), "size_over_empty_bytes": seen,
            "pass_size": inc_size <= limit and all(s >= write_mib * MIB for s in seen),
            "empty_p50_ms": ms(p50([e["s"] for e in empty]), 1),
            # libvirt's own time for the appliance's jobs (completed-job time_elapsed): what no
            # wrapper can take away
            "libvirt_job_ratio_to_full": _job_ratio(inc, full),
            "split_p50_ms": _split_p50([i["split"] for i in inc]),
            "samples_ms": [ms(i["s"], 1) for i in inc], "sizes_bytes": [i["size"]["apparent_bytes"] for i in inc],
            "empty_sizes_bytes": [e["size"]["apparent_bytes"] for e in empty],
            "disks_bytes": inc[-1]["disks"],
        },
        "not_deleted": undeleted,
        "loadavg_1min_before_after": load,
    }


def _job_ratio(inc: list[dict], full: list[dict]) -> float | None:
    inc_jobs = [b["split"].get("libvirt_job_ms") for b in inc]
    full_jobs = [b["split"].get("libvirt_job_ms") for b in full]
    if not inc_jobs or not full_jobs or None in inc_jobs + full_jobs:
        return None
    return ratio(p50(inc_jobs), p50(full_jobs))


def _split_p50(splits: list[dict]) -> dict:
    keys = {k for s in splits for k, v in s.items() if v is not None}
    return {k: round(p50([s[k] for s in splits if s.get(k) is not None]), 1) for k in sorted(keys)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--disk-mib", type=int, default=1024)
    parser.add_argument("--data-mib", type=int, default=512)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmapp-bench-backup-") as tmp:
        result = run(Path(tmp), args.rounds, args.disk_mib, args.data_mib)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""BENCHMARKS.md's backup and snapshot sections, from tests/bench/bench_backup.py's and
tests/bench/bench_snapshot.py's JSON (kept apart from report.py, which is long enough)."""
from __future__ import annotations

MIB = 1024 * 1024


def _x(value) -> str:
    return "–" if value is None else f"{value:.2f}×"


def _mib(value: float) -> str:
    return f"{value / MIB:.2f} MiB"


def _ms(value) -> str:
    return "–" if value is None else f"{value:.0f} ms"


def _verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


def backup_summary(r: dict) -> list[tuple[str, str, str, bool]]:
    f, i = r["full"], r["incremental"]
    disk = f"{r['guest']['disk_mib'] / 1024:g} GiB" if r["guest"]["disk_mib"] >= 1024 else f"{r['guest']['disk_mib']} MiB"
    return [
        (f"backup, full, {disk} data disk: throughput vs qemu-img convert (flushed at the end, as a backup)",
         _x(f["throughput_ratio"]),
         f"≥ {f['goal_ratio']:g}×", f["pass"]),
        (f"backup, incremental after {i['write_mib']} MiB written: size", _mib(i["size_bytes_p50"]),
         f"≤ {i['goal_data_mib']} MiB + {_mib(i['fixed_overhead_bytes_p50'])} fixed", i["pass_size"]),
        (f"backup, incremental after {i['write_mib']} MiB written: time vs the full's", _x(i["time_ratio_to_full"]),
         f"≤ {i['goal_time_ratio']:g}×", i["pass_time"]),
    ]


def snapshot_summary(r: dict) -> tuple[str, str, str, bool]:
    return (f"snapshot with memory, running {r['memory_mib']} MiB VM, vs virsh snapshot-create-as", _x(r["ratio"]),
            f"≤ {r['goal_ratio']:g}×", r["pass"])


def backup_section(r: dict) -> list[str]:
    f, i, g = r["full"], r["incremental"], r["guest"]
    s = f["split_p50_ms"]
    lo, hi = f["paired_ratio_range"]
    return [
        "## 10. Backups of a running guest (tests/bench/bench_backup.py)",
        "",
        "| measure | appliance | reference | ratio | goal | result |",
        "|---|---|---|---|---|---|",
        (f"| full backup p50, `POST /v1/vms/NAME/backups {{\"full\": true}}` until good | {f['appliance_p50_ms']:.0f} ms "
         f"({f['appliance_mib_s']} MiB/s) | `qemu-img convert -t writeback -O qcow2` of the same disks (flushed to "
         f"storage at its end, as the backup's files are): {f['convert_p50_ms']:.0f} ms "
         f"({f['convert_mib_s']} MiB/s) | {_x(f['throughput_ratio'])} (throughput) | ≥ {f['goal_ratio']:g}× "
         f"| {_verdict(f['pass'])} |"),
        (f"| per round, convert / appliance: median (range) | | | {_x(f['paired_ratio_median'])} "
         f"({lo:.2f}–{hi:.2f}) | (context) | |"),
        (f"| `qemu-img convert` with its default target cache mode, `unsafe` (returns with the copy in the page "
         f"cache, not flushed) | | {_ms(f.get('convert_unsafe_p50_ms'))} | {_x(f.get('unsafe_throughput_ratio'))} "
         "(throughput) | (context) | |"),
        (f"| libvirt's push backup alone (`backupBegin` from Python, no checkpoint) | | {f['libvirt_p50_ms']:.0f} ms "
         f"({f['libvirt_mib_s']} MiB/s; its job's own time {f['libvirt_job_elapsed_p50_ms']} ms) "
         f"| {_x(f['libvirt_p50_ms'] / f['appliance_p50_ms'])} (throughput) | (context) | |"),
        (f"| `qemu-img convert -t writeback -T none` (reads its sources with O_DIRECT, as QEMU reads a running VM's disks) "
         f"| | {f['convert_odirect_p50_ms']:.0f} ms | {_x(f['convert_odirect_p50_ms'] / f['appliance_p50_ms'])} "
         "(throughput) | (context) | |"),
        (f"| incremental after {i['write_mib']} MiB written in the guest: size p50 | {_mib(i['size_bytes_p50'])} "
         f"| the same with nothing written (the fixed overhead): {_mib(i['fixed_overhead_bytes_p50'])} "
         f"| limit {_mib(i['size_limit_bytes'])} | ≤ {i['goal_data_mib']} MiB + overhead | {_verdict(i['pass_size'])} |"),
        (f"| incremental after {i['write_mib']} MiB written: time p50 | {i['p50_ms']:.0f} ms "
         f"| the full backup: {f['appliance_p50_ms']:.0f} ms | {_x(i['time_ratio_to_full'])} | ≤ {i['goal_time_ratio']:g}× "
         f"| {_verdict(i['pass_time'])} |"),
        f"| incremental with nothing written: time p50 | {i['empty_p50_ms']:.0f} ms | | | (context) | |",
        (f"| libvirt's own time for the appliance's jobs (completed job's `time_elapsed`), p50: incremental / full "
         f"| {_ms(i['split_p50_ms'].get('libvirt_job_ms'))} | {_ms(s.get('libvirt_job_ms'))} "
         f"| {_x(i.get('libvirt_job_ratio_to_full'))} | (context) | |"),
        "",
        (f"One demo guest (TCG, 128 MiB) with a {g['disk_mib']} MiB data disk whose first {g['data_mib']} MiB hold "
         "non-zero data written before its first boot (qemu-io), booted and idle at its shell before anything was "
         f"timed ({g['create_fill_and_boot_s']} s). A full backup copies every writable disk ({', '.join(g['disks'])}; "
         f"{g['virtual_bytes'] / MIB:.0f} MiB virtual, {f['backup_bytes_p50'] / MIB:.0f} MiB written); the reference "
         "converts the same disks one after the other (`qemu-img convert -U -t writeback -f qcow2 -O qcow2`, the root "
         "overlay flattened as a full backup is) into the same file system and, as QEMU does with a backup's files "
         "before libvirt's job ends, flushes them to storage when it closes them; qemu-img convert's default target "
         "cache mode (`unsafe`) does not, so its time is how fast the page cache takes dirty pages (shown as context). "
         "Before each, the disks' files are dropped from "
         "the host's page cache (sync, POSIX_FADV_DONTNEED), so every way reads them from storage, as a running VM's "
         "disks are (QEMU uses O_DIRECT for them); the throughputs are the virtual bytes over the "
         f"time, so their ratio is the inverse ratio of the times. {r['rounds']} rounds, the five ways in an order "
         "rotating round by round. Then an incremental with nothing written since the full, "
         f"{i['write_mib']} MiB of random data written in the guest (`dd ... conv=fsync` on the data disk, typed into "
         "its serial console), and the timed incremental (what it holds over the empty one, bytes: "
         f"{i['size_over_empty_bytes']}). Sizes are the backup folder's files (manifest and one qcow2 per disk). "
         f"Samples (ms): appliance {f['samples_ms']['appliance']}; convert {f['samples_ms']['convert']}; libvirt "
         f"{f['samples_ms']['libvirt']}; convert -T none {f['samples_ms']['convert_odirect']}; convert, unsafe "
         f"{f['samples_ms'].get('convert_unsafe')}; incremental {i['samples_ms']}. Inside the full backup's p50: "
         f"{s.get('before_op_recorded_ms', '?')} ms until its operation was recorded, {s.get('op_queued_ms', '?')} ms "
         f"queued, {s.get('op_running_ms', '?')} ms running in the controller (of which "
         f"{s.get('until_recorded_ms', '?')} ms until the backup was recorded, {s.get('recorded_to_published_ms', '?')} "
         f"ms from there until it was published, libvirt's job included, {s.get('published_to_op_end_ms', '?')} ms "
         f"after: older checkpoints dropped, retention), {s.get('after_op_finished_ms', '?')} ms until the client had "
         f"the answer; the incremental's: {_split_text(i['split_p50_ms'])}. "
         f"Load average (1 min) before/after: {r['loadavg_1min_before_after']}."),
        "",
    ]


def _split_text(s: dict) -> str:
    return (f"{s.get('op_running_ms', '?')} ms running ({s.get('until_recorded_ms', '?')} + "
            f"{s.get('recorded_to_published_ms', '?')} + {s.get('published_to_op_end_ms', '?')} ms; libvirt's job "
            f"{s.get('libvirt_job_ms', '?')} ms)")


def snapshot_section(r: dict) -> list[str]:
    s = r["appliance_split_p50_ms"]
    lo, hi = r["paired_ratio_range"]
    rows = [
        f"## 11. Snapshot with memory of a running {r['memory_mib']} MiB guest (tests/bench/bench_snapshot.py)",
        "",
        "| way (all on the same domain) | p50 | p90 | min / max | ratio to virsh, p50 | goal | result |",
        "|---|---|---|---|---|---|---|",
    ]
    names = {"appliance": "`POST /v1/vms/NAME/snapshots {\"memory\": true}` (waits for the operation)",
             "virsh": "`virsh snapshot-create-as DOMAIN NAME` (the reference)",
             "libvirt": "`virDomainSnapshotCreateXML` from Python: libvirt's own work, no virsh process"}
    for way in ("appliance", "virsh", "libvirt"):
        w = r[way]
        if way == "appliance":
            rel, goal, verdict = _x(r["ratio"]), f"≤ {r['goal_ratio']:g}×", _verdict(r["pass"])
        else:
            rel = "" if way == "virsh" else _x(r["ratio_libvirt"])
            goal, verdict = ("(reference)" if way == "virsh" else "(context)"), ""
        rows.append(f"| {names[way]} | {w['p50_ms']:.0f} ms | {w['p90_ms']:.0f} ms | {w['min_ms']:.0f} / "
                    f"{w['max_ms']:.0f} ms | {rel} | {goal} | {verdict} |")
    rows += [
        f"| per round, appliance / virsh: median (range) | | | | {_x(r['paired_ratio_median'])} ({lo:.2f}–{hi:.2f}) "
        "| (context) | |",
        f"| appliance / libvirt's call from Python, p50: the appliance's share | | | | {_x(r.get('ratio_to_libvirt'))} "
        "| (context) | |",
        "",
        (f"The appliance's VM (demo guest, TCG, 1 vCPU, {r['memory_mib']} MiB), booted and idle at its shell before "
         f"anything was timed ({r['guest']['create_and_boot_s']} s). Internal qcow2 snapshots with memory, as the "
         "appliance takes them, every way on the same domain (virsh's and libvirt's deleted at once, so the appliance "
         f"never records them); {r['rounds']} rounds, the ways in an order rotating round by round, each snapshot "
         "deleted (untimed) right after it was taken. Checks: "
         + ", ".join(f"{k.replace('_', ' ')}: {'yes' if v else 'NO'}" for k, v in r["checks"].items())
         + f". Samples (ms): appliance {r['appliance']['samples_ms']}; virsh {r['virsh']['samples_ms']}; libvirt "
         f"{r['libvirt']['samples_ms']}. Inside the appliance's p50: {s.get('before_op_recorded_ms', '?')} ms until "
         f"its operation was recorded, {s.get('op_queued_ms', '?')} ms queued, {s.get('op_running_ms', '?')} ms "
         f"running in the controller, {s.get('after_op_finished_ms', '?')} ms until the client had the answer. "
         f"Load average (1 min) before/after: {r['loadavg_1min_before_after']}."),
        "",
    ]
    return rows

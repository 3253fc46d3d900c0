"""RELIABILITY.md from `make soak`'s results: figures, command, commit, date (as BENCHMARKS.md)."""
from __future__ import annotations

import json
import re
from pathlib import Path

COMMAND = "make soak"
RECORD = "<!-- soak results (JSON), read back by the next run: -->"


def load_previous(path: Path) -> dict:
    """The parts of the last RELIABILITY.md's JSON record (kept when a run does not redo them)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    match = re.search(re.escape(RECORD) + r"\s*```json\n(.*?)\n```", text, re.S)
    return json.loads(match.group(1)) if match else {}


def _n(value, unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:.{digits}f}{unit}" if isinstance(value, float) else f"{value}{unit}"


def _code(r: dict) -> str:
    extra = r.get("uncommitted") or []
    return r.get("commit", "?") + (f" + uncommitted {', '.join(extra)}" if extra else "")


def _kills(results: dict) -> list[str]:
    rows = [(p, results[p]) for p in ("kill-serve", "kill-mount", "kill-worker", "libvirtd") if p in results]
    if not rows:
        return []
    out = ["## Random SIGKILL", "",
           "A real `vmctl serve` on a private libvirtd (packaging/local-hosts) whose guests are real QEMU "
           "domains that never boot (a 1 MiB image whose boot sector is `cli; hlt`, 32 MiB): starts, "
           "stops, pauses, renames, snapshots and deletes are the real ones and cost no guest CPU. "
           "Four clients (three through REST, one half through REST and half through the mount), each "
           "owning 3 VMs over their lives, run a random mix of creates, starts, force-stops, pauses, "
           "renames, disk-only snapshots, deletes, migrations between two local hosts (live and cold) "
           "and image uploads and deletes; at a random moment (0.3–2 s after the clients resume) the target is "
           "SIGKILLed: `serve` (started again by the soak), the mount child (restarted by serve), one "
           "gunicorn worker (re-forked by gunicorn), or, for the libvirtd row, the libvirtd of a private "
           "local host (packaging/local-hosts) the appliance uses instead of the machine's, SIGKILLed and "
           "started again or restarted gracefully in turn, its guests running. Then the clients pause and the soak checks: every "
           "VM reaches its desired state with no operation pending (*converge*, timed from serve "
           "answering again); every write acknowledged (2xx, or a mount call returning) is there and "
           "nothing the clients did not ask for (their ledger); no orphan (domain, VM directory with "
           "its disks and seed ISO, stray file in a VM directory, `.upload-*` file, image file, "
           "DHCP reservation recorded for a VM that is gone, second or stale mount, a guest running "
           "twice); `PRAGMA integrity_check` is ok. The serve, mount and worker parts run side by side, "
           "each on an appliance and two local hosts of its own (so each part's figures are under the "
           "others' load); a local host's libvirtd that dies unasked is started again and counted. A "
           "whole host lost: the host-loss part.", "",
           "| SIGKILL of | kills | survived | VMs lost | writes lost | unasked VMs | orphans | "
           "not converged | integrity | converge max (p50) | back up in (max) | operations acked / "
           "answers lost | 5xx | took |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for part, r in rows:
        if "error" in r:
            out.append(f"| {part.removeprefix('kill-')} | FAILED: {r['error']} |" + " |" * 12)
            continue
        out.append(
            f"| {part.removeprefix('kill-')} | {r['kills']} | {r['survived']} | {r['vms_lost']} | {r['writes_lost']} | "
            f"{r['unexpected_vms']} | {r['orphans']} | {r['not_converged']} | "
            f"{'ok' if not r['integrity_failures'] else str(r['integrity_failures']) + ' failed'} | "
            f"{_n(r['converge_max_s'], ' s')} ({_n(r['converge_p50_s'], ' s')}) | "
            f"{_n(r['recovery_max_s'], ' s')} | {r['operations_acked']} / {r['answers_lost']} | "
            f"{r['server_error_count']} | {_n(r['took_s'], ' s', 0)} |")
    for part, r in rows:
        if r.get("alongside") or r.get("libvirtd_crashes") or r.get("phase_mean_s"):
            phases = ", ".join(f"{k} {v} s" for k, v in (r.get("phase_mean_s") or {}).items())
            out.append(f"\n{part}: beside {', '.join(r.get('alongside') or []) or 'nothing'}; a kill's mean "
                       f"seconds: {phases or '–'}; libvirtd crashes (restarted): "
                       f"{'; '.join(r.get('libvirtd_crashes') or []) or 'none'}")
        for failed in r.get("failed_rounds", [])[:5]:
            out.append(f"\n{part} kill {failed['kill']}: {json.dumps(failed['findings'])[:600]}")
        for err in r.get("server_errors", [])[:5]:
            out.append(f"\n{part}, a 5xx: {err[:300]}")
    return out + [""]


def render(results: dict, facts: dict) -> str:
    from tests.soak.fuzz_report import fuzz_sections
    from tests.soak.host_loss import host_loss_section

    lines = ["# Reliability", "",
             f"Reproduce with **`{COMMAND}`** (`.venv/bin/python -m tests.soak.run`, which rewrites this "
             "file); `make soak PART=kill-serve` (or `kill`, `kill-mount`, `kill-worker`, `libvirtd`, `host-loss`, "
             "`fuzz-api`, `fuzz-mount`, `disk-full`, `concurrent`, comma-separated) re-runs parts and keeps "
             "the others from this file's JSON record. Every part stops by itself after its count or its "
             "time budget. `make test` runs the short version (`make soak-quick`: a few kills of each "
             "kind, a few hundred fuzz cases, one round of disk full, 10 s of 20 concurrent clients; "
             "no libvirtd or host-loss part; ~2 min, writing nothing, failing on any finding).", "",
             "Hosts: the kill, mount-fuzz, disk-full and concurrent parts run a real `vmctl serve` (REST "
             "through gunicorn, the FUSE mount) on real libvirt, with guests that are real QEMU domains "
             "that never boot (so that a start costs no guest CPU under TCG); the libvirtd part on a "
             "private libvirtd (packaging/local-hosts) it may kill; the API fuzzing in one process "
             "over the FakeDriver (thousands of cases in minutes). What each part found and what was "
             "fixed is in the commits that name `make soak`.", "",
             f"Machine: {facts.get('nproc')} CPUs, {facts.get('memory_gib')} GiB RAM, Linux "
             f"{facts.get('kernel')}, Python {facts.get('python')}, libvirt {facts.get('libvirt')} "
             f"({facts.get('hypervisor')}); shared with other work (the load is in the record).", "",
             "| part | measured | code (commit) | took | done |", "|---|---|---|---|---|"]
    for part, r in results.items():
        count = next((f"{r[k]} {k}" for k in ("kills", "cases", "rounds", "writes", "requests") if k in r), "–")
        lines.append(f"| {part} | {r.get('date_utc', '?')} | {_code(r)} | {_n(r.get('took_s'), ' s', 0)} | "
                     f"{count} |")
    lines.append("")
    lines += _kills(results)
    lines += host_loss_section(results)
    lines += fuzz_sections(results)
    notes = Path(__file__).with_name("notes.md")
    if notes.exists():  # what the figures mean, what was fixed and what is left (kept by hand)
        lines += [notes.read_text().strip(), ""]
    lines += [RECORD, "```json", json.dumps(results, indent=1, sort_keys=True, default=str), "```", ""]
    return "\n".join(lines)

"""RELIABILITY.md's fuzzing sections (tests/soak/report.py renders the rest)."""
from __future__ import annotations

import json


def _examples(r: dict) -> list[str]:
    return [f"- {e[:400]}" for e in r.get("failure_examples", [])[:10]]


def fuzz_sections(results: dict) -> list[str]:
    out: list[str] = []
    api, mount = results.get("fuzz-api"), results.get("fuzz-mount")
    if api:
        out += ["## Fuzzing: the API, stateful", "",
                "schemathesis's state machine over /v1/openapi.json (links between operations inferred: "
                "a POST's answer feeds the GET, PATCH, PUT and DELETE of what it made), valid and invalid "
                "data, 12 steps a scenario, on the real store, Service, Controller and REST app in one "
                "process over a FakeDriver host (tests/soak/fuzz_api.py; tokens, users, hosts and adoption "
                "left out). Checked: no 5xx; a write answered 4xx changes no row of the store (what the "
                "controller updates by itself left out, compared with no operation busy).", ""]
        if "error" in api:
            out += [f"FAILED: {api['error']}", ""]
        else:
            out += ["| cases | writes refused (4xx) | 5xx | changed on a 4xx | by method and status | took |",
                    "|---|---|---|---|---|---|",
                    f"| {api['cases']} | {api['writes_refused']} | {api['server_errors_5xx']} | "
                    f"{api['changed_on_4xx']} | {json.dumps(api['by_status'])} | {api.get('took_s')} s |", ""]
            out += _examples(api) + ([""] if api.get("failure_examples") else [])
    if mount:
        out += ["## Fuzzing: the mount", "",
                "Random bytes, sizes (0 to 2 MiB + 1), offsets (0 to 2^62) and open flags (O_TRUNC, "
                "O_APPEND) written into every owner-writable file of the real mount over two VMs (one "
                "running, one stopped with a snapshot) and the host (tests/soak/fuzz_mount.py). Checked: "
                "the mount process survives and answers; every write is refused with an errno unless the "
                "file takes free text by design (console, lock); a refused write changes nothing in the "
                "store.", ""]
        if "error" in mount:
            out += [f"FAILED: {mount['error']}", ""]
        else:
            out += ["| writes | files | mount crashes | failures | errnos | accepted (free text) | took |",
                    "|---|---|---|---|---|---|---|",
                    f"| {mount['writes']} | {mount['files']} | {mount['mount_crashes']} | {mount['failures']} | "
                    f"{json.dumps(mount['errnos'])} | {json.dumps(mount['accepted'])} | {mount.get('took_s')} s |",
                    ""]
            out += _examples(mount) + ([""] if mount.get("failure_examples") else [])
    out += disk_section(results.get("disk-full"))
    out += concurrent_section(results.get("concurrent"))
    return out


def concurrent_section(r: dict | None) -> list[str]:
    if not r:
        return []
    out = ["## Concurrent clients", "",
           f"{r.get('clients', 50)} clients over HTTP on 10 shared VMs of 8 GiB (the soak's serve; the local host "
           "holds only a few of them running) for the time below: GET /v1/vms/NAME (60 %), an increment of the "
           "label `counter` by GET then PATCH with If-Match (25 %), a start or force-stop (15 %) "
           "(tests/soak/concurrent.py). Checked: each counter equals the increments acknowledged (no lost "
           "update; a stale ETag is 412), no host overbooked (sampled each second from the store), no 5xx.", ""]
    if "error" in r:
        return out + [f"FAILED: {r['error']}", ""]
    out += ["| clients | seconds | requests (/s) | increments acked | 412 | lost updates | overbooked samples | "
            "5xx, errors | GET p50 / p99 |", "|---|---|---|---|---|---|---|---|---|",
            f"| {r['clients']} | {r['seconds']} | {r['requests']} ({r['requests_per_s']}) | {r['increments_acked']} | "
            f"{r['conflicts_412']} | {r['lost_updates']} | {r['overbooked_samples']} of {r['samples']} | "
            f"{r['server_errors']}, {r['errors']} | {r['get_p50_ms']} / {r['get_p99_ms']} ms |", "",
            f"Answers: {json.dumps(r.get('by_status'))}", ""]
    for key in ("lost_update_examples", "overbook_examples", "error_examples"):
        out += [f"- {key}: {e}" for e in r.get(key, [])[:5]]
    return out + [""]


def disk_section(r: dict | None) -> list[str]:
    if not r:
        return []
    out = ["## Disk full", "",
           "The home on a 400 MiB ext4 file system in a file, loop-mounted; a real `vmctl serve` with three "
           "VMs (one running); a file fills the file system to its last block. While full, each round: a "
           "create (REST and mkdir), an image upload, a start (REST), a state write (mount), and four reads "
           "(GET /v1/vms, GET /v1/vms/NAME, cat state, ls vms). Then the file goes and a create and an upload "
           "must succeed (tests/soak/disk_full.py).", ""]
    if "error" in r:
        return out + [f"FAILED: {r['error']}", ""]
    out += ["| rounds while full | writes refused (507 / ENOSPC) | other answers to writes | reads answered | "
            "integrity full / after | after: create, upload | VMs lost | orphans | converged | took |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    writes = r.get("writes", {})
    clear = sum(n for c in writes.values() for k, n in c.items() if k in ("507", "ENOSPC"))
    other = {f"{w}: {k}": n for w, c in writes.items() for k, n in c.items() if k not in ("507", "ENOSPC")}
    reads = r.get("reads", {})
    ok = sum(c.get("accepted", 0) for c in reads.values())
    total = sum(sum(c.values()) for c in reads.values())
    out.append(f"| {r.get('rounds')} | {clear} | {json.dumps(other) if other else 0} | {ok} of {total} | "
               f"{r.get('integrity_while_full')} / {r.get('integrity_after')} | {r.get('create_after')}, "
               f"{r.get('upload_after')} | {len(r.get('vms_lost', []))} | {len(r.get('orphans_after', {}))} | "
               f"{r.get('converged_after')} | {r.get('took_s')} s |")
    out += ["", "Answers while full: " + "; ".join(f"{k}: `{v[:160]}`" for k, v in r.get("reasons", {}).items()), ""]
    return out + _examples(r) + ([""] if r.get("failure_examples") else [])

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
    return out

"""BENCHMARKS.md's `scale` section, from tests/bench/bench_scale.py's JSON (kept apart from
report.py, which is long enough)."""
from __future__ import annotations

GOAL_NAMES = {
    "op_create": "create (`POST /v1/vms`, until its operation finished)",
    "op_start": "start (`PUT state running`)",
    "op_migrate": "migrate, live (`PUT host`)",
    "op_stop": "stop (`PUT state force-stop`)",
    "op_delete": "delete (`DELETE /v1/vms/NAME`)",
    "get_vm": "`GET /v1/vms/NAME` p50",
    "cat_state": "`cat vms/X/state` on the mount p50",
    "scheduler_ms_per_decision": "one scheduler decision (appliance.placement.place)",
    "idle_cpu": "idle CPU (controller process + mount)",
    "list_vms": "`GET /v1/vms` (all VMs)",
    "ls_l_vms": "`ls -l vms` on the mount (caches expired)",
    "store_scrape": "the store's /metrics families",
}
LINEAR = ("list_vms", "ls_l_vms", "store_scrape")


def _verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**MISS**"


def summary(r: dict) -> list[tuple[str, str, str, bool]]:
    v = r["verdict"]
    if not v.get("judged"):
        return []
    out = []
    for key, g in v["goals"].items():
        if key == "memory":
            continue
        kind = "≤ linear × 1.5" if key in LINEAR else "≤ 1.5× (flat)"
        out.append((f"scale {v['from']:,} → {v['to']:,} VMs: {GOAL_NAMES.get(key, key)}",
                    f"{g['growth']}×", f"{kind}: ≤ {g['limit']}×", g["pass"]))
    return out


def _ms(value) -> str:
    return "–" if value is None else f"{value:g} ms"


def section(r: dict) -> list[str]:
    points = r["points"]
    head = "| measure | " + " | ".join(f"{p['vms']:,} VMs" for p in points) + " |"
    sep = "|---|" + "---|" * len(points)

    def row(name: str, values: list) -> str:
        return f"| {name} | " + " | ".join(values) + " |"

    rows = [
        f"## 13. Scale: {r['hosts']} hosts, {', '.join(f'{p:,}' for p in r['sizes'])} VMs (tests/bench/bench_scale.py)",
        "",
        head, sep,
    ]
    for kind in ("create", "start", "migrate", "stop", "delete"):
        rows.append(row(f"{kind}, p50 (max) of {r['rounds']}",
                        [f"{p['ops'][kind]['p50_ms']:g} ({p['ops'][kind]['max_ms']:g}) ms" for p in points]))
    rows += [
        row("`GET /v1/vms/NAME` p50 / p90", [f"{p['get_vm_p50_ms']:g} / {p['get_vm_p90_ms']:g} ms" for p in points]),
        row("`GET /v1/vms` p50 (every VM)", [_ms(p["list_vms_p50_ms"]) for p in points]),
        row("`cat vms/X/state` p50", [_ms(p.get("mount", {}).get("cat_state_p50_ms")) for p in points]),
        row("`ls -l vms` p50 (caches expired)", [_ms(p.get("mount", {}).get("ls_l_vms_p50_ms")) for p in points]),
        row("scheduler: decisions/s (ms each)", [f"{p['scheduler']['decisions_per_s']:g} ({p['scheduler']['ms_per_decision']:g} ms)"
                                                for p in points]),
        row("full resync, p50 (passes in the idle window)",
            [f"{_ms(p['idle']['resync_p50_ms'])} ({p['idle']['resyncs']})" for p in points]),
        row("heartbeat (all hosts), p50 / max", [f"{_ms(p['idle']['heartbeat_p50_ms'])} / {_ms(p['idle']['heartbeat_max_ms'])}"
                                                 for p in points]),
        row("idle CPU: controller process + mount (% of one core; window, whole resync periods)",
            [f"{p['idle']['idle_cpu_percent']:g} % ({p['idle']['controller_cpu_percent']:g} + "
             f"{p['idle']['mount_cpu_percent']:g}; {p['idle']['window_s']:g} s)" for p in points]),
        row("memory: controller process less the fake hosts / mount RSS",
            [f"{p['memory']['appliance_rss_mib']:g} / {p['memory']['mount_rss_mib']:g} MiB" for p in points]),
        row("scrape: store families / libvirt collector (test driver, as many domains)",
            [f"{_ms(p['scrape']['store_families_p50_ms'])} / {_ms(p['scrape'].get('libvirt_scrape_p50_ms'))}"
             for p in points]),
        "",
    ]
    v = r["verdict"]
    if v.get("judged"):
        rows += [f"Issue 17's goals, {v['from']:,} → {v['to']:,} VMs ({v['to'] / v['from']:g}× the VMs):", "",
                 "| measure | growth | limit | result |", "|---|---|---|---|"]
        for key, g in v["goals"].items():
            if key == "memory":
                continue
            rows.append(f"| {GOAL_NAMES.get(key, key)} | {g['growth']}× | ≤ {g['limit']}× | {_verdict(g['pass'])} |")
        m = v["goals"]["memory"]
        rows += ["", f"Memory per VM (controller process, fake hosts' share taken out): {m['bytes_per_vm']:,} bytes "
                 f"({v['from']:,} → {v['to']:,} VMs).", ""]
    sweep = r.get("host_sweep") or []
    if sweep:
        rows += [f"Host sweep, {sweep[0]['vms']:,} stopped VMs spread over the hosts:", "",
                 "| hosts | full resync p50 / max | heartbeat p50 / max | scheduler ms per decision | idle CPU "
                 "| within their periods |", "|---|---|---|---|---|---|"]
        for s in sweep:
            rows.append(f"| {s['hosts']} | {_ms(s['resync_p50_ms'])} / {_ms(s['resync_max_ms'])} "
                        f"| {_ms(s['heartbeat_p50_ms'])} / {_ms(s['heartbeat_max_ms'])} "
                        f"| {s['scheduler']['ms_per_decision']:g} ms | {s['idle_cpu_percent']:g} % "
                        f"| {_verdict(s['within_periods'])} (resync {s['resync_period_s']:g} s, heartbeat "
                        f"{s['heartbeat_period_s']:g} s) |")
        rows.append("")
    rows += [
        ("One process holds the real store, Service, Controller (its loop, heartbeat and operation threads) and "
         "REST app (falcon's TestClient: no HTTP, no gunicorn); the hosts are the FakeDriver's, in memory. The "
         "mount (fs.mount.run, no controller) is a child process over the same home. The first VM is made "
         "through the API; the others are copies of its row inserted with SQL, with a stopped domain each on "
         "the fake hosts (round-robin), so filling takes seconds; every measured operation goes through the API "
         "and the controller. The libvirt collector's scrape is bench_exporter's test-driver scrape "
         "(test:///default, state stats) over as many domains, in a child process. `GET /v1/vms` is timed "
         "until the answer's bytes (the test client decodes it after the clock). Idle: at least "
         f"{r['idle_seconds']:g} s with nobody asking, from the end of a full resync to the end of a later one."),
        "",
    ]
    return rows

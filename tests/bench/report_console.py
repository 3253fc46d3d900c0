"""BENCHMARKS.md's console section, from tests/bench/bench_console.py's JSON (kept apart from report.py,
which is long enough)."""
from __future__ import annotations

WAY_NAMES = {
    "websocket": "WebSocket `/v1/vms/NAME/console` (`websockets` client, token header): API → broker → libvirt",
    "virsh": "`virsh console DOMAIN` on a pty (the reference)",
    "broker": "the broker's unix socket directly (`appliance.consoles.client.open_console`): no API hop",
    "libvirt": "`virDomainOpenConsole` from Python (libvirtaio): no broker",
}


def _x(value) -> str:
    return "–" if value is None else f"{value:.2f}×"


def summary(r: dict) -> tuple[str, str, str, bool]:
    return ("console keystroke round trip p50, WebSocket vs virsh console", _x(r["ratio"]),
            f"≤ {r['goal_ratio']:g}×", r["pass"])


def section(r: dict) -> list[str]:
    virsh = r["virsh"]
    rows = [
        "## 9. Console keystroke round trip (tests/bench/bench_console.py)",
        "",
        "| way to the guest's serial console | p50 | p90 | min / max | ratio to virsh, p50 (p90) | goal | result |",
        "|---|---|---|---|---|---|---|",
    ]
    for way in ("websocket", "virsh", "broker", "libvirt"):
        s = r[way]
        if way == "websocket":
            goal, verdict = f"≤ {r['goal_ratio']:g}×", "**PASS**" if r["pass"] else "**MISS**"
            rel = f"{_x(r['ratio'])} ({_x(r['ratio_p90'])})"
        else:
            goal, verdict = ("(reference)" if way == "virsh" else "(context)"), ""
            rel = "" if way == "virsh" else f"{_x(s['p50_ms'] / virsh['p50_ms'])} ({_x(s['p90_ms'] / virsh['p90_ms'])})"
        rows.append(f"| {WAY_NAMES[way]} | {s['p50_ms']} ms | {s['p90_ms']} ms | {s['min_ms']} / {s['max_ms']} ms "
                    f"| {rel} | {goal} | {verdict} |")
    low, high = r["paired_ratio_range"]
    rows += [
        (f"| per round, WebSocket block p50 / virsh block p50: median (range) | | | | {_x(r['paired_ratio_median'])} "
         f"({low:.2f}–{high:.2f}) | (context) | |"),
        ("| attach until the first echo, p50: WebSocket / virsh / broker / libvirt | "
         + " / ".join(f"{r[w]['attach_p50_ms']:.0f}" for w in ("websocket", "virsh", "broker", "libvirt"))
         + " ms | | | | (context) | |"),
        "",
        (f"One demo guest (TCG, booted in {r['guest']['create_and_boot_s']} s, idle at its busybox shell on ttyS0, "
         "which was first made to run a command). A keystroke is one character written and its echo read back; "
         "between two of them a DEL is typed and its echo awaited, untimed, so the shell's line stays empty. "
         "A libvirt console stream is exclusive per domain, so the four ways are measured in alternating blocks: "
         f"{r['rounds']} rounds, in each every way attaches, types 2 untimed keystrokes and "
         f"{r['keystrokes_per_block']} timed ones, then detaches before the next attaches (the order rotates each "
         f"round): {r['websocket']['n']} keystrokes per way. WebSocket extensions negotiated: "
         f"{', '.join(r['websocket_extensions']) or 'none (the API turns compression off)'}. Attaching takes about a second for every way: while "
         "nobody holds the console, QEMU's pty character device looks for a reader only once a second, and the "
         "first echo waits for that poll. Load average "
         f"(1 min) before/after the rounds: {r['loadavg_1min_before_after']}; others may share this machine."),
        "",
    ]
    return rows

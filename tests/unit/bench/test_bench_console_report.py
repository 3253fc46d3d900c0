"""The console section of BENCHMARKS.md: the goal is judged on the WebSocket's p50 against
virsh console's (issue 12: ≤ 1.5×), and a failed console run shows no figure."""
from __future__ import annotations

import copy

from tests.bench.report import render
from tests.bench.run import merge


def _way(p50: float, p90: float) -> dict:
    return {"p50_ms": p50, "p90_ms": p90, "min_ms": p50 - 1, "max_ms": p90 + 5, "n": 300,
            "attach_p50_ms": 1001.0, "attach_retries": 0}


def console(ws_p50: float) -> dict:
    virsh_p50 = 6.0
    return {"rounds": 10, "keystrokes_per_block": 30,
            "websocket": _way(ws_p50, ws_p50 + 2), "virsh": _way(virsh_p50, 8.0),
            "broker": _way(6.5, 8.5), "libvirt": _way(5.9, 7.9),
            "ratio": round(ws_p50 / virsh_p50, 3), "ratio_p90": round((ws_p50 + 2) / 8.0, 3),
            "paired_ratio_median": 1.1, "paired_ratio_range": [0.9, 1.3], "per_round_p50_ms": [],
            "goal_ratio": 1.5, "pass": ws_p50 <= 1.5 * virsh_p50, "websocket_extensions": [],
            "loadavg_1min_before_after": [0.5, 0.7], "guest": {"create_and_boot_s": 9.0}}


def run_with(section: dict | None, error: str | None = None) -> dict:
    machine = {"nproc": 2, "cpu_model": "x", "memory_gib": 1, "kernel": "k", "python": "3.11", "libvirt": "9",
               "hypervisor": "QEMU", "date_utc": "2030-01-01 00:00 UTC", "commit": "abc1234",
               "uncommitted_in_measured_code": []}
    results = {"machine": machine, "command": "make bench", "quick": False, "errors": {},
               "measured": {"console": {"date_utc": "2030-01-01 00:00 UTC", "commit": "abc1234", "quick": False}},
               "background": {"console": {"before": {"loadavg_1min": 0.5, "qemu_processes": 0},
                                          "after": {"loadavg_1min": 0.7, "qemu_processes": 0}}},
               "seconds": {"console": 60}}
    if section is not None:
        results["console"] = section
    if error is not None:
        results["errors"]["console"] = error
        results["measured"]["console"]["failed"] = True
    return results


def test_the_goal_is_the_websocket_p50_against_virsh_console():
    text = render(run_with(console(7.2)))
    assert "| console keystroke round trip p50, WebSocket vs virsh console | 1.20× | ≤ 1.5× | **PASS** |" in text
    assert "## 9. Console keystroke round trip" in text
    assert "| 7.2 ms | 9.2 ms |" in text and "| 1.20× (1.15×) | ≤ 1.5× | **PASS** |" in text
    missed = render(run_with(console(9.6)))
    assert "| console keystroke round trip p50, WebSocket vs virsh console | 1.60× | ≤ 1.5× | **MISS** |" in missed


def test_a_failed_console_run_shows_no_figure_and_a_later_run_keeps_it_failed():
    failed = run_with(None, "Traceback ...\nRuntimeError: WebSocketSession: no echo of b'a' in 10.0 s")
    text = render(failed)
    assert "| console | **FAILED**: no figure (the error is below) | | **FAILED** |" in text
    assert "## 8. Console" not in text and "## `console` FAILED" in text
    later = copy.deepcopy(run_with(console(7.2)))
    del later["console"], later["measured"]["console"]
    merged = merge(later, failed)
    assert "console" in merged["errors"] and "console" not in merged

"""BENCHMARKS.md never shows a figure the current code cannot reproduce (issue 10):
a section that fails in a run is shown FAILED with its error, not an older figure;
a section not run keeps the date and commit it was measured at."""
from __future__ import annotations

import copy
import json
from pathlib import Path

from tests.bench.report import render
from tests.bench.run import merge, previous_results

ROOT = Path(__file__).resolve().parents[3]


def current() -> dict:
    results = previous_results(ROOT / "BENCHMARKS.md")
    assert results is not None
    # The rules are checked on create and scheduler; the figures are today's if the file lacks them.
    for name in ("create", "scheduler"):
        results.setdefault(name, {"note": "placeholder"})
    return results


def this_run(previous: dict, failed: str, measured: str) -> dict:
    """A run that measured one section and failed another, at commit abc1234."""
    machine = {**previous["machine"], "commit": "abc1234", "date_utc": "2030-01-01 00:00 UTC"}
    return {"machine": machine, "command": "make bench", "quick": False,
            measured: copy.deepcopy(previous[measured]),
            "errors": {failed: "Traceback ...\nRuntimeError: no host fits vm0036"},
            "measured": {name: {"date_utc": "2030-01-01 00:00 UTC", "commit": "abc1234", "quick": False,
                                **({"failed": True} if name == failed else {})} for name in (failed, measured)},
            "background": {}, "seconds": {}}


def test_a_failed_section_shows_failed_not_the_previous_figure():
    previous = current()
    merged = merge(this_run(previous, "create", "scheduler"), previous)
    assert "create" not in merged and "create" in merged["errors"]
    text = render(merged)
    assert "| create | **FAILED**: no figure (the error is below) | | **FAILED** |" in text
    assert "## `create` FAILED" in text and "no host fits vm0036" in text
    assert "create→running vs virsh create" not in text and "## 1. create" not in text  # no old figure
    assert "| create | 2030-01-01 00:00 UTC | abc1234 |" in text and "**FAILED** (this run" in text
    # Read back by a later run that does not re-run it: still failed, with its provenance.
    again = merge(this_run(previous, "fs", "scheduler"), json.loads(json.dumps(merged)))
    assert "create" in again["errors"] and "create" not in again
    assert again["measured"]["create"]["commit"] == "abc1234" and again["measured"]["create"]["failed"]
    assert "**FAILED** (kept from the previous BENCHMARKS.md" in render(again)


def test_a_section_not_run_keeps_its_date_and_commit():
    previous = current()
    merged = merge(this_run(previous, "create", "scheduler"), previous)
    kept = [name for name in ("api", "fs", "exporter", "migration") if name in previous]
    assert kept
    for name in kept:
        assert merged[name] == previous[name]
        assert merged["measured"][name]["kept_from_previous_run"] is True
        assert merged["measured"][name]["commit"] != "abc1234"
    assert merged["measured"]["scheduler"]["commit"] == "abc1234"

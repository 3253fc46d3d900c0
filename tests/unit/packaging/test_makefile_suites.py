"""`make test` runs tests/unit on both CPUs, then every other suite in one pytest run
that names them (SUITES_BUT_UNIT): pytest's --ignore does not drop a testpaths entry,
so a suite added to pyproject.toml's testpaths and not to the Makefile would never run
in CI, and naming tests/unit there would run the unit tests twice."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_make_test_runs_every_testpath_once():
    testpaths = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]["testpaths"]
    match = re.search(r"^SUITES_BUT_UNIT := (.+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, "the Makefile names the suites that are not tests/unit"
    named = match.group(1).split()
    assert "tests/unit" not in named
    assert sorted(named + ["tests/unit"]) == sorted(testpaths)

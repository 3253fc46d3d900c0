"""`make test` runs tests/unit on both CPUs, then every other suite in one pytest run
that names them (SUITES_BUT_UNIT): pytest's --ignore does not drop a testpaths entry,
so a suite added to pyproject.toml's testpaths and not to the Makefile would never run
in CI, and naming tests/unit there would run the unit tests twice. UNIT_SERIAL: unit
tests kept out of the two-process run (schemathesis gives every API operation's test the
same node id, and pytest-xdist runs such items once) and run in the second one. Then
bench-quick and soak-quick side by side."""
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


def test_the_conformance_tests_run_in_one_process_and_only_once():
    makefile = (ROOT / "Makefile").read_text()
    serial = re.search(r"^UNIT_SERIAL := (.+)$", makefile, re.MULTILINE)
    assert serial, "the Makefile names the unit tests that run in one process"
    assert "tests/unit/appliance/api/test_openapi_conformance.py" in serial.group(1).split()
    recipe = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert "-n 2 --dist loadfile tests/unit $(FS_ON_TEST_DRIVER) --ignore=$(UNIT_SERIAL)" in recipe
    assert '-m "not slow" $(UNIT_SERIAL) $(SUITES_BUT_UNIT)' in recipe


def test_make_test_runs_every_bench_section_and_the_soak():
    """bench-quick's sections on guests in one job, the others (scale among them) then soak-quick in
    the other, side by side (make -j2): --skip and --only of one list, so every section runs once."""
    makefile = (ROOT / "Makefile").read_text()

    def recipe(target: str) -> str:
        return makefile.split(f"\n{target}: ", 1)[1].split("\n\n", 1)[0]

    assert re.search(r"^\t\$\(MAKE\) -j2 [^\n]*\bbench-quick-guests bench-quick-cpu-then-soak$", recipe("test"),
                     re.MULTILINE), recipe("test")
    sections = re.search(r"^CPU_ONLY_QUICK := (\S+)$", makefile, re.MULTILINE)
    assert sections and "scale" in sections.group(1).split(","), "scale runs beside the guests' sections"
    assert "-m tests.bench.run --quick --no-write --skip $(CPU_ONLY_QUICK)" in recipe("bench-quick-guests")
    both = recipe("bench-quick-cpu-then-soak")
    assert "-m tests.bench.run --quick --only $(CPU_ONLY_QUICK) --no-write || failed=1" in both
    assert "-m tests.soak.run --quick --no-write || failed=1" in both
    assert both.rstrip().endswith("exit $$failed")


def test_the_fs_files_on_the_test_driver_run_once_and_those_on_guests_one_at_a_time():
    """tests/fs's files but those marked integration (a real serve, TCG guests) run in the unit
    tests' two-process run, and the second run ignores exactly them."""
    makefile = (ROOT / "Makefile").read_text()
    real = re.search(r"^FS_REAL_SERVE := (.+)$", makefile, re.MULTILINE)
    assert real, "the Makefile names tests/fs's files on a real serve"
    assert "FS_ON_TEST_DRIVER := $(filter-out $(FS_REAL_SERVE),$(wildcard tests/fs/test_*.py))" in makefile
    marked = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "fs").glob("test_*.py")
                    if "mark.integration" in p.read_text())
    assert sorted(real.group(1).split()) == marked
    recipe = makefile.split("\ntest: ", 1)[1].split("\n\n", 1)[0]
    assert '$(SUITES_BUT_UNIT) $(addprefix --ignore=,$(FS_ON_TEST_DRIVER))' in recipe

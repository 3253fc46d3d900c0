"""The .deb's Python dependencies are pinned (packaging/deb/constraints.txt, written by
packaging/deb/lock.py): the file pins every package pyproject.toml's dependencies pull
in, within pyproject.toml's own ranges, at the versions the tests run with (`make venv`
installs with it too), and packaging/debian/rules hands it to dh_virtualenv's pip."""
from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[3]
CONSTRAINTS = ROOT / "packaging" / "deb" / "constraints.txt"


def lock_module():
    spec = importlib.util.spec_from_file_location("deb_lock", ROOT / "packaging" / "deb" / "lock.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        if line and not line.startswith("#"):
            name, sep, version = line.partition("==")
            assert sep and version and " " not in line, f"not name==version: {line!r}"
            found[name] = version
    return found


def test_every_dependency_is_pinned_within_pyproject_s_ranges():
    lock = lock_module()
    pinned = pins()
    needed = lock.closure(lock.project_requirements())
    assert sorted(set(needed) - set(pinned)) == [], "unpinned: regenerate with packaging/deb/lock.py"
    for requirement in lock.project_requirements():
        version = pinned[lock.canonical(requirement.name)]
        assert requirement.specifier.contains(version, prereleases=True), (requirement, version)


def test_the_pins_are_what_the_tests_run_with():
    """What lock.py writes from this environment is the file: the .deb ships what was tested."""
    result = subprocess.run([sys.executable,
                             str(ROOT / "packaging" / "deb" / "lock.py")],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout == CONSTRAINTS.read_text(), (
        "packaging/deb/constraints.txt differs from this venv: "
        ".venv/bin/python packaging/deb/lock.py > packaging/deb/constraints.txt")


def test_the_package_build_installs_with_the_pins():
    """rules, as make would run it (dry run): dh_virtualenv's pip takes the file as
    --constraint, and its pip is the pinned one."""
    done = subprocess.run(["make", "-n", "-f", "packaging/debian/rules", "override_dh_virtualenv"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    commands = done.stdout.replace("\\\n", " ").splitlines()  # continued lines joined
    line = next(text for text in commands if text.lstrip().startswith("dh_virtualenv"))
    assert f'--extra-pip-arg "--constraint={CONSTRAINTS}"' in line
    assert f'--upgrade-pip-to "{pins()["pip"]}"' in line and "--upgrade-pip " not in line
    assert Requirement("pyfuse3==3.5.0").specifier.contains(pins()["pyfuse3"])

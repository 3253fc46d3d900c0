"""The .deb's Python dependencies, pinned: packaging/deb/constraints.txt, which
packaging/debian/rules hands to every pip call of dh_virtualenv (--constraint), so
that two builds of one commit install the same versions, whatever PyPI has since.

    .venv/bin/python packaging/deb/lock.py > packaging/deb/constraints.txt

writes, from the environment it runs in (the one the tests passed in: `make venv`),
the version of every package pyproject.toml's [project] dependencies pull in, their
own dependencies too (markers evaluated here: Python 3.11 on Linux, Debian 12's),
one `name==version` a line. tests/unit/packaging/test_deb_lock.py checks that the
file covers that closure and meets pyproject.toml's own ranges.
"""
from __future__ import annotations

import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
HEADER = """\
# The .deb's Python dependencies, pinned (packaging/deb/lock.py wrote this; rules passes
# it to dh_virtualenv's pip as --constraint). Regenerate after a dependency change:
#   .venv/bin/python packaging/deb/lock.py > packaging/deb/constraints.txt
"""


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def project_requirements() -> list[Requirement]:
    with open(ROOT / "pyproject.toml", "rb") as source:
        return [Requirement(text) for text in tomllib.load(source)["project"]["dependencies"]]


def closure(requirements: list[Requirement]) -> dict[str, str]:
    """Every distribution the requirements pull in, as installed here: name -> version."""
    found: dict[str, str] = {}
    todo = [r for r in requirements if r.marker is None or r.marker.evaluate()]
    while todo:
        requirement = todo.pop()
        name = canonical(requirement.name)
        if name in found:
            continue
        found[name] = metadata.version(requirement.name)
        for text in metadata.requires(requirement.name) or []:
            child = Requirement(text)
            if child.marker is None or child.marker.evaluate({"extra": ""}):
                todo.append(child)
    return found


def main() -> int:
    pins = closure(project_requirements())
    sys.stdout.write(HEADER + "".join(f"{name}=={pins[name]}\n" for name in sorted(pins)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

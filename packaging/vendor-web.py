#!/usr/bin/env python3
"""Vendor the web page's JavaScript libraries into appliance/web/vendor/ (`make web`).

Each library is a pinned version of an npm package, fetched from the npm
registry and checked against the sha512 integrity pinned below (taken from the
registry's metadata when the version was chosen) before a byte of it is
unpacked; then only the files the page loads are written, under names this
script chooses. Idempotent: a stamp file records what was unpacked, and a
second run with the same pins does nothing.

Why Python's standard library and not npm: npm is not on a fresh Debian host
(setup-host.sh would have to install Node.js for three tarballs), it would run
the packages' lifecycle scripts as root unless told not to, and it would leave
node_modules/ and a lock file to keep. Here the pins, the check and the files
taken are in one short file, and nothing from a tarball is executed.

Usage: python3 packaging/vendor-web.py [--dest appliance/web/vendor]
"""
from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import shutil
import sys
import tarfile
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

REGISTRY = "https://registry.npmjs.org"
MAX_TARBALL = 16 * 1024 * 1024  # the three are ~1.6 MB together


@dataclass(frozen=True)
class Package:
    name: str  # the npm name
    version: str
    integrity: str  # sha512-BASE64, as the registry's dist.integrity
    into: str  # the folder under vendor/
    # What to take: a path in the tarball (below package/) -> kept when it starts with one of these
    take: tuple[str, ...]

    @property
    def tarball(self) -> str:
        return f"{REGISTRY}/{self.name}/-/{self.name.split('/')[-1]}-{self.version}.tgz"


PACKAGES = (
    Package("@xterm/xterm", "6.0.0",
            "sha512-TQwDdQGtwwDt+2cgKDLn0IRaSxYu1tSUjgKarSDkUM0ZNiSRXFpjxEsvc/Zgc5kq5omJ+V0a8/kIM2WD3sMOYg==",
            "xterm", ("lib/xterm.mjs", "css/xterm.css", "LICENSE")),
    Package("@xterm/addon-fit", "0.11.0",
            "sha512-jYcgT6xtVYhnhgxh3QgYDnnNMYTcf8ElbxxFzX0IZo+vabQqSPAjC3c1wJrKB5E19VwQei89QCiZZP86DCPF7g==",
            "xterm-addon-fit", ("lib/addon-fit.mjs", "LICENSE")),
    # noVNC ships its ES modules (core/, and the pako it imports from vendor/pako/).
    Package("@novnc/novnc", "1.7.0",
            "sha512-ucEJOx4T2avIRCleodk7YobZj5O2Ga2AeLfQ69A/yjG9HHba2+PDgwSkN3FttrmG+70ZGx21sElNFouK13RzyA==",
            "novnc", ("core/", "vendor/pako/", "LICENSE.txt")),
)
# The file types the page's server allowlists (appliance/api/web.py); anything else is skipped.
KEPT_SUFFIXES = (".js", ".mjs", ".css", ".txt", "LICENSE")


def stamp_of(packages: tuple[Package, ...]) -> str:
    return json.dumps([[p.name, p.version, p.integrity] for p in packages]) + "\n"


def fetch(package: Package) -> bytes:
    with urllib.request.urlopen(package.tarball, timeout=60) as answer:  # noqa: S310 (a fixed https URL)
        data = answer.read(MAX_TARBALL + 1)
    if len(data) > MAX_TARBALL:
        raise SystemExit(f"vendor-web: {package.tarball} is over {MAX_TARBALL} bytes")
    algorithm, _, expected = package.integrity.partition("-")
    actual = base64.b64encode(hashlib.new(algorithm, data).digest()).decode()
    if actual != expected:
        raise SystemExit(f"vendor-web: {package.name}@{package.version}: integrity mismatch "
                         f"(pinned {package.integrity}, got {algorithm}-{actual}); "
                         "nothing unpacked")
    return data


def wanted(package: Package, member: tarfile.TarInfo) -> PurePosixPath | None:
    """The member's path below package/ when it is a regular file the page needs; None
    otherwise (links, devices, absolute paths, `..`, files not taken)."""
    if not member.isfile():
        return None
    path = PurePosixPath(member.name)
    if (path.is_absolute() or ".." in path.parts or len(path.parts) < 2
            or path.parts[0] != "package"):
        return None
    inner = PurePosixPath(*path.parts[1:])
    text = str(inner)
    if not any(text == t or (t.endswith("/") and text.startswith(t)) for t in package.take):
        return None
    if not text.endswith(KEPT_SUFFIXES):
        return None
    return inner


def unpack(package: Package, data: bytes, dest: Path) -> int:
    target = dest / package.into
    if target.exists():
        shutil.rmtree(target)
    count = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        for member in archive:
            inner = wanted(package, member)
            if inner is None:
                continue
            source = archive.extractfile(member)
            if source is None:  # not for a regular file, which wanted() made sure it is
                continue
            out = target / inner
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_bytes(source.read())
            out.chmod(0o644)
            count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parent.parent / "appliance" / "web" / "vendor"
    parser.add_argument("--dest", type=Path, default=default)
    args = parser.parse_args(argv)
    dest: Path = args.dest
    stamp = dest / ".stamp"
    if stamp.exists() and stamp.read_text() == stamp_of(PACKAGES):
        stamp.touch()  # newer than this script for make, whose rule depends on it
        print(f"vendor-web: {dest} is up to date")
        return 0
    dest.mkdir(parents=True, exist_ok=True)
    stamp.unlink(missing_ok=True)
    # Every tarball is fetched and checked before anything is unpacked.
    tarballs = [(package, fetch(package)) for package in PACKAGES]
    for package, data in tarballs:
        count = unpack(package, data, dest)
        print(f"vendor-web: {package.name}@{package.version}: "
              f"{count} files in {dest / package.into}")
    stamp.write_text(stamp_of(PACKAGES))
    return 0


if __name__ == "__main__":
    sys.exit(main())

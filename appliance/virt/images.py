"""Disk images: checked with `qemu-img info`, overlays made with `qemu-img create`.

A raw file is only taken as a disk image when it looks like one (a boot
sector, a GPT header or an ISO9660 volume): qemu-img calls *any* file raw, and
an image store that accepts a text file as a disk helps nobody.
"""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

from appliance.errors import Failed, Invalid

FORMATS = ("qcow2", "raw", "vmdk", "vdi", "vhdx", "vpc", "qed")


def _run(args: list[str], what: str) -> str:
    try:
        result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except FileNotFoundError:
        raise Failed("qemu-img is not installed (apt-get install qemu-utils)") from None
    if result.returncode != 0:
        raise Failed(f"{what}: {result.stderr.strip() or result.stdout.strip()}")
    return result.stdout


def info(path: str | Path) -> dict:
    """qemu-img's view of a file; --force-share so a running VM's disk can be read."""
    try:
        out = subprocess.run(
            ["qemu-img", "info", "--output=json", "--force-share", str(path)],
            capture_output=True, text=True, timeout=60,
        )
    except FileNotFoundError:
        raise Failed("qemu-img is not installed (apt-get install qemu-utils)") from None
    if out.returncode != 0:
        raise Invalid(f"not a readable disk image: {out.stderr.strip()}", "image")
    return json.loads(out.stdout)


def _looks_like_raw_disk(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(1024)
        f.seek(32769)
        iso = f.read(5)
    return head[510:512] == b"\x55\xaa" or head[512:520] == b"EFI PART" or iso == b"CD001"


def check(path: str | Path) -> dict:
    """Return {format, virtual_size, actual_size} or raise Invalid."""
    path = Path(path)
    details = info(path)
    fmt = details.get("format")
    if fmt not in FORMATS:
        raise Invalid(f"unsupported image format {fmt!r}; use one of {', '.join(FORMATS)}", "image")
    if fmt == "raw" and not _looks_like_raw_disk(path):
        raise Invalid("not a disk image: no boot sector, partition table or ISO9660 volume", "image")
    if details.get("backing-filename"):
        raise Invalid("an image must stand alone (it has a backing file)", "image")
    return {
        "format": fmt,
        "virtual_size": int(details.get("virtual-size", 0)),
        "actual_size": int(details.get("actual-size", 0)),
    }


def create_overlay(base: str | Path, base_format: str, dest: str | Path, size_bytes: int | None = None) -> None:
    args = ["qemu-img", "create", "-q", "-f", "qcow2", "-b", str(base), "-F", base_format, str(dest)]
    if size_bytes:
        args.append(str(size_bytes))
    _run(args, "creating the root disk")


def create_blank(dest: str | Path, size_mib: int) -> None:
    _run(["qemu-img", "create", "-q", "-f", "qcow2", str(dest), f"{size_mib}M"], "creating a disk")


def create_blank_bytes(dest: str | Path, size_bytes: int) -> None:
    _run(["qemu-img", "create", "-q", "-f", "qcow2", str(dest), str(size_bytes)], "creating a disk")


def supports_direct_io(directory: str | Path) -> bool:
    """cache='none' (needed for safe live migration) requires O_DIRECT, which tmpfs lacks."""
    probe = Path(directory) / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_CREAT | os.O_RDWR | os.O_DIRECT, 0o600)
    except OSError:
        return False
    os.close(fd)
    probe.unlink(missing_ok=True)
    return True

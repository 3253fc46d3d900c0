"""The files of a domain being adopted: checked before anything opens them, and
made the VM's disks (referenced in place, or copied into the home).

QEMU and the appliance run as root, so a path read from a stranger's XML is
treated as hostile: resolved (symlinks, `..`), a regular file, of the format
the domain declares (read from its own bytes), and every file of its qcow2
backing chain resolved and checked the same way (headers read here, without
qemu opening anything). Referenced in place, every one of them must lie under
a folder the admin allowed (config `adopt_disk_dirs`) and the disk must be
qcow2 (the appliance keeps its disks as qcow2: it grows and snapshots them).
Copied (`--copy-disks`), qemu-img flattens the checked chain into a new
standalone qcow2 in the VM's folder; nothing of the source is changed.
"""
from __future__ import annotations

import dataclasses
import os
import stat
from collections.abc import Callable
from pathlib import Path

from appliance import paths
from appliance.errors import Failed, Invalid
from appliance.virt import images
from appliance.virt.adopt_xml import DiskFile
from appliance.virt.disk_copy import follow_convert

MAX_CHAIN = 16
MIB = 1 << 20


@dataclasses.dataclass
class CheckedDisk:
    name: str
    path: str  # resolved
    format: str
    virtual_size: int
    chain: list[str]  # the resolved backing files, nearest first


def _refuse(disk: DiskFile, why: str) -> Invalid:
    return Invalid(f"disk {disk.target} ({disk.path}): {why}", "domain")


def _regular(disk: DiskFile, path: str | Path) -> Path:
    real = paths.real_path(path)
    if real is None:
        raise _refuse(disk, "its path cannot be resolved")
    try:
        mode = os.stat(real).st_mode
    except OSError as err:
        raise _refuse(disk, f"cannot be read ({err.strerror})") from None
    if not stat.S_ISREG(mode):
        raise _refuse(disk, "is not a regular file")
    return real


# Never a disk's file, whatever the admin allowed: the kernel's and devices' trees.
SYSTEM_DIRS = ("/proc", "/sys", "/dev")


def _literal(disk: DiskFile, name: str, refused: tuple[str, ...]) -> Path:
    """A file as QEMU will open it: by the very name the XML or the qcow2 header holds,
    at every start. So the name itself must be the file's real path: a name that
    reaches it through a symlink or /proc/PID/root (which realpath, as root, reads as
    this namespace's /) could point elsewhere when QEMU opens it."""
    if not os.path.isabs(name):
        raise _refuse(disk, "is not named by an absolute path")
    norm = os.path.normpath(name)
    if os.path.realpath(norm) != norm:
        raise _refuse(disk, f"{name} is reached through a symbolic link or /proc; name "
                            "the file by its real path")
    if any(paths.inside(norm, folder) for folder in (*SYSTEM_DIRS, *refused)):
        raise _refuse(disk, f"{name} lies in a folder no disk may come from")
    return _regular(disk, norm)


def _format(disk: DiskFile, path: Path) -> str:
    try:
        return images.detect_format(path)
    except Invalid as err:
        raise _refuse(disk, err.reason) from None


def _allowed(path: Path, allowed: list[str]) -> bool:
    return any(paths.inside(path, folder) for folder in allowed)


def check(disk: DiskFile, allowed: list[str], copy: bool, refused: tuple[str, ...] = (),
          max_bytes: int | None = None) -> CheckedDisk:
    """The disk, checked for an adoption (Invalid naming the disk and the reason).
    `refused`: folders never taken, even copied (the appliance's home: other VMs'
    disks); `max_bytes`: the largest virtual size (the image limit)."""
    real = _literal(disk, disk.path, refused)
    fmt = _format(disk, real)
    if fmt != disk.format:
        raise _refuse(disk, f"the domain declares it {disk.format} but it is {fmt}")
    where = ", ".join(allowed) or "none"
    if not copy:
        if fmt != "qcow2":
            raise _refuse(disk, "a raw disk is not referenced in place (the appliance keeps "
                                "its disks as qcow2); --copy-disks converts it into the home")
        if not _allowed(real, allowed):
            raise _refuse(disk, f"lies outside the folders the appliance may use in place "
                                f"({where}); --copy-disks copies it into the home")
    chain: list[str] = []
    current, current_fmt = real, fmt
    while current_fmt == "qcow2":
        try:
            backing, backing_fmt = images.qcow2_backing(current)
        except Invalid as err:
            raise _refuse(disk, err.reason) from None
        if backing is None:
            break
        if len(chain) >= MAX_CHAIN:
            raise _refuse(disk, f"its backing chain is longer than {MAX_CHAIN} files")
        if "://" in backing or backing.startswith("json:"):
            raise _refuse(disk, "its backing file is not a local file")
        if not copy and not os.path.isabs(backing):
            # QEMU resolves it beside the path it opens: the VM's folder, not this file's
            raise _refuse(disk, "its backing file is named by a relative path; name it "
                                "absolutely (qemu-img rebase -u -b ABSOLUTE) or --copy-disks")
        nxt = _literal(disk, os.path.join(current.parent, backing), refused)
        if not copy and not _allowed(nxt, allowed):
            raise _refuse(disk, f"its backing file lies outside the folders the appliance may "
                                f"use in place ({where}); --copy-disks copies it into the home")
        detected = _format(disk, nxt)
        if backing_fmt not in (None, detected):
            raise _refuse(disk, f"its backing file is declared {backing_fmt} but is {detected}")
        chain.append(str(nxt))
        current, current_fmt = nxt, detected
    size = images.qcow2_virtual_size(real) if fmt == "qcow2" else os.stat(real).st_size
    if size < MIB:
        raise _refuse(disk, "is smaller than 1 MiB")
    if max_bytes is not None and size > max_bytes:
        raise _refuse(disk, f"is larger ({size} bytes) than an image may be ({max_bytes})")
    return CheckedDisk(disk.name, str(real), fmt, size, chain)


def place(disk: dict, dest: Path, copy: bool,
          progress: Callable[[float], None] | None = None,
          cancelled: Callable[[], bool] | None = None) -> None:
    """The VM's file for an adopted disk (a record of check()): a symlink to the
    checked file (in place), or a standalone qcow2 copy. The file is checked
    again first: it may have changed since the request."""
    again = check(DiskFile(disk["name"], disk["path"], disk["format"], disk["name"]),
                  disk["allowed"], copy, tuple(disk.get("refused", ())), disk.get("max_bytes"))
    if again.path != disk["path"] or again.chain != disk["chain"]:
        raise Failed(f"disk {disk['name']} changed since the adoption was asked for")
    dest.unlink(missing_ok=True)
    if not copy:
        os.symlink(again.path, dest)
        return
    tmp = dest.with_name(f".{dest.name}.adopt")
    tmp.unlink(missing_ok=True)
    args = ["qemu-img", "convert", "-p", "-f", again.format, "-O", "qcow2", again.path, str(tmp)]
    try:
        stopped, returncode, stderr = follow_convert(args, progress, cancelled,
                                                     images.CONVERT_TIMEOUT)
        if stopped or returncode != 0:
            raise Failed(f"copying disk {disk['name']}: {stopped or stderr[-300:]}")
        tmp.replace(dest)
    finally:
        tmp.unlink(missing_ok=True)

"""A verified backup chain's files, held open, and what qemu-img does with them.

A backup target is a directory others may write (an NFS share), and the
appliance and qemu run as root. Checking a file by its name and then giving
qemu that name leaves a gap (the `qemu-img check` of a long chain takes
minutes) in which a writer of the share can rename another file into its
place or replace it by a symlink: one whose backing file is another VM's
disk or a host file, which qemu would follow and copy into the restored VM.
So appliance/backup_chain.open_chain opens every file of the chain once
(O_NOFOLLOW), checks its header through that descriptor, and qemu-img is
given the same open files (/dev/fd/N, passed to it) in a `json:` description
that states the whole chain itself: each layer's backing is the layer below,
the full's is null, so what a header names is never opened.

The backup handler's side of the same rule (pin_folder, open_written_file):
after libvirt's job it works only in the folder it made, found again by its
inode, on files opened in it without following symlinks; and a restored disk
is never larger than the VM's spec (check_restored_size).
"""
from __future__ import annotations

import json
import logging
import os
import stat
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from appliance.errors import Failed
from appliance.virt import disk_copy, images

log = logging.getLogger("vmctl.backup_chain")

CHECK_TIMEOUT = 3600
FLATTEN_TIMEOUT = images.CONVERT_TIMEOUT


class PinnedChain:
    """The manifests of a chain (full first) and, per disk name, the open
    files of its layers (full first)."""

    def __init__(self, manifests: list[dict], fds: dict[str, list[int]]):
        self.manifests = manifests
        self.fds = fds

    def __enter__(self) -> PinnedChain:
        return self

    def __exit__(self, kind: type[BaseException] | None, err: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        for fds in self.fds.values():
            for fd in fds:
                os.close(fd)
            fds.clear()

    def node(self, disk: str, depth: int | None = None) -> dict:
        """qemu's description of `disk` down from layer `depth` (default: the top):
        every file an open descriptor, every backing stated, the full's none."""
        fds = self.fds[disk]
        top = len(fds) - 1 if depth is None else depth
        node: dict | None = None
        for fd in fds[:top + 1]:
            node = {"driver": "qcow2", "file": {"driver": "file", "filename": f"/dev/fd/{fd}"},
                    "backing": node}
        assert node is not None  # noqa: S101 - open_chain opens at least the full's file
        return node

    def source(self, disk: str, depth: int | None = None) -> str:
        return "json:" + json.dumps(self.node(disk, depth))

    def qemu_img_check(self, disk: str, depth: int) -> bool:
        """`qemu-img check` of one layer alone (its backing is not opened)."""
        layer = {**self.node(disk, depth), "backing": None}
        try:
            out = subprocess.run(  # noqa: S603 - qemu-img from PATH, no shell, format pinned, held files
                ["qemu-img", "check", "-q", "-f", "qcow2",  # noqa: S607
                 "json:" + json.dumps(layer)],
                capture_output=True, text=True, timeout=CHECK_TIMEOUT, pass_fds=self.fds[disk],
            )
        except FileNotFoundError:
            raise Failed("qemu-img is not installed (apt-get install qemu-utils)") from None
        if out.returncode != 0:
            log.warning("qemu-img check of %s (layer %d): %s", disk, depth,
                        (out.stderr or out.stdout).strip()[:2000])
        return out.returncode == 0

    def flatten(self, disk: str, dest: Path, progress: Callable[[float], None] | None = None,
                cancelled: Callable[[], bool] | None = None) -> dict:
        """One standalone qcow2 at `dest` with the guest-visible data of `disk`'s
        chain. `progress(fraction)` is told how far qemu-img is; `cancelled()` is
        polled and stops the copy (dest removed, Failed("cancelled") raised).
        Returns images.check(dest)."""
        args = ["qemu-img", "convert", "-p", "-f", "qcow2", "-O", "qcow2",
                self.source(disk), str(dest)]
        stopped, returncode, stderr = disk_copy.follow_convert(
            args, progress, cancelled, FLATTEN_TIMEOUT, pass_fds=tuple(self.fds[disk]))
        if stopped or returncode != 0:
            dest.unlink(missing_ok=True)
            if stopped == "cancelled":
                raise Failed("cancelled")
            log.warning("qemu-img convert of %s: %s", disk, stderr[:2000])
            raise Failed(f"flattening the backup chain {stopped or 'failed'}")
        if progress:
            progress(1.0)
        return images.check(dest)


def folder_identity(folder: Path) -> tuple[int, int]:
    """(device, inode) of a folder the appliance just made, to find it again (pin_folder)."""
    status = os.lstat(folder)
    return status.st_dev, status.st_ino


def pin_folder(folder: Path, identity: tuple[int, int]) -> int:
    """The folder opened, if it is still the one the appliance made: a writer of
    the target may rename the appliance's folders away and plant its own tree
    (symlinks to host files in it) under the same names while a job runs.
    Failed("... changed under the backup") otherwise."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        fd = None
    if fd is not None:
        status = os.fstat(fd)
        if (status.st_dev, status.st_ino) == identity:
            return fd
        os.close(fd)
    raise Failed(f"the backup target changed under the backup: {folder.name} is not the "
                 "folder the appliance made (renamed, replaced or a symlink)")


def open_written_file(dir_fd: int, name: str) -> int:
    """A file a backup job wrote into a pinned folder: a regular file, not followed."""
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    except OSError as err:
        raise Failed(f"{name} of the backup cannot be opened ({err.strerror})") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise Failed(f"{name} of the backup is not a regular file")
    return fd


def check_restored_size(disk: str, checked: dict, allowed: int, path: Path) -> None:
    """A flattened disk may be no larger than the VM's spec says (the size its
    quota counted; a migration makes disks of that size): a target's writer may
    have grown a qcow2. Failed (the file removed) otherwise."""
    if int(checked["virtual_size"]) > allowed:
        path.unlink(missing_ok=True)
        raise Failed(f"disk {disk} of the backup is larger than the VM's spec allows "
                     f"({checked['virtual_size']} > {allowed} bytes)")

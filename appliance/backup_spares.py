"""The next incremental's target files, made ahead.

Right after a good backup (the backup's follow-up, after its operation is
recorded succeeded: off the timed path of the next backup), the files an
incremental on it would be written into are made in
TARGET/vm-appliance/VM_ID/BACKUP_ID.next/: one qcow2 per disk, of the disk's
size at the backup, backed by the backup's own file by relative path (as
backup_chain.create_targets makes them). They are made in BACKUP_ID.next-making/
and renamed, so a .next folder is complete.

The next backup on that parent moves them into its partial folder instead of
running qemu-img there (two qemu-img processes and their start, ~10-30 ms
beside the guest agent's freeze under TCG, measured on the benchmark's guest),
when each is still what was made: a regular file (not followed), a qcow2 of
the disk's live size (a disk grown since gets new files) backed by exactly
the parent's file, and nothing else is in the folder. Otherwise they are
removed and the job's files made afresh: a spare is an optimisation, never a
source of trust. Unused spares go with the next good backup of the VM into
the target (remove_spares) and with their backup (backup_chain.remove_backup:
deleted or pruned).

Durability is the job's, as for files made at backup time: QEMU fdatasyncs the
target files before libvirt's job ends and the partial folder is fsynced with
the manifest before it is renamed.
"""
from __future__ import annotations

import logging
import os
import shutil
import stat
from pathlib import Path

from appliance import backup_chain, pinned_chain
from appliance.errors import Failed, Invalid
from appliance.virt import images

log = logging.getLogger("vmctl.backup_spares")

_SUFFIXES = (backup_chain.SPARE, backup_chain.SPARE_MAKING)


def spare_folder(target_path: str | Path, vm_id: str, backup_id: str) -> Path:
    return backup_chain.vm_folder(target_path, vm_id) / (backup_id + backup_chain.SPARE)


def _vm_folder(target_path: str | Path, vm_id: str) -> Path | None:
    """The VM's folder in the target if it and its parent are real folders (a
    symlink planted in the target is never followed), else None."""
    base = backup_chain.vm_folder(target_path, vm_id)
    for folder in (base.parent, base):
        try:
            if not stat.S_ISDIR(os.lstat(folder).st_mode):
                return None
        except FileNotFoundError:
            return None
    return base


_remove = backup_chain.remove_tree


def remove_spares(target_path: str | Path, vm_id: str) -> None:
    """Every spare (and half-made one) of the VM in the target; symlinks not followed."""
    base = _vm_folder(target_path, vm_id)
    if base is None:
        return
    for entry in list(os.scandir(base)):
        for suffix in _SUFFIXES:
            stem = entry.name.removesuffix(suffix)
            if stem != entry.name and backup_chain.BACKUP_ID.fullmatch(stem):
                _remove(base / entry.name)
                break


def make_spare(target_path: str | Path, vm_id: str, backup_id: str,
               sizes: dict[str, int]) -> None:
    """The files of an incremental on backup_id (file name -> virtual size), in
    its .next folder; none is left if its backup went away meanwhile."""
    base = backup_chain.make_vm_folder(target_path, vm_id)  # real folders, or Failed
    making = base / (backup_id + backup_chain.SPARE_MAKING)
    final = base / (backup_id + backup_chain.SPARE)
    _remove(making)
    os.mkdir(making, 0o700)
    try:
        held = pinned_chain.pin_folder(making, pinned_chain.folder_identity(making))
        try:
            backup_chain.create_targets(held, sizes, backup_id)
        finally:
            os.close(held)
        _remove(final)
        os.rename(making, final)
    except BaseException:
        shutil.rmtree(making, ignore_errors=True)
        raise
    if not (base / backup_id).is_dir():  # deleted while its spare was made
        _remove(final)


def prepare_next(target_path: str | Path, vm_id: str, backup_id: str, sizes: dict[str, int],
                 can_follow: bool) -> None:
    """After a good backup: any older spare of the VM removed, and the files of an
    incremental on backup_id made when one can follow it (its chain is shorter
    than full_every). A failure is logged: the next backup makes its files itself."""
    try:
        remove_spares(target_path, vm_id)
        if can_follow:
            make_spare(target_path, vm_id, backup_id, sizes)
    except (OSError, Failed) as err:
        log.warning("making the next backup's files beside %s: %s", backup_id, err)


def _usable(src: int, parent_id: str, sizes: dict[str, int]) -> dict[str, tuple[int, int]]:
    """{file name: (device, inode)} of the spare's files when each is what an
    incremental on parent_id of these sizes needs; Failed or Invalid otherwise."""
    if sorted(os.listdir(src)) != sorted(sizes):
        raise Failed("other files than the disks'")
    found = {}
    for name, size in sizes.items():
        fd = pinned_chain.open_written_file(src, name)
        try:
            if backup_chain.qcow2_virtual_size(fd, name) != size:
                raise Failed(f"{name} is not of the disk's size")
            backing = images.qcow2_backing(os.dup(fd))
            if backing != (backup_chain.parent_reference(parent_id, name), "qcow2"):
                raise Failed(f"{name} is not backed by the parent's file")
            status = os.fstat(fd)
            found[name] = (status.st_dev, status.st_ino)
        finally:
            os.close(fd)
    return found


def take_spare(target_path: str | Path, vm_id: str, parent_id: str, dest: int,
               sizes: dict[str, int]) -> bool:
    """The spare made on parent_id moved into the folder held open as `dest`
    (file name -> live virtual size each): True; False (and the spare removed,
    if there was one) when there is none or it is not what is needed."""
    base = _vm_folder(target_path, vm_id)
    if base is None:
        return False
    folder = base / (parent_id + backup_chain.SPARE)
    try:
        src = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    except OSError as err:  # a symlink or not a folder: not ours
        log.info("spare files %s: %s", folder.name, err.strerror)
        _remove(folder)
        return False
    try:
        found = _usable(src, parent_id, sizes)
        for name, identity in found.items():
            os.rename(name, name, src_dir_fd=src, dst_dir_fd=dest)
            moved = os.stat(name, dir_fd=dest, follow_symlinks=False)
            if (moved.st_dev, moved.st_ino) != identity or not stat.S_ISREG(moved.st_mode):
                raise Failed(f"{name} changed while it was moved")
    except (OSError, Failed, Invalid) as err:
        log.info("spare files %s not used: %s", folder.name, err)
        for name in sizes:  # whatever was moved already: the caller makes them all
            try:
                os.unlink(name, dir_fd=dest)
            except FileNotFoundError:
                pass
        return False
    finally:
        os.close(src)
        _remove(folder)
    return True

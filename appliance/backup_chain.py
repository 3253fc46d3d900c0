"""A backup chain on a target: the folder layout, manifest.json, the chain's
verification, and flattening a chain into one standalone qcow2.

Shared by the backup handler (part B: writes backups, restores in place) and
restore-into-new / clone (part C). The layout is the contract:

    TARGET/vm-appliance/VM_ID/BACKUP_ID/{manifest.json, root.qcow2, disk-NAME.qcow2}

A backup is written into `BACKUP_ID.partial/` and renamed once its manifest is
written and fsynced: a folder without `.partial` and with a manifest is
complete. An incremental's qcow2 has its backing file set (`qemu-img rebase
-u`) to its parent's file by the RELATIVE path `../PARENT_ID/FILE`.

A target is a host directory that others may write (an NFS share), and the
appliance and qemu run as root: nothing read from a target is trusted. Every
name in a manifest is checked against the layout, folders and files must not
be symlinks, and each file's backing file is read from its qcow2 header
(appliance/virt/images.py, no qemu involved) and must be exactly the expected
relative parent path before qemu-img opens the file (qemu follows backing
files on its own). The checked files are held open and qemu-img is given
those, with the chain stated (appliance/pinned_chain.py): never the names again.
"""
from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import stat
import subprocess
import time
from pathlib import Path

from appliance.durable import fsync_dir
from appliance.errors import Conflict, Failed, Invalid
from appliance.model.states import BackupKind
from appliance.model.values import DNS_LABEL
from appliance.pinned_chain import PinnedChain
from appliance.virt import images

log = logging.getLogger("vmctl.backup_chain")

MANIFEST_FORMAT = "vm-appliance-backup/1"
MANIFEST = "manifest.json"
TREE = "vm-appliance"  # the appliance's folder inside a target
PARTIAL = ".partial"
# the next incremental's files, made ahead beside a good backup (backup_spares.py)
SPARE = ".next"
SPARE_MAKING = ".next-making"
MAX_MANIFEST_BYTES = 1 << 20
# A chain is at most full_every (1..100) incrementals on a full: a longer one is a
# loop or a target's writer's doing (each link is a manifest read, each disk of it a
# file held open by the controller while it is copied).
MAX_CHAIN = 128
MAX_CHAIN_FILES = 512

BACKUP_ID = re.compile(r"\d{8}T\d{6}Z-[0-9a-f]{6}")
_DISK_NAME = re.compile(DNS_LABEL)


class BrokenChain(Conflict):
    """A backup chain that cannot be restored; `reason` says where it breaks."""

    def __init__(self, reason: str):
        super().__init__(f"the backup chain is broken: {reason}", "backup")


# -- names and places ---------------------------------------------------------------------
def new_backup_id(now: float | None = None) -> str:
    """Sortable by time: "YYYYMMDDTHHMMSSZ-xxxxxx"."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(time.time() if now is None else now))
    return f"{stamp}-{secrets.token_hex(3)}"


def disk_file(disk_name: str) -> str:
    """The file a disk is written to in a backup folder ("root" -> root.qcow2)."""
    if disk_name == "root":
        return "root.qcow2"
    if not _DISK_NAME.fullmatch(disk_name):
        raise Invalid(f"not a disk name: {disk_name[:64]!r}", "disks")
    return f"disk-{disk_name}.qcow2"


def vm_folder(target_path: str | Path, vm_id: str) -> Path:
    return Path(target_path) / TREE / vm_id


def backup_folder(target_path: str | Path, vm_id: str, backup_id: str) -> Path:
    return vm_folder(target_path, vm_id) / backup_id


def partial_folder(target_path: str | Path, vm_id: str, backup_id: str) -> Path:
    return vm_folder(target_path, vm_id) / (backup_id + PARTIAL)


def parent_reference(parent_id: str, file_name: str) -> str:
    """What an incremental's backing file is: its parent's file, relative."""
    return f"../{parent_id}/{file_name}"


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def make_vm_folder(target_path: str | Path, vm_id: str) -> Path:
    """TARGET/vm-appliance/VM_ID, made if missing (0700): each level must be a
    real folder, never a symlink someone planted in the target (libvirt writes
    there as root)."""
    folder = Path(target_path)
    for part in (TREE, vm_id):
        folder = folder / part
        if not _real_dir(folder):
            try:
                os.mkdir(folder, 0o700)
            except FileExistsError:
                pass
            if not _real_dir(folder):
                raise Failed(f"{folder} in the backup target is not a folder (a symlink?)")
    return folder


def remove_backup(target_path: str | Path, vm_id: str, backup_id: str) -> None:
    """A backup's folder, its .partial one and the next incremental's files made
    ahead on it (.next, backup_spares.py), if there; symlinks are not followed."""
    if not BACKUP_ID.fullmatch(backup_id):
        raise Invalid("not a backup id", "backup")
    base = vm_folder(target_path, vm_id)
    if not (_real_dir(base.parent) and _real_dir(base)):
        return
    for suffix in ("", PARTIAL, SPARE, SPARE_MAKING):
        remove_tree(base / (backup_id + suffix))


def _raise_unless_gone(_function: object, _path: str, exc_info: tuple) -> None:
    if not isinstance(exc_info[1], FileNotFoundError):
        raise exc_info[1]


def remove_tree(folder: Path) -> None:
    """A folder of the target removed, a symlink unlinked (never followed); what
    went meanwhile is fine (a backup's next files are made and renamed beside it
    by the controller's follow-up while a delete may run: backup_spares.py)."""
    try:
        if _real_dir(folder):
            shutil.rmtree(folder, onerror=_raise_unless_gone)
        elif folder.is_symlink():
            folder.unlink()
    except FileNotFoundError:
        pass


# -- manifest.json ------------------------------------------------------------------------
def write_manifest(folder: Path, manifest: dict, dir_fd: int | None = None) -> None:
    """manifest.json written, fsynced (file and folder), so that the rename of
    the folder that follows never publishes a backup without it. With `dir_fd`
    (the folder held open: pin_folder) the names are taken in it, not the path."""
    data = json.dumps(manifest, indent=2, sort_keys=True).encode()
    tmp = MANIFEST + ".tmp"
    held = os.open(folder, os.O_RDONLY | os.O_DIRECTORY) if dir_fd is None else dir_fd
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600,
                     dir_fd=held)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, MANIFEST, src_dir_fd=held, dst_dir_fd=held)
        os.fsync(held)
    finally:
        if dir_fd is None:
            os.close(held)


def publish(partial: Path, final: Path) -> None:
    """ID.partial -> ID, durably: the rename is what makes a backup complete."""
    os.rename(partial, final)
    fsync_dir(final.parent)


def _check_manifest(manifest: object, backup_id: str) -> dict:
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise BrokenChain(f"{backup_id}: manifest.json is not a {MANIFEST_FORMAT} manifest")
    if manifest.get("id") != backup_id:
        raise BrokenChain(f"{backup_id}: its manifest names another backup")
    kind, parent = manifest.get("kind"), manifest.get("parent")
    if kind == BackupKind.FULL:
        if parent is not None:
            raise BrokenChain(f"{backup_id}: a full backup with a parent")
    elif kind == BackupKind.INCREMENTAL:
        if not isinstance(parent, str) or not BACKUP_ID.fullmatch(parent):
            raise BrokenChain(f"{backup_id}: an incremental backup without a valid parent")
    else:
        raise BrokenChain(f"{backup_id}: unknown kind in its manifest")
    disks = manifest.get("disks")
    if not isinstance(disks, list) or not disks or len(disks) > 64:
        raise BrokenChain(f"{backup_id}: its manifest lists no disks")
    for disk in disks:
        name = disk.get("name") if isinstance(disk, dict) else None
        if not isinstance(name, str) or not (name == "root" or _DISK_NAME.fullmatch(name)):
            raise BrokenChain(f"{backup_id}: its manifest names a disk wrongly")
        if disk.get("file") != disk_file(name):
            raise BrokenChain(f"{backup_id}: its manifest names a file outside the layout")
        if not (_count(disk.get("virtual_size")) and _count(disk.get("bytes"))):
            raise BrokenChain(f"{backup_id}: its manifest gives a disk's size wrongly")
    for field in ("created", "finished"):
        value = manifest.get(field)
        if value is not None and not (_count(value) or isinstance(value, float) and value >= 0):
            raise BrokenChain(f"{backup_id}: its manifest's {field} is not a time")
    if not isinstance(manifest.get("quiesced", False), bool):
        raise BrokenChain(f"{backup_id}: its manifest's quiesced is not true or false")
    return manifest


def _count(value: object) -> bool:
    """A byte count a manifest may state: a whole number, 0 to 2**63 - 1 (SQLite's)."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 1 << 63


def _no_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")  # NaN, Infinity: Python's json takes them


def read_manifest(folder: Path) -> dict:
    """A complete backup's manifest, checked against the layout (BrokenChain if not)."""
    backup_id = folder.name
    if not BACKUP_ID.fullmatch(backup_id):
        raise BrokenChain(f"{backup_id[:64]!r} is not a backup folder")
    try:
        if not stat.S_ISDIR(os.lstat(folder).st_mode):
            raise BrokenChain(f"{backup_id}: not a folder")
        fd = os.open(folder / MANIFEST, os.O_RDONLY | os.O_NOFOLLOW)
    except FileNotFoundError:
        raise BrokenChain(f"{backup_id}: missing (or its manifest.json is)") from None
    except OSError as err:
        raise BrokenChain(f"{backup_id}: manifest.json cannot be read ({err.strerror})") from None
    try:
        raw = os.read(fd, MAX_MANIFEST_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > MAX_MANIFEST_BYTES:
        raise BrokenChain(f"{backup_id}: manifest.json is too large")
    try:
        manifest = json.loads(raw, parse_constant=_no_constant)
    except ValueError:
        raise BrokenChain(f"{backup_id}: manifest.json is not JSON") from None
    return _check_manifest(manifest, backup_id)


# -- verification -------------------------------------------------------------------------
def chain_manifests(target_path: str | Path, vm_id: str, backup_id: str) -> list[dict]:
    """The manifests from the chain's full backup to `backup_id`, following
    each manifest's parent; BrokenChain where one is missing or inconsistent."""
    base = vm_folder(target_path, vm_id)
    chain: list[dict] = []
    current: str | None = backup_id
    while current is not None:
        if len(chain) >= MAX_CHAIN or any(m["id"] == current for m in chain):
            raise BrokenChain(f"{backup_id}: its chain loops or is too long")
        manifest = read_manifest(base / current)
        chain.append(manifest)
        current = manifest["parent"]
    chain.reverse()
    full_id = chain[0]["id"]
    for manifest in chain:
        if manifest.get("chain", full_id) != full_id:
            raise BrokenChain(f"{manifest['id']}: its manifest names another chain")
    return chain


def _open_file(folder: Path, disk: dict, parent_id: str | None) -> int:
    """The disk's file opened (never through a symlink) and its header checked
    through that descriptor: qemu is later given the same open file, so a file
    renamed or linked into its place after the check is never what it reads."""
    path = folder / disk["file"]
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        raise BrokenChain(f"{folder.name}/{disk['file']} is missing") from None
    except OSError:  # ELOOP: a symlink
        raise BrokenChain(f"{folder.name}/{disk['file']} is not a regular file") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise BrokenChain(f"{folder.name}/{disk['file']} is not a regular file")
        try:
            backing, backing_format = images.qcow2_backing(f"/proc/self/fd/{fd}")
        except Invalid as err:
            raise BrokenChain(f"{folder.name}/{disk['file']}: {err.reason}") from None
        expected = parent_reference(parent_id, disk["file"]) if parent_id else None
        if backing != expected or (expected and backing_format != "qcow2"):
            raise BrokenChain(
                f"{folder.name}/{disk['file']} does not apply on "
                f"{expected or 'nothing (a full backup stands alone)'}"
            )
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_chain(target_path: str | Path, vm_id: str, backup_id: str,
               check_images: bool = True) -> PinnedChain:
    """The chain up to `backup_id` checked: every manifest present and
    consistent, every disk of the backup present in each of its ancestors,
    every file's backing header exactly its parent's relative path (a full's
    none), then (check_images) `qemu-img check` of each file, full first.
    Returns the manifests (full first) with every file held open (close it:
    a context manager); raises BrokenChain with the reason."""
    chain = chain_manifests(target_path, vm_id, backup_id)
    wanted = sorted({disk["name"] for disk in chain[-1]["disks"]})
    base = vm_folder(target_path, vm_id)
    if len(chain) * len(wanted) > MAX_CHAIN_FILES:
        raise BrokenChain(f"{backup_id}: {len(chain)} backups of {len(wanted)} disks are "
                          f"more files than a chain holds ({MAX_CHAIN_FILES})")
    pinned = PinnedChain(chain, {name: [] for name in wanted})
    try:
        for manifest in chain:
            disks = {disk["name"]: disk for disk in manifest["disks"]}
            missing = set(wanted) - disks.keys()
            if missing:
                raise BrokenChain(f"{manifest['id']} has no disk {sorted(missing)[0]}")
            for name in wanted:
                pinned.fds[name].append(
                    _open_file(base / manifest["id"], disks[name], manifest["parent"]))
        if check_images:
            for name in wanted:
                for depth, manifest in enumerate(chain):
                    if not pinned.qemu_img_check(name, depth):
                        raise BrokenChain(
                            f"{manifest['id']}/{disk_file(name)} fails qemu-img check")
    except BaseException:
        pinned.close()
        raise
    return pinned


def verify_chain(target_path: str | Path, vm_id: str, backup_id: str,
                 check_images: bool = True) -> list[dict]:
    """open_chain's checks alone: the manifests, full first (BrokenChain if not)."""
    with open_chain(target_path, vm_id, backup_id, check_images) as pinned:
        return pinned.manifests


def chain_file(target_path: str | Path, vm_id: str, backup_id: str, disk_name: str) -> Path:
    """The top file of a disk in a (verified) backup: qemu reads the chain from it."""
    return backup_folder(target_path, vm_id, backup_id) / disk_file(disk_name)


def qcow2_virtual_size(fd: int, name: str) -> int:
    """The disk size a qcow2 file's header states (bytes 24-31), without qemu."""
    header = os.pread(fd, 32, 0)
    if not header.startswith(images.QCOW2_MAGIC) or len(header) < 32:
        raise Invalid(f"{name} is not a qcow2 file", "backup")
    return int.from_bytes(header[24:32], "big")


def create_targets(dir_fd: int, sizes: dict[str, int], parent_id: str | None) -> None:
    """A backup's target files (file name -> virtual size), made in its pinned
    folder before the job (libvirt's REUSE_EXTERNAL): an incremental's with its
    parent's file as backing file by the relative path from the start, so no
    rebase follows the job, and libvirt creates nothing inside QEMU (its
    blockdev-create jobs were ~100 ms of an incremental's backupBegin under TCG).
    Each made O_EXCL and not followed, given to qemu-img as /dev/fd/N; all at once."""
    fds: dict[str, int] = {}
    try:
        for name in sizes:
            fds[name] = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
                                | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
        jobs = []
        for name, size in sizes.items():
            backing = []
            if parent_id:
                backing = ["-u", "-b", parent_reference(parent_id, name), "-F", "qcow2"]
            argv = ["qemu-img", "create", "-q", "-f", "qcow2", *backing,
                    f"/dev/fd/{fds[name]}", str(size)]
            jobs.append((f"making {name}", fds[name], argv))
        _qemu_imgs(jobs)
    finally:
        for fd in fds.values():
            os.close(fd)


def rebase_onto_parent(files: dict[int, str], parent_id: str) -> None:
    """An incremental's files (held open: fd -> file name), whose backing file
    libvirt set to the live disk (a host with storage of its own: the job made
    them there), each made its parent's file by the relative path (`qemu-img
    rebase -u`: only the header changes; nothing is opened through it), given to
    qemu-img as /dev/fd/N; all at once."""
    jobs = []
    for fd, name in files.items():
        reference = parent_reference(parent_id, name)
        argv = ["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", reference, "-F", "qcow2",
                f"/dev/fd/{fd}"]
        jobs.append((f"rebasing {name} onto {reference}", fd, argv))
    _qemu_imgs(jobs)


def _qemu_imgs(jobs: list[tuple[str, int, list[str]]]) -> None:
    """(what, held fd, argv) each: the qemu-imgs run at once (a qemu-img's start is
    most of its time); all are waited for, and the first failure is raised."""
    started: list[tuple[str, subprocess.Popen[str]]] = []
    try:
        for what, fd, argv in jobs:
            started.append((what, subprocess.Popen(  # noqa: S603 - no shell, held files
                argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                pass_fds=(fd,))))
    except FileNotFoundError:
        _reap(started)
        raise Failed("qemu-img is not installed (apt-get install qemu-utils)") from None
    except BaseException:
        _reap(started)
        raise
    failures = []
    for what, proc in started:
        try:
            _out, err = proc.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            _reap(started)
            raise Failed(f"{what}: qemu-img did not end") from None
        if proc.returncode != 0:
            failures.append(f"{what}: {err.strip()[:300]}")
    if failures:
        raise Failed(failures[0])


def _reap(started: list[tuple[str, subprocess.Popen[str]]]) -> None:
    for _what, proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()

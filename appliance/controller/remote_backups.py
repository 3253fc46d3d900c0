"""Backups and in-place restores of a VM on a host with storage of its own
(appliance/virt/storage.py: the host does not see the appliance's folders;
its VM files are a dir pool per VM, reached through libvirt's storage API).

A backup: libvirt's push job writes each disk's file into the VM's own folder
on that host (a path the host sees), named `.backup-ID-root.qcow2` so that it
can never be taken for one of the VM's disks; the controller then downloads
each file into the target's ID.partial/ through the storage API, and the
backup handler goes on as for any host (rebase, manifest, publish). The
host's copies are deleted after a good backup, after a failed or cancelled
one, before a re-run of an interrupted one, and by the crash recovery at
controller start. The checkpoints (dirty bitmaps) live in the host's qcow2s:
incrementals work the same.

An in-place restore: every disk is flattened into a local staging file first
(chain check, flatten, cancel: all of it before the host's disks are
touched), then each is uploaded over the VM's volume.
"""
from __future__ import annotations

import errno
import logging
import os
import shutil
from pathlib import Path

from appliance import backup_chain
from appliance.controller.context import Context, HostLink
from appliance.controller.files import VmFiles
from appliance.errors import Failed
from appliance.virt.driver import DriverError

log = logging.getLogger("appliance.controller")

HOST_COPY_PREFIX = ".backup-"


def place_in(folder_fd: int, name: str, source: Path) -> None:
    """`source` (a file of the appliance's) as a NEW file `name` in the folder open as
    `folder_fd`: renamed there when on the same file system (a rename replaces
    a planted link itself, never what it points to), else copied into a file
    made with O_EXCL | O_NOFOLLOW."""
    try:
        os.rename(source, name, dst_dir_fd=folder_fd)
        return
    except OSError as err:
        if err.errno != errno.EXDEV:
            raise
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    fd = os.open(name, flags, 0o600, dir_fd=folder_fd)
    with open(fd, "wb") as out, open(source, "rb") as src:
        shutil.copyfileobj(src, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())


def host_copy_prefix(backup_id: str) -> str:
    if not backup_chain.BACKUP_ID.fullmatch(backup_id):
        raise ValueError(f"not a backup id: {backup_id[:64]!r}")
    return f"{HOST_COPY_PREFIX}{backup_id}-"


class HostCopies:
    """A backup's files on the VM's host: written there by the job, downloaded, deleted."""

    def __init__(self, ctx: Context, files: VmFiles, link: HostLink, row: dict, op: dict):
        self.ctx = ctx
        self.link = link
        self.row = row
        self.op = op
        self.plan = files.plan(row)

    def job_files(self, backup_id: str, disks: list[str]) -> dict[str, Path]:
        """Where the job writes each disk: beside the VM's disks, on the host."""
        prefix = host_copy_prefix(backup_id)
        return {name: self.plan.vm_dir / (prefix + backup_chain.disk_file(name))
                for name in disks}

    def download(self, job_files: dict[str, Path], local: dict[str, Path], held: int) -> None:
        """Each of the host's files into its place in the partial folder (`held`,
        pinned by its descriptor); the operation's bytes go on from the job's to
        the download's.

        A target may be writable by others (an NFS share): a path into it is
        never opened for writing. Each file is downloaded into the VM's own
        staging folder in the appliance's home, then moved (or copied) into the
        pinned folder as a new file, never through a link planted there."""
        store = self.ctx.store
        total = int(store.get_operation(self.op["id"]).get("bytes_total") or 0)
        done = 0
        self.plan.vm_dir.mkdir(parents=True, exist_ok=True)
        for name, remote in job_files.items():
            if self.ctx.op_cancelled(self.op):
                raise Failed("cancelled")
            # not the job's own name: on a host that shares this machine's paths (the
            # fake, local hosts) that would be the job's file itself
            staging = self.plan.vm_dir / (".download" + remote.name)
            staging.unlink(missing_ok=True)
            try:
                if not self.link.driver.download_volume(self.plan, remote.name, staging):
                    raise Failed(f"the backup job's file {remote.name} is missing on host "
                                 f"{self.link.name}")
                done += staging.stat().st_size
                place_in(held, local[name].name, staging)
            finally:
                staging.unlink(missing_ok=True)
            total = max(total, done)
            store.update_operation(self.op["id"], bytes_done=done, bytes_total=total,
                                   progress=min(99, 100 * done // (total or 1)))

    def remove(self, backup_id: str | None = None) -> None:
        """This backup's files on the host (every backup's: None); a failure is
        logged (the next backup of the VM removes them again)."""
        prefix = host_copy_prefix(backup_id) if backup_id else HOST_COPY_PREFIX
        try:
            removed = self.link.driver.delete_volumes(self.plan, prefix)
        except DriverError as err:
            log.warning("removing %s* of %s on %s: %s", prefix, self.row["name"],
                        self.link.name, err)
            return
        if removed:
            log.info("removed %s of %s on %s", ", ".join(removed), self.row["name"],
                     self.link.name)


def remove_interrupted(ctx: Context, files: VmFiles, backup: dict) -> None:
    """At controller start: an interrupted backup's copies on its VM's host,
    when that host keeps its own storage and answers (else the next backup's
    run removes them)."""
    vm = ctx.store.get_vm_by_id(backup["vm_id"])
    if vm is None or not vm["host"] or not files.own_storage(vm["host"]):
        return
    try:
        link = ctx.links.connected(vm["host"])
    except Failed as err:
        log.info("backup %s: its copies on %s stay for now: %s", backup["id"], vm["host"], err)
        return
    HostCopies(ctx, files, link, vm, {"id": backup.get("operation")}).remove(backup["id"])


def upload_restored(link: HostLink, files: VmFiles, row: dict,
                    written: list[tuple[Path, Path]]) -> None:
    """An in-place restore's staged files, every one flattened already, each
    uploaded over the VM's volume on its host; the staging files go."""
    plan = files.plan(row)
    try:
        for tmp, dest in written:
            link.driver.upload_volume(plan, dest.name, tmp)
    finally:
        for tmp, _dest in written:
            tmp.unlink(missing_ok=True)

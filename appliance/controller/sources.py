"""A new VM's disks from its source, before its first definition (the create
handler's first step for a clone or a restore into a new VM: service/restores.py
records the source in the CREATE operation's params).

- {"backup": ID}: the backup's chain is verified again, with `qemu-img check`
  (appliance/backup_chain.py), then each disk's chain is flattened into one
  standalone qcow2.
- {"clone": SOURCE_ID, "snapshot": None}: a stopped source's files are copied
  with `qemu-img convert` (disk_copy.py); a running source's by a push backup
  job without a checkpoint (the guest is not paused and the source's backup
  chain is left as it is).
- {"clone": SOURCE_ID, "snapshot": S}: `qemu-img convert -l snapshot.name=S`,
  with -U while the source runs (safe for a snapshot: disk_copy.py says why).
- {"adopt": {...}}: an adopted libvirt domain's disks, checked again, each a
  symlink to its file in place or a standalone qcow2 copy (virt/adopt_disks.py);
  the define that follows takes the domain over by its UUID (the VM's id).

The source VM must not change under the copy. Its operations are serialized
by the controller's busy claims (one operation of a VM in a worker at a
time; the resync and the evacuation leave a busy VM alone), so the copy
claims the source too, for as long as it reads it: a stop, a migration, a
revert or a delete of the source waits until the copy is done, and the copy
waits for the source's operation under way. The copy is not the source's
operation: it is the new VM's create, which the new VM's record, events and
failure belong to, and the source's queue stays free for the operations
that come after it.

Disks are made whole in the new VM's folder (written beside their name,
renamed), or, for a host with storage of its own, in a staging folder and
uploaded through its driver. VmFiles.ensure_defined and the driver's
ensure_vm_files keep a root disk that exists, so the image is not overlaid.
Once all are in place the operation's params say so ("filled"): a create run
again after a crash does not copy again; one that crashed mid-copy starts
the copy over (never a mix of two moments of a running source).

A cancel (service/operations.py: a CREATE with a source is cancellable while
it copies) is polled while the copy waits for its source, between disks, in
each qemu-img run (killed) and in the live copy's job (aborted): the partial
files go, the operation ends cancelled, and the DELETE the cancel queued
removes the new VM once the copy has let go.
"""
from __future__ import annotations

import functools
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

from appliance import backup_chain, pinned_chain
from appliance.controller.context import Context
from appliance.controller.files import VmFiles
from appliance.errors import Failed
from appliance.model import DesiredState
from appliance.virt import adopt_disks, disk_copy
from appliance.virt.domain import DomainPlan
from appliance.virt.driver import Guest

log = logging.getLogger("appliance.controller")

HOLD_SECONDS = 6 * 3600.0  # how long a copy waits for its source's operation (a migration)
PROGRESS_SECONDS = 1.0  # how often the operation's bytes_done is written
POLL_SECONDS = 0.5
STAGING = ".incoming"


class Progress:
    """bytes_done / bytes_total of the create operation, written at most once a second."""

    def __init__(self, ctx: Context, op_id: str, total: int):
        self.ctx, self.op_id, self.total = ctx, op_id, max(0, total)
        self.done = 0
        self._next = 0.0
        self.ctx.store.update_operation(op_id, bytes_done=0, bytes_total=self.total)

    def at(self, done: int, force: bool = False) -> None:
        self.done = min(max(0, done), self.total)
        now = self.ctx.monotonic()
        if force or now >= self._next:
            self._next = now + PROGRESS_SECONDS
            percent = int(99 * self.done / self.total) if self.total else 0
            self.ctx.store.update_operation(self.op_id, bytes_done=self.done, progress=percent)

    def part(self, start: int, size: int) -> Callable[[float], None]:
        """A callback for one disk's copy of `size` bytes, after `start` bytes."""
        return lambda fraction: self.at(start + int(fraction * size))


class NewVmSources:
    def __init__(self, ctx: Context, files: VmFiles):
        self.ctx = ctx
        self.files = files

    def fill(self, op: dict, row: dict) -> None:
        """The new VM's disks from op's source (nothing for a plain create)."""
        source = op["params"].get("source")
        if not source or self.ctx.store.get_operation(op["id"])["params"].get("filled"):
            return
        cancelled = functools.partial(self.ctx.op_cancelled, op)
        _stop_if(cancelled)  # cancelled while it waited, or before a restart
        plan = self.files.plan(row)
        own = self.files.own_storage(row["host"])
        staging = plan.vm_dir / STAGING if own else plan.vm_dir
        staging.mkdir(parents=True, exist_ok=True)
        wanted = {"root": staging / plan.root_disk.name} | {
            d["name"]: staging / plan.disk_path(d["name"]).name for d in row["spec"]["disks"]}
        for path in wanted.values():  # a copy cut short is started over, whole
            path.unlink(missing_ok=True)
        try:
            if "backup" in source:
                sizes = [size for _path, size in self.files.writable_disks(row, plan)]
                names = ["root", *(d["name"] for d in row["spec"]["disks"])]
                self._from_backup(op, str(source["backup"]), wanted,
                                  dict(zip(names, sizes, strict=True)), cancelled)
            elif "clone" in source:
                self._from_vm(op, str(source["clone"]), source.get("snapshot"), wanted,
                              cancelled)
            elif "adopt" in source:
                self._adopted(op, source["adopt"], wanted, cancelled)
            else:
                raise Failed("the operation names no source the appliance knows")
            _stop_if(cancelled)  # a copy that ended as the cancel came: dropped all the same
            if own:
                link = self.ctx.links.connected(row["host"])
                for path in wanted.values():
                    if path.exists():
                        link.driver.upload_volume(plan, path.name, path)
        except BaseException:
            for path in wanted.values():
                path.unlink(missing_ok=True)
            raise
        finally:
            if own:
                shutil.rmtree(staging, ignore_errors=True)
        params = self.ctx.store.get_operation(op["id"])["params"]
        self.ctx.store.update_operation(op["id"], params={**params, "filled": True})

    # -- from a backup ------------------------------------------------------------------------
    def _from_backup(self, op: dict, backup_id: str, wanted: dict[str, Path],
                     limits: dict[str, int], cancelled: Callable[[], bool]) -> None:
        store = self.ctx.store
        backup = store.get_backup(backup_id)
        target = store.get_backup_target(backup["target"])
        with backup_chain.open_chain(target["path"], backup["vm_id"], backup_id) as chain:
            disks = [d for d in chain.manifests[-1]["disks"] if d["name"] in wanted]
            sizes = [int(d.get("virtual_size") or 0) for d in disks]
            progress = Progress(self.ctx, op["id"], sum(sizes))
            start = 0
            for disk, size in zip(disks, sizes, strict=True):
                dest = wanted[disk["name"]]
                tmp = dest.with_name(f".{dest.name}.restore")
                checked = chain.flatten(disk["name"], tmp, progress.part(start, size), cancelled)
                pinned_chain.check_restored_size(disk["name"], checked, limits[disk["name"]], tmp)
                tmp.replace(dest)
                start += size
        progress.at(start, force=True)

    # -- an adopted domain's files (service/adoption.py) ---------------------------------------
    def _adopted(self, op: dict, adopt: dict, wanted: dict[str, Path],
                 cancelled: Callable[[], bool]) -> None:
        """Each disk checked again, then a symlink to it in place, or a standalone copy."""
        copy = bool(adopt.get("copy"))
        disks = [d for d in adopt["disks"] if d["name"] in wanted]
        sizes = [Path(d["path"]).stat().st_size if copy else 0 for d in disks]
        progress = Progress(self.ctx, op["id"], sum(sizes))
        start = 0
        for disk, size in zip(disks, sizes, strict=True):
            _stop_if(cancelled)
            adopt_disks.place(disk, wanted[disk["name"]], copy, progress.part(start, size),
                              cancelled)
            start += size
        progress.at(start, force=True)

    # -- from another VM ----------------------------------------------------------------------
    def _hold(self, vm_id: str, cancelled: Callable[[], bool]) -> None:
        """The source's busy claim (see the module's doc), waiting for its operation."""
        deadline = self.ctx.monotonic() + HOLD_SECONDS
        while not self.ctx.busy.claim(vm_id):
            _stop_if(cancelled)
            if self.ctx.monotonic() > deadline:
                raise Failed("the source VM stayed busy with another operation")
            self.ctx.sleep(POLL_SECONDS)

    def _from_vm(self, op: dict, source_id: str, snapshot: str | None,
                 wanted: dict[str, Path], cancelled: Callable[[], bool]) -> None:
        self._hold(source_id, cancelled)
        try:
            source = self.ctx.store.get_vm_by_id(source_id)
            if source is None or source["desired_state"] == DesiredState.DELETED:
                raise Failed("the source VM was deleted before it could be copied")
            link = self.ctx.links.connected(source["host"])
            guest = link.lookup(source_id)
            running = guest is not None and guest.is_active()
            plan = self.files.plan(source)
            disks = [(name, path, size) for name, (path, size)
                     in zip(["root", *(d["name"] for d in source["spec"]["disks"])],
                            self.files.writable_disks(source, plan), strict=True)
                     if name in wanted]
            progress = Progress(self.ctx, op["id"], sum(size for _n, _p, size in disks))
            if running and snapshot is None:
                assert guest is not None  # noqa: S101 - running says so
                self._live_copy(guest, disks, wanted, progress, cancelled)
            else:
                self._file_copy(source, plan, disks, wanted, snapshot, running, progress,
                                cancelled)
        finally:
            self.ctx.busy.release(source_id)

    def _file_copy(self, source: dict, plan: DomainPlan, disks: list[tuple[str, Path, int]],
                   wanted: dict[str, Path], snapshot: str | None, running: bool,
                   progress: Progress, cancelled: Callable[[], bool]) -> None:
        image = self.ctx.store.get_image(source["spec"]["image"])
        remote = self.files.own_storage(source["host"])
        link = self.ctx.links.connected(source["host"])
        start = 0
        for name, path, size in disks:
            _stop_if(cancelled)
            local = path
            if remote:  # the host's file, fetched through its driver
                if running:
                    raise Failed(f"{source['name']} runs on a host with storage of its own: "
                                 "stop it to copy its disks")
                local = wanted[name].with_name(f".{path.name}.download")
                if not link.driver.download_volume(plan, path.name, local):
                    raise Failed(f"{path.name} of {source['name']} is missing on {source['host']}")
            try:
                backing = (image["path"], image["format"]) if name == "root" else None
                disk_copy.check_source(local, backing)
                disk_copy.convert(local, wanted[name], snapshot=snapshot,
                                  force_share=running, progress=progress.part(start, size),
                                  cancelled=cancelled)
            finally:
                if local is not path:
                    local.unlink(missing_ok=True)
            start += size
        progress.at(start, force=True)

    def _live_copy(self, guest: Guest, disks: list[tuple[str, Path, int]],
                   wanted: dict[str, Path], progress: Progress,
                   cancelled: Callable[[], bool]) -> None:
        """A push backup of the running source without a checkpoint, into the new
        VM's files: a full copy of each disk (its backing image's data included)."""
        files = {name: wanted[name].with_name(f".{wanted[name].name}.live")
                 for name, _path, _size in disks}
        live = {name: path for name, path, _size in disks}
        for path in files.values():
            path.unlink(missing_ok=True)
        try:
            guest.backup_begin(files, incremental=None, checkpoint=None)
            try:
                while not guest.backup_finished():
                    _stop_if(cancelled)  # the except below aborts the job
                    done = guest.job_progress()
                    if done is not None:
                        progress.at(done[0])
                    self.ctx.sleep(POLL_SECONDS)
            except BaseException:
                _abort_quietly(guest)
                raise
            for name, path in files.items():
                # libvirt names the live disk as the copy's backing file; a full
                # copy holds every cluster the guest sees, so it is dropped
                disk_copy.detach_backing(path, (str(live[name]), "qcow2"))
                path.replace(wanted[name])
        finally:
            for path in files.values():
                path.unlink(missing_ok=True)
        progress.at(progress.total, force=True)


def _stop_if(cancelled: Callable[[], bool]) -> None:
    """Failed("cancelled") once the operation is cancelled: the copy's cleanup runs on
    the way out, the runner ends the operation cancelled, and the new VM's DELETE
    (service/operations.py) removes what is left of it."""
    if cancelled():
        raise Failed("cancelled")


def _abort_quietly(guest: Guest) -> None:
    """Stop a copy's job that failed or was interrupted (gone already is fine)."""
    try:
        guest.abort_job()
    except Exception as err:  # noqa: BLE001 - the first failure is the one reported
        log.info("aborting the copy's job: %s", err)

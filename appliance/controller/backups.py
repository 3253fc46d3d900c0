"""The backup handler: one libvirt push backup into a target, as a task that
says what to undo (Nova's conductor tasks), and the clean-up at start of the
backups a crash cut short.

A backup's record is written first (running), then each disk is written by
libvirt into TARGET/vm-appliance/VM_ID/ID.partial/, the job's progress goes
into the operation (bytes done of total), into target files the appliance made
(an incremental's with its parent's files as backing files, by relative path;
on a host with storage of its own libvirt makes them there, and they are rebased
after), manifest.json is written and fsynced, and the folder is renamed to ID:
only then is the backup good. A
failure or a cancel aborts the job, removes the partial folder and marks the
record failed. A stopped VM is started paused for the job (libvirt backs up
running domains only) and destroyed after; the observer leaves a busy VM alone.

An incremental is made only onto the VM's newest good backup in the target,
when its checkpoint is on the domain (or can be redefined from the disks'
bitmaps) and sound, the VM's disks are the same, and the chain is shorter than
the policy's full_every; otherwise a full one, and the event says why. After
a good backup the domain keeps only its newest checkpoint (every bitmap costs
on every write) and the retention of the VM's policy runs (backup_retention):
both after the operation is recorded succeeded (a follow-up: the caller does
not wait for them; the VM stays claimed until they end), and both redone by
the next backup if a stop of the appliance cut them short. A VM started paused
for the job has them done before it is destroyed (libvirt deletes the bitmaps
of an active domain only). Then the next incremental's files are made
(backup_spares), off its timed path.
"""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Any

from appliance import backup_chain, backup_retention, backup_spares, pinned_chain
from appliance.controller import backup_job, quiesce
from appliance.controller.backup_job import drop_checkpoints
from appliance.controller.backup_recovery import recover_interrupted
from appliance.controller.context import Context
from appliance.controller.files import VmFiles
from appliance.controller.operations import FollowUp, Handler, LeftAsItWas
from appliance.controller.remote_backups import HostCopies
from appliance.errors import Failed
from appliance.model.backup_policy import DEFAULT_FULL_EVERY
from appliance.model.states import BackupKind, BackupStatus
from appliance.service.backups import backup_policy
from appliance.virt.driver import DriverError, Guest, IncrementalImpossible, failure_reason

log = logging.getLogger("appliance.controller")

class BackupRun:
    """One backup operation on one VM."""

    def __init__(self, ctx: Context, files: VmFiles, op: dict, row: dict):
        self.ctx = ctx
        self.files = files
        self.op = op
        self.row = row
        self.store = ctx.store
        self.params = dict(op["params"])
        self.target = self.store.get_backup_target(self.params["target"])
        self.policy = backup_policy(self.store, row)
        self.backup_id = ""
        self.parent: dict | None = None
        self.host_copies: HostCopies | None = None  # the VM's host keeps its own storage
        self.not_quiesced = ""  # why the guest's file systems were not frozen ("" if they were)
        self.thawing: quiesce.Thaw | None = None  # the thaw running beside the job
        self.froze_once = False  # the agent is waited for at the first freeze only
        # the partial folder (and its identity) when the appliance makes the job's files
        self.making: tuple[Path, tuple[int, int]] | None = None
        self.sizes: dict[str, int] | None = None  # their virtual sizes, by file name

    # -- the task ----------------------------------------------------------------------
    def execute(self) -> FollowUp | LeftAsItWas | None:
        row = self.row
        target_path = self._target_path()
        link = self.ctx.links.connected(row["host"])
        if self.files.own_storage(link.name):  # the job writes there; we download
            self.host_copies = HostCopies(self.ctx, self.files, link, row, self.op)
        if self.params.get("backup"):  # a re-run after a crash
            earlier = self.store.find_backup(self.params["backup"])
            if earlier is not None and earlier["status"] == BackupStatus.GOOD:
                return None  # it was complete (recover_interrupted recorded it)
            self._forget_attempt(self.params["backup"], target_path)
        if row["observed_state"] in ("suspended", "shelved"):  # never undo either (shapes.py)
            raise Failed(f"the VM is {row['observed_state']}: no backup until it runs or stops")
        guest = link.lookup(row["id"]) or self.files.ensure_defined(row)
        backup_job.settle_earlier_job(self.ctx, guest, row["name"])
        if self.host_copies is not None:  # an interrupted backup's files on the host
            self.host_copies.remove()
        if self.ctx.op_cancelled(self.op):  # cancelled while the appliance was down
            raise Failed("cancelled")
        started_paused = bool(self.params.get("started_paused")) and guest.is_active()
        if not guest.is_active():
            guest.start_paused()  # libvirt backs up running domains only
            started_paused = True
            self._set_params(started_paused=True)
        try:
            self._backup(guest, target_path)
            if not started_paused:  # the domain runs as before: observed after the success
                return LeftAsItWas(lambda: self._housekeeping(guest))
            self._housekeeping(guest)  # while the domain is active: see the docstring
            return None
        finally:
            if started_paused:
                guest.destroy()
                self._set_params(started_paused=False)

    def _backup(self, guest: Guest, target_path: str) -> None:
        disks = ["root", *(d["name"] for d in self.row["spec"]["disks"])]
        self.parent, why_full = self._choose_parent(disks, target_path)
        self._record_start(why_full)
        partial = backup_chain.partial_folder(target_path, self.row["id"], self.backup_id)
        try:
            backup_chain.make_vm_folder(target_path, self.row["id"])
            os.mkdir(partial, 0o700)
            made = pinned_chain.folder_identity(partial)
            files = {name: partial / backup_chain.disk_file(name) for name in disks}
            job_files = (self.host_copies.job_files(self.backup_id, disks)
                         if self.host_copies else files)
            if self.host_copies is None:  # the job writes here: the appliance makes its files
                self.making = (partial, made)  # (beside the freeze: _begin_once)
            quiesced = self._begin(guest, job_files)
            if not quiesced:
                self.store.add_event("backup-not-quiesced", f"backup {self.backup_id} is "
                                     f"crash-consistent: {self.not_quiesced}", self.row,
                                     self.op["id"])
            try:
                backup_job.wait(self.ctx, guest, self.op, incremental=self.parent is not None)
            finally:
                self._thawed()
            # after the job, only the folder made above (see pin_folder), by descriptor
            held = pinned_chain.pin_folder(partial, made)
            try:
                if self.host_copies is not None:  # into the pinned folder, by descriptor too
                    self.host_copies.download(job_files, files, held)
                self._publish(partial, held, files, quiesced, target_path)
            finally:
                os.close(held)
        except BaseException as err:
            self._rollback(guest, partial, err)
            raise
        if self.host_copies is not None:
            self.host_copies.remove(self.backup_id)

    def _housekeeping(self, guest: Guest) -> None:
        """After a good backup: older checkpoints dropped, the retention applied.
        Both converge: a later backup redoes what a stop of the appliance cut short."""
        try:
            drop_checkpoints(guest, keep=self.backup_id)
        except DriverError as err:  # the backup is good; the next one cleans up
            log.warning("dropping older checkpoints of %s: %s", self.row["name"], err)
        self._prune()
        if self.sizes is not None:  # the job's files were made here: the next one's too
            chain = self.store.get_backup(self.backup_id)["chain"]
            backup_spares.prepare_next(self.target["path"], self.row["id"], self.backup_id,
                                       self.sizes, self.store.chain_length(chain) - 1
                                       < self._full_every())

    def _rollback(self, guest: Guest, partial: Path, err: BaseException) -> None:
        """Nothing of a failed or cancelled backup is kept."""
        try:
            if guest.job_running():
                guest.abort_job()
        except DriverError as abort_err:
            log.info("aborting the backup job of %s: %s", self.row["name"], abort_err)
        shutil.rmtree(partial, ignore_errors=True)
        if self.host_copies is not None:
            self.host_copies.remove(self.backup_id)
        cancelled = self.ctx.op_cancelled(self.op)
        self.store.update_backup(self.backup_id, status=BackupStatus.FAILED,
                                 error="cancelled" if cancelled else failure_reason(err),
                                 finished=self.ctx.clock())

    # -- steps -------------------------------------------------------------------------
    def _target_path(self) -> str:
        path = self.target["path"]
        if os.path.realpath(path) != path or not os.path.isdir(path):
            raise Failed(f"backup target {self.target['name']}: {path} is not a directory "
                         "(a share that is not mounted?)")
        return str(path)

    def _set_params(self, **changes: object) -> None:
        """Into the stored params, read afresh: a cancel sets its flag there meanwhile."""
        with self.store.transaction():
            current = self.store.get_operation(self.op["id"])["params"]
            current.update(changes)
            self.store.update_operation(self.op["id"], params=current)
        self.params.update(changes)

    def _forget_attempt(self, backup_id: str, target_path: str) -> None:
        found = self.store.find_backup(backup_id)
        if found is not None and found["status"] == BackupStatus.RUNNING:
            backup_chain.remove_backup(target_path, self.row["id"], backup_id)
            self.store.update_backup(backup_id, status=BackupStatus.FAILED,
                                     error="interrupted", finished=self.ctx.clock())
        self.store.add_event("backup-restarted", f"backup {backup_id} was interrupted; "
                             "starting over", self.row, self.op["id"])

    def _choose_parent(self, disks: list[str], target_path: str) -> tuple[dict | None, str | None]:
        """The backup an incremental applies on, or (None, why this one is full)."""
        if self.params.get("full"):
            return None, None
        parent = self.store.latest_good_backup(self.row["id"], self.target["name"])
        if parent is None:
            return None, None
        full_every = self._full_every()
        incrementals = self.store.chain_length(parent["chain"]) - 1
        why = None
        if [d["name"] for d in parent["disks"]] != disks:
            why = f"the VM's disks changed since backup {parent['id']}"
        elif incrementals >= full_every:
            why = f"its chain has {incrementals} incrementals (full_every {full_every})"
        elif not parent.get("checkpoint"):
            why = f"backup {parent['id']} has no checkpoint"
        else:
            try:
                backup_chain.read_manifest(
                    backup_chain.backup_folder(target_path, self.row["id"], parent["id"]))
            except backup_chain.BrokenChain as err:
                why = err.reason
        return (None, why) if why else (parent, None)

    def _full_every(self) -> int:
        return int((self.policy or {}).get("full_every") or DEFAULT_FULL_EVERY)

    def _record_start(self, why_full: str | None) -> None:
        now = self.ctx.clock()
        self.backup_id = backup_chain.new_backup_id(now)
        kind = BackupKind.INCREMENTAL if self.parent else BackupKind.FULL
        with self.store.transaction():
            self.store.insert_backup({
                "id": self.backup_id, "vm_id": self.row["id"], "vm_name": self.row["name"],
                "project": self.row["project"], "target": self.target["name"], "kind": kind,
                "parent": self.parent["id"] if self.parent else None,
                "chain": self.parent["chain"] if self.parent else self.backup_id,
                "checkpoint": self.backup_id, "status": BackupStatus.RUNNING, "disks": [],
                "size": 0, "quiesced": False, "scheduled": bool(self.params.get("scheduled")),
                "operation": self.op["id"], "error": None, "created": now, "finished": None,
            })
            self._set_params(backup=self.backup_id)
            on = f" on {self.parent['id']}" if self.parent else ""
            self.store.add_event(
                "backup-started", f"{kind} backup {self.backup_id}{on} into target "
                f"{self.target['name']}" + (f" (full: {why_full})" if why_full else ""),
                self.row, self.op["id"])

    def _make_targets(self, guest: Guest, files: dict[str, Path]) -> None:
        """The job's files, in the folder made for it (by descriptor), of the
        disks' live sizes: an incremental's backed by its parent's files, those
        made ahead on the parent (backup_spares) when they still fit."""
        if self.making is None:
            return
        sizes = guest.backup_sizes(list(files))
        self.sizes = {files[name].name: sizes[name] for name in files}
        parent = self.parent["id"] if self.parent else None
        held = pinned_chain.pin_folder(*self.making)
        try:
            if parent is None or not backup_spares.take_spare(
                    self.target["path"], self.row["id"], parent, held, self.sizes):
                backup_chain.create_targets(held, self.sizes, parent)
        finally:
            os.close(held)

    def _begin_once(self, guest: Guest, files: dict[str, Path], incremental: str | None) -> bool:
        """backupBegin, the guest's file systems frozen around it when an agent
        answers (the checkpoint is the instant the job starts). The job's files are
        made beside the freeze (quiesce.Beside): the guest stays frozen no longer
        unless making them takes longer than the agent's freeze. Quiesced?"""
        making = quiesce.Beside(lambda: self._make_targets(guest, files), self.row["name"])
        try:
            thaw, self.not_quiesced = quiesce.freeze(guest, self.row["name"],
                                                     bool(self.params.get("started_paused")),
                                                     self._agent_wait())
        except BaseException:
            making.wait()  # never leave it writing in a folder the rollback removes
            raise
        try:
            making.result()
            guest.backup_begin(files, incremental=incremental, checkpoint=self.backup_id,
                               made=self.making is not None)
        except BaseException:
            if thaw:
                guest.fs_thaw()
            raise
        if thaw:  # beside the job: joined in _backup before anything is published
            self.thawing = quiesce.Thaw(guest, self.row["name"])
        return not self.not_quiesced

    def _agent_wait(self) -> quiesce.AgentWait | None:
        """At the first freeze, if the VM started recently (quiesce.agent_wait); a full
        begun again after an impossible incremental does not wait a second time."""
        first, self.froze_once = not self.froze_once, True
        return quiesce.agent_wait(self.store.get_vm_by_id(self.row["id"]), self.ctx.clock(),
                                  self.ctx.sleep, self.ctx.monotonic) if first else None

    def _thawed(self) -> None:
        """The guest's thaw ended (quiesce.Thaw); a failure is the VM's event."""
        thawing, self.thawing = self.thawing, None
        error = thawing.join() if thawing is not None else ""
        if error:
            self.store.add_event("backup-thaw-failed", f"backup {self.backup_id}: the guest "
                                 f"agent did not thaw the file systems: {error}", self.row,
                                 self.op["id"])

    def _begin(self, guest: Guest, files: dict[str, Path]) -> bool:
        if self.parent is None:
            return self._begin_once(guest, files, None)
        try:
            return self._begin_once(guest, files, self.parent["checkpoint"])
        except IncrementalImpossible as err:
            self.parent = None
            with self.store.transaction():
                self.store.update_backup(self.backup_id, kind=BackupKind.FULL, parent=None,
                                         chain=self.backup_id)
                self.store.add_event("backup-full-instead", f"backup {self.backup_id} is a full "
                                     f"one: {err.reason}", self.row, self.op["id"])
        drop_checkpoints(guest)
        for path in files.values():
            path.unlink(missing_ok=True)
        if self.host_copies is not None:
            self.host_copies.remove(self.backup_id)
        return self._begin_once(guest, files, None)  # its files made again, without a backing file

    def _publish(self, partial: Path, held: int, files: dict[str, Path], quiesced: bool,
                 target_path: str) -> None:
        disks: list[dict[str, Any]] = []
        fds: dict[str, int] = {}
        try:
            for name, path in files.items():
                fds[name] = pinned_chain.open_written_file(held, path.name)
            if self.parent is not None and self.making is None:  # libvirt made them, there
                backup_chain.rebase_onto_parent(
                    {fd: files[name].name for name, fd in fds.items()}, self.parent["id"])
            for name, fd in fds.items():
                disks.append({"name": name, "file": files[name].name,
                              "virtual_size": backup_chain.qcow2_virtual_size(fd, files[name].name),
                              "bytes": os.fstat(fd).st_size})
        finally:
            for fd in fds.values():
                os.close(fd)
        size = sum(int(d["bytes"]) for d in disks)
        finished = self.ctx.clock()
        found = self.store.get_backup(self.backup_id)
        backup_chain.write_manifest(partial, dir_fd=held, manifest={
            "format": backup_chain.MANIFEST_FORMAT, "id": self.backup_id,
            "vm": {"id": self.row["id"], "name": self.row["name"],
                   "project": self.row["project"], "spec": self.row["spec"]},
            "kind": found["kind"], "parent": found["parent"], "chain": found["chain"],
            "checkpoint": self.backup_id, "created": found["created"], "finished": finished,
            "quiesced": quiesced, "disks": disks,
        })
        final = backup_chain.backup_folder(target_path, self.row["id"], self.backup_id)
        backup_chain.publish(partial, final)
        made = os.fstat(held)
        os.close(pinned_chain.pin_folder(final, (made.st_dev, made.st_ino)))  # renamed: ours
        with self.store.transaction():
            self.store.update_backup(self.backup_id, status=BackupStatus.GOOD, disks=disks,
                                     size=size, quiesced=quiesced, finished=finished)
            self.store.update_operation(self.op["id"], bytes_done=size)
            self.store.add_event(
                "backup-finished", f"{found['kind']} backup {self.backup_id}: {size} bytes in "
                f"{finished - found['created']:.1f} s"
                + ("" if quiesced else f" (crash-consistent: {self.not_quiesced})"),
                self.row, self.op["id"])

    def _prune(self) -> None:
        """The retention of the VM's policy, over its backups in this target."""
        if not self.policy:
            return
        backups = self.store.list_backups(vm_id=self.row["id"], target=self.target["name"])
        for backup_id in backup_retention.prune(backups, self.policy, self.ctx.clock()):
            try:
                backup_chain.remove_backup(self.target["path"], self.row["id"], backup_id)
            except OSError as err:
                log.warning("pruning backup %s: %s", backup_id, err)
                continue
            with self.store.transaction():
                self.store.delete_backup_row(backup_id)
                self.store.add_event("backup-pruned", f"backup {backup_id} removed by the "
                                     "retention policy", self.row, self.op["id"])


class Backups:
    def __init__(self, ctx: Context, files: VmFiles):
        self.ctx = ctx
        self.files = files

    def handlers(self) -> dict[str, Handler]:
        return {"backup": self.backup}

    def backup(self, op: dict, row: dict) -> FollowUp | LeftAsItWas | None:
        return BackupRun(self.ctx, self.files, op, row).execute()

    def recover_interrupted(self) -> None:
        recover_interrupted(self.ctx, self.files)

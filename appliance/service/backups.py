"""Backups of a VM: ask for one (the controller's backup handler does the
work: appliance/controller/backups.py), list them (a deleted VM's too, by its
name), show one with its folder and the chain it depends on, delete one.

A backup is a libvirt push backup into a target directory (service/
backup_targets.py), full or incremental (dirty bitmaps); its layout and
manifest are appliance/backup_chain.py's.
"""

from __future__ import annotations

from typing import Any

from appliance import backup_chain
from appliance.errors import Conflict, Failed, Invalid, NotFound
from appliance.model import DesiredState, OpKind
from appliance.model.backup_policy import effective_policy
from appliance.model.states import BackupStatus
from appliance.service.base import ServiceBase
from appliance.service.shapes import refuse_while_saved
from appliance.store import Row

BACKUP_FIELDS = frozenset({"target", "full"})


def backup_policy(store: Any, row: Row) -> dict[str, Any] | None:
    """The policy a VM is backed up by: its own, else its project's."""
    try:
        project = store.get_project(row["project"])
    except NotFound:
        project = {}
    return effective_policy(row["spec"].get("backup"), project.get("backup"))


def default_target(store: Any, row: Row, asked: str | None) -> str:
    """The target a backup goes to: the one asked for, the policy's, else the only one."""
    if asked is not None:
        store.get_backup_target(asked)  # NotFound, field target
        return asked
    policy = backup_policy(store, row)
    if policy and policy.get("target"):
        return str(store.get_backup_target(policy["target"])["name"])
    targets = store.list_backup_targets()
    if len(targets) == 1:
        return str(targets[0]["name"])
    raise Invalid("name a backup target: " + (
        "none is defined (an admin adds one: POST /v1/backup-targets)" if not targets
        else f"there are {len(targets)} and the VM's backup policy names none"), "target")


class Backups(ServiceBase):
    def _backup_dict(self, row: Row) -> dict[str, Any]:
        out = dict(row)
        try:
            target_path = self.store.get_backup_target(row["target"])["path"]
            out["path"] = str(backup_chain.backup_folder(target_path, row["vm_id"], row["id"]))
        except NotFound:
            out["path"] = None
        depends: list[str] = []
        parent = row.get("parent")
        while parent and len(depends) < backup_chain.MAX_CHAIN:
            depends.append(parent)
            found = self.store.find_backup(parent)
            parent = found.get("parent") if found else None
        out["depends_on"] = depends  # parent first, down to the chain's full
        return out

    def _visible_backup(self, backup_id: Any) -> Row:
        if not isinstance(backup_id, str) or not backup_chain.BACKUP_ID.fullmatch(backup_id):
            raise NotFound(f"no backup {str(backup_id)[:64]!r}", "backup")
        row = self.store.get_backup(backup_id)
        if not self._sees(row["project"]):
            raise NotFound(f"no backup {backup_id!r}", "backup")
        return row

    # -- reading ----------------------------------------------------------------------
    def list_backups(self, vm: str | None = None, all_projects: bool = False,
                     vm_must_exist: bool = False) -> list[dict[str, Any]]:
        """Newest first; `vm` by name, so a deleted VM's backups are found too.
        `vm_must_exist` (a VM's own listing, /v1/vms/NAME/backups): `vm` is one of
        the caller's VMs (NotFound otherwise, as for every VM path) and the
        backups are that VM's (by its id: a deleted namesake's are not its own)."""
        if vm_must_exist:
            if vm is None:
                raise Invalid("name the VM whose backups to list", "vm")
            row = self.vm_row(vm, with_xml=False)
            return [self._backup_dict(b) for b in self.store.list_backups(vm_id=row["id"])]
        project = self._listed_project(all_projects)
        rows = self.store.list_backups(project=project, vm_name=vm)
        return [self._backup_dict(row) for row in rows]

    def get_backup(self, backup_id: str) -> dict[str, Any]:
        return self._backup_dict(self._visible_backup(backup_id))

    # -- changes ----------------------------------------------------------------------
    def start_backup(self, vm: str, body: Any = None) -> Row:
        """Record a backup operation: {"target"?: name, "full"?: bool}. The kind
        (full or incremental) is decided when it runs: incremental onto the VM's
        newest good backup in that target, unless `full`, the chain is
        full_every long, or the checkpoint it needs is gone."""
        body = {} if body is None else body
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = set(body) - BACKUP_FIELDS
        if unknown:
            raise Invalid("unknown field; known fields are full, target", sorted(unknown)[0])
        full = body.get("full", False)
        if not isinstance(full, bool):
            raise Invalid("must be true or false", "full")
        asked = body.get("target")
        if asked is not None and not isinstance(asked, str):
            raise Invalid("must be the name of a backup target", "target")
        with self.store.transaction():
            row = self.vm_row(vm)  # a locked VM may still be backed up
            if row["desired_state"] == DesiredState.DELETED:
                raise Conflict("the VM is being deleted", "name")
            refuse_while_saved(self._observed(row), "a backup")
            target = default_target(self.store, row, asked)
            if self._pending_op(row, OpKind.BACKUP):
                raise Conflict("a backup of this VM is already under way", "name")
            op = self._new_op(row, OpKind.BACKUP,
                              {"target": target, "full": full, "scheduled": False})
            self.store.add_event("backup-requested", f"backup into target {target}"
                                 + (" (full)" if full else ""), row, op["id"])
        self.notify()
        return op

    def delete_backup(self, backup_id: str) -> None:
        """Its folder and its record; 409 while it runs or a kept backup depends on it."""
        with self.store.transaction():
            row = self._visible_backup(backup_id)
            if row["status"] == BackupStatus.RUNNING:
                raise Conflict("the backup is being written; cancel its operation first",
                               "backup")
            dependents = self.store.dependents(backup_id)
            if dependents:
                raise Conflict(f"backup {dependents[0]['id']} is an incremental on this one; "
                               "delete it first", "backup")
            target = self.store.get_backup_target(row["target"])
            try:
                backup_chain.remove_backup(target["path"], row["vm_id"], backup_id)
            except OSError as err:
                raise Failed(f"removing the backup's folder failed: {err.strerror}") from None
            self.store.delete_backup_row(backup_id)
            vm = self.store.get_vm_by_id(row["vm_id"])
            self.store.add_event("backup-deleted", f"backup {backup_id} deleted", vm,
                                 project=row["project"])

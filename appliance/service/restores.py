"""Restore a backup (into a new VM, or in place) and clone a VM.

A new VM made from a source is created as create_vm makes one (quota,
placement by the scheduler, events, a CREATE operation), with its disks' source
in the operation's params: {"source": {"backup": ID}} or {"source": {"clone":
SOURCE_VM_ID, "snapshot": NAME | None}}. The controller's create handler
(controller/sources.py) fills the disks from it before it defines the domain.
The new VM has its own id (its cloud-init instance id), MAC and seed, and full
standalone disks: it never depends on its source, the source's snapshots, the
backup target or the base image.

What the new VM does not inherit: the source's fixed IP and its port
forwards. Both belong to one VM at a time (the same address on a network,
the same host port); the new VM's owner sets its own with a PATCH.

An in-place restore (no "name") is a RESTORE operation on the backup's own
VM, which must exist and be stopped; its handler is the backup family's.
Both restores verify the chain's manifests and file headers first (no qemu:
appliance/backup_chain.py) and refuse a broken one with the reason; the
handler verifies it again, with `qemu-img check`, before it copies anything.
"""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

from appliance import backup_chain, placement
from appliance import spec as specs
from appliance.access import caller
from appliance.errors import Conflict, Invalid
from appliance.model import ACTIVE_STATES, BackupStatus, DesiredState, OpKind, VMState
from appliance.service.base import ServiceBase, check_unlocked
from appliance.service.shapes import refuse_while_saved
from appliance.service.vms import initial_state
from appliance.store import Row

RESTORE_FIELDS = frozenset({"name", "host"})
CLONE_FIELDS = frozenset({"name", "from_snapshot", "host"})


def _body(body: Any, allowed: frozenset[str]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", None)
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise Invalid(f"unknown field; the fields are {', '.join(sorted(allowed))}", unknown[0])
    host = body.get("host")
    if host is not None:
        specs.validate_name(host, "host")
    return dict(body)


def new_vm_spec(source_spec: dict[str, Any], name: str) -> dict[str, Any]:
    """The source's spec for a new VM named `name`, without what one VM alone
    may hold (a fixed IP, host ports), validated as any create's."""
    spec = copy.deepcopy(source_spec)
    spec["name"] = name
    network = spec.get("network")
    if isinstance(network, dict):
        network.pop("ip", None)
        network.pop("port_forwards", None)
    for nic in spec.get("networks") or []:  # further NICs: the new VM gets MACs of its own
        if isinstance(nic, dict):
            nic.pop("ip", None)
            nic.pop("mac", None)
    return specs.validate(spec)


class Restores(ServiceBase):
    if TYPE_CHECKING:  # the vms', snapshots' and backups' parts, beside this one in Service
        def get_vm(self, name: str) -> dict[str, Any]: ...
        def _record_new_vm(self, spec: dict[str, Any], initial: DesiredState,
                           wanted_host: str | None, source: dict[str, Any] | None = None,
                           origin: str = "", template: tuple[str, int] | None = None,
                           vm_id: str | None = None,
                           public_keys: dict[str, str] | None = None) -> Row: ...
        def get_snapshot(self, vm: str, name: str) -> dict[str, Any]: ...
        def get_backup(self, backup_id: str) -> dict[str, Any]: ...

    # -- clone ---------------------------------------------------------------------------
    def clone_vm(self, vm: str, body: Any) -> tuple[dict[str, Any], Row]:
        """A new VM with full copies of `vm`'s disks, as they are now (a stopped
        VM's files; a running VM's through a backup job, without pausing it) or
        as a snapshot of it holds them. A locked VM may be cloned: the clone
        does not change it."""
        body = _body(body, CLONE_FIELDS)
        name = specs.validate_vm_name(body.get("name"), "name")
        snapshot = body.get("from_snapshot")
        source = self.vm_row(vm, with_xml=False)
        if source["desired_state"] == DesiredState.DELETED:
            raise Conflict("the VM is being deleted", "name")
        if snapshot is not None:
            specs.validate_name(snapshot, "from_snapshot")
            if self.get_snapshot(vm, snapshot)["state"] != "ready":
                raise Conflict(f"snapshot {snapshot!r} is not ready", "from_snapshot")
        self._check_copyable(source)
        spec = new_vm_spec(source["spec"], name)
        at = f" from snapshot {snapshot}" if snapshot else ""
        origin = f" as a clone of {source['name']}{at}"
        op = self._record_new_vm(
            spec, initial_state(None, spec), body.get("host"),
            source={"clone": source["id"], "snapshot": snapshot}, origin=origin,
            public_keys=json.loads(source.get("public_keys") or "{}"))  # the source's copies
        self.store.add_event("cloned", f"cloned into {name}{at}", source, op["id"])
        self.notify()
        return self.get_vm(name), op

    def _check_copyable(self, source: Row) -> None:
        """A running VM's disks are copied by a backup job that writes where the
        appliance reads: its host must see the appliance's folders. A host with
        storage of its own can give a stopped VM's files (its driver downloads
        them), not a live copy."""
        refuse_while_saved(self._observed(source), "a clone")
        active = (self._observed(source) in ACTIVE_STATES
                  or source["desired_state"] in (DesiredState.RUNNING, DesiredState.PAUSED))
        if not active or not source["host"]:
            return
        storage = self.store.get_host(source["host"])["storage"] or placement.APPLIANCE_STORAGE
        if storage != placement.APPLIANCE_STORAGE:
            raise Conflict(
                f"{source['name']} runs on host {source['host']}, whose storage is its own: "
                "a running VM there cannot be copied live; stop it first", "name")

    # -- restore -------------------------------------------------------------------------
    def restore_backup(self, backup_id: str, body: Any) -> tuple[dict[str, Any] | None, Row]:
        """Into a new VM ("name"), on any host the scheduler accepts ("host" to
        pin one), or in place (no "name") into the backup's own VM, stopped."""
        body = _body(body, RESTORE_FIELDS)
        backup = self.get_backup(backup_id)
        if backup["status"] != BackupStatus.GOOD:
            raise Conflict(f"backup {backup_id} is {backup['status']}, not good", "backup")
        target = self.store.get_backup_target(backup["target"])
        chain = backup_chain.verify_chain(target["path"], backup["vm_id"], backup["id"],
                                          check_images=False)  # qemu-img check: in the handler
        if body.get("name") is None:
            if body.get("host") is not None:
                raise Invalid("an in-place restore stays on the VM's host; give a name to "
                              "restore into a new VM elsewhere", "host")
            return None, self._restore_in_place(backup)
        name = specs.validate_vm_name(body["name"], "name")
        manifest_vm = chain[-1].get("vm")
        if not isinstance(manifest_vm, dict) or not isinstance(manifest_vm.get("spec"), dict):
            raise backup_chain.BrokenChain(f"{backup_id}: its manifest has no VM spec")
        spec = new_vm_spec(manifest_vm["spec"], name)
        dropped = self._untrusted_patches(spec, backup["vm_id"])
        op = self._record_new_vm(
            spec, initial_state(None, spec), body.get("host"), source={"backup": backup["id"]},
            origin=f" from backup {backup['id']} of {backup['vm_name']}" + (
                f"; its manifest's {dropped} xml_patches were not restored (a target may be "
                "written by others: an admin adds them again)" if dropped else ""))
        self.notify()
        return self.get_vm(name), op

    def _untrusted_patches(self, spec: dict[str, Any], vm_id: str) -> int:
        """Drop the manifest's xml_patches (root's power, SECURITY.md) unless they are
        those the source VM has in the store: the manifest lies on a target others may
        write. How many were dropped."""
        patches = spec.get("xml_patches") or []
        source = self.store.get_vm_by_id(vm_id)
        if not patches or (source is not None and source["spec"].get("xml_patches") == patches):
            return 0
        spec["xml_patches"] = []
        return len(patches)

    def _restore_in_place(self, backup: dict[str, Any]) -> Row:
        with self.store.transaction():
            row = self.store.get_vm_by_id(backup["vm_id"])
            if row is None or row["project"] != self._project():
                raise Conflict(f"{backup['vm_name']} no longer exists: restore it into a new VM "
                               "(give a name)", "name")
            check_unlocked(row, caller())
            if row["desired_state"] == DesiredState.DELETED:
                raise Conflict("the VM is being deleted", "name")
            if (self._observed(row) != VMState.STOPPED
                    or row["desired_state"] != DesiredState.STOPPED):
                raise Conflict(f"{row['name']} must be stopped for an in-place restore", "state")
            if self._pending_op(row, OpKind.RESTORE) is not None:
                raise Conflict(f"{row['name']} has a restore under way", "state")
            snapshots = [s["name"] for s in self.store.list_snapshots(row["id"])]
            if snapshots:  # the handler refuses them too (one taken after this request)
                shown = ", ".join(snapshots[:5]) + (", ..." if len(snapshots) > 5 else "")
                raise Conflict(f"{row['name']} has {len(snapshots)} snapshot(s) ({shown}), which "
                               "live in its disks and an in-place restore would lose; delete "
                               "them first, or restore into a new VM (give a name)", "snapshots")
            self.store.add_event("restoring", f"restore of backup {backup['id']} requested", row)
            op = self._new_op(row, OpKind.RESTORE, {"backup": backup["id"]})
        self.notify()
        return op

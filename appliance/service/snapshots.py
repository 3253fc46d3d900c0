"""Snapshots of a VM: take, list, delete, revert (libvirt internal snapshots; the
controller's snapshots.py does the work, appliance/virt/libvirt_snapshots.py
says what libvirt does in each case).

A snapshot's row is written with its operation, before libvirt takes it: the
store is the source of truth, and the controller redefines libvirt's metadata
from it where a host lacks it."""

from __future__ import annotations

from typing import Any

from appliance import placement
from appliance.errors import Conflict, Invalid, NotFound
from appliance.model import OPEN_OP_STATES, DesiredState, OpKind, SnapshotState, VMState
from appliance.model.values import validate_name
from appliance.service.base import ServiceBase
from appliance.service.shapes import refuse_while_saved
from appliance.service.state import strategy_for
from appliance.store import Row

MAX_SNAPSHOTS = 32  # per VM: every one is a full copy of the qcow2 tables, and a RAM image
MAX_DESCRIPTION = 1000
SNAPSHOT_FIELDS = frozenset({"name", "memory", "description"})
# A memory snapshot needs the guest's RAM: it must be running (or paused).
GUEST_UP = (VMState.RUNNING, VMState.PAUSED)


def parse_snapshot_request(body: Any) -> tuple[str, bool, str]:
    """(name, memory, description) of a snapshot request; Invalid with the field."""
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", None)
    unknown = sorted(set(body) - SNAPSHOT_FIELDS)
    if unknown:
        raise Invalid(f"unknown field; a snapshot has {', '.join(sorted(SNAPSHOT_FIELDS))}",
                      unknown[0])
    name = validate_name(body.get("name"), "name")
    memory = body.get("memory", False)
    if not isinstance(memory, bool):
        raise Invalid("must be true or false", "memory")
    description = body.get("description") or ""
    if not isinstance(description, str):
        raise Invalid("must be text", "description")
    if len(description) > MAX_DESCRIPTION:
        raise Invalid(f"at most {MAX_DESCRIPTION} characters", "description")
    if not all(c.isprintable() or c in "\n\t" for c in description):
        raise Invalid("printable characters, tabs and newlines only", "description")
    return name, memory, description


def snapshot_view(row: Row, vm_name: str) -> dict[str, Any]:
    return {
        "name": row["name"],
        "vm": vm_name,
        "description": row["description"] or "",
        "memory": bool(row["memory"]),
        "parent": row["parent"],
        "state": row["state"],
        "vm_state": row["vm_state"],
        "size": row["size"],
        "created": row["created"],
        "current": bool(row["current"]),
        "error": row["error"],
    }


class Snapshots(ServiceBase):
    def list_snapshots(self, vm: str) -> list[dict[str, Any]]:
        row = self.vm_row(vm, with_xml=False)
        return [snapshot_view(s, row["name"]) for s in self.store.list_snapshots(row["id"])]

    def get_snapshot(self, vm: str, name: str) -> dict[str, Any]:
        row = self.vm_row(vm, with_xml=False)
        return snapshot_view(self._snapshot_row(row, name), row["name"])

    def _snapshot_row(self, row: Row, name: Any) -> Row:
        found = self.store.get_snapshot(row["id"], name) if isinstance(name, str) else None
        if found is None:
            raise NotFound(f"{row['name']} has no snapshot named {name!r}", "snapshot")
        return found

    def create_snapshot(self, vm: str, body: Any) -> Row:
        """Record the snapshot (state creating) and its operation. Allowed on a
        locked VM: taking a snapshot changes nothing the guest sees."""
        name, memory, description = parse_snapshot_request(body)
        with self.store.transaction():
            row = self.vm_row(vm, with_xml=False)
            if row["desired_state"] == DesiredState.DELETED:
                raise Conflict("the VM is being deleted", "name")
            if self.store.get_snapshot(row["id"], name) is not None:
                raise Conflict(f"{row['name']} has a snapshot named {name!r}", "name")
            if self.store.count_snapshots(row["id"]) >= MAX_SNAPSHOTS:
                raise Conflict(f"a VM has at most {MAX_SNAPSHOTS} snapshots; delete one first",
                               "name")
            observed = self._observed(row)
            refuse_while_saved(observed, "a snapshot")
            if memory and observed not in GUEST_UP:
                raise Conflict(f"a snapshot with memory needs a running VM; {row['name']} is "
                               f"{observed}", "memory")
            if self._moving(row):
                raise Conflict("the VM is moving to another host; snapshot it when it is done",
                               "name")
            if row["spec"].get("firmware", "bios") != "bios" and observed in GUEST_UP:
                # libvirt 9.0: "internal snapshots of a VM with pflash based firmware are not
                # supported" while it runs (QEMU's savevm cannot include the raw NVRAM)
                raise Conflict(f"{row['name']} runs UEFI firmware, whose NVRAM an internal "
                               "snapshot of a running VM cannot hold (libvirt refuses it); "
                               "stop it first (a stopped VM's snapshot holds its disks, not "
                               "its NVRAM)", "name")
            snapshot_id = str(self.uuidgen())
            self.store.insert_snapshot({
                "id": snapshot_id, "vm_id": row["id"], "name": name, "description": description,
                "memory": int(memory), "parent": None, "current": 0,
                "state": SnapshotState.CREATING.value, "vm_state": observed, "size": None,
                "xml": None, "error": None, "created": self.clock(),
            })
            op = self._new_op(row, OpKind.SNAPSHOT, {
                "name": name, "memory": memory, "description": description,
                "snapshot": snapshot_id})
            kind = "with memory" if memory else "disks only"
            self.store.add_event("snapshot-requested", f"snapshot {name} ({kind}) requested",
                                 row, op["id"])
        self.notify()
        return op

    def delete_snapshot(self, vm: str, name: str) -> Row:
        """Delete a snapshot (libvirt merges it away); refused on a locked VM."""
        with self.store.transaction():
            row = self._vm_for_write(vm, None)
            snap = self._snapshot_row(row, name)
            if snap["state"] == SnapshotState.DELETING:
                for pending in self.store.operations_of_vm(row["id"], OPEN_OP_STATES,
                                                           [OpKind.SNAPSHOT_DELETE]):
                    if pending["params"].get("name") == name:
                        return pending  # asked twice: the same operation
            if snap["state"] == SnapshotState.CREATING:
                raise Conflict(f"snapshot {name} is being taken; delete it when it is done",
                               "snapshot")
            self.store.update_snapshot(snap["id"], state=SnapshotState.DELETING.value)
            op = self._new_op(row, OpKind.SNAPSHOT_DELETE, {"name": name,
                                                            "snapshot": snap["id"]})
            self.store.add_event("snapshot-delete-requested", f"delete of snapshot {name} "
                                 "requested", row, op["id"])
        self.notify()
        return op

    def revert_snapshot(self, vm: str, name: str) -> Row:
        """Revert to a snapshot; refused on a locked VM. A memory snapshot brings the
        guest back as it was (its desired state becomes running, or paused); a
        disk-only one keeps the desired state (a running VM is powered off and
        booted on the reverted disks)."""
        with self.store.transaction():
            row = self._vm_for_write(vm, None)  # a locked VM refuses (check_unlocked)
            snap = self._snapshot_row(row, name)
            if snap["state"] != SnapshotState.READY:
                raise Conflict(f"snapshot {name} is {snap['state']}; only a ready one can be "
                               "reverted to", "snapshot")
            refuse_while_saved(self._observed(row), "a revert")
            if self._moving(row):
                raise Conflict("the VM is moving to another host; revert when it is done",
                               "snapshot")
            if snap["memory"]:
                self._claim_on_own_host(row)
                desired = (DesiredState.PAUSED if snap["vm_state"] == VMState.PAUSED
                           else DesiredState.RUNNING)
                spec = {**row["spec"],
                        "run_strategy": strategy_for(desired, row["spec"]["run_strategy"])}
                self._supersede(row)
                self.store.update_vm(row["id"], expect_generation=row["generation"],
                                     desired_state=desired, spec=spec)
            op = self._new_op(row, OpKind.REVERT, {"name": name, "snapshot": snap["id"]})
            self.store.add_event("revert-requested", f"revert to snapshot {name} requested",
                                 row, op["id"])
        self.notify()
        return op

    def _claim_on_own_host(self, row: Row) -> None:
        """A stopped VM that a memory revert starts claims its vCPUs and memory on
        its own host (its snapshots are in its disks there); 409 when they do not fit."""
        if self._observed(row) in GUEST_UP or self._claims_cpu_ram(row):
            return
        decision = placement.place_start(self.store, self.config, row, self.clock())
        if decision.host != row["host"]:
            raise Conflict(f"no room to start it on host {row['host']}: {decision.explain()}",
                           "snapshot")

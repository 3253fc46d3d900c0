"""Snapshot operations: snapshot, snapshot-delete, revert (libvirt internal
snapshots; appliance/virt/libvirt_snapshots.py says how each case is made).

Each is safe to run again after a crash: a snapshot libvirt took before the
controller could record it is adopted, a delete finds it gone, a revert is
simply done again. Before acting, libvirt's metadata is made whole from the
store (snapshot_metadata.py), so a host that lost it still reverts and deletes."""
from __future__ import annotations

import logging

import defusedxml.ElementTree as DefusedET

from appliance.controller.context import Context
from appliance.controller.files import VmFiles
from appliance.controller.lifecycle import Lifecycle, port_forwards
from appliance.controller.operations import Handler
from appliance.errors import Conflict, Failed
from appliance.model import DesiredState, SnapshotState
from appliance.virt.driver import Guest, failure_reason

log = logging.getLogger("appliance.controller")


def parent_of(xml: str) -> str | None:
    """The parent's name in libvirt's snapshot XML (None for a root snapshot)."""
    return DefusedET.fromstring(xml).findtext("parent/name")


def hardware_differs(xml: str, spec: dict) -> bool:
    """Whether the domain a snapshot was taken of (inside libvirt's XML of it) had
    other vCPUs, memory or disks than the spec now says: a guest resumed from its
    memory runs that hardware until its next restart."""
    taken = DefusedET.fromstring(xml).find("domain")
    if taken is None:
        return False
    # What the guest had, not the room it had to grow (issue 14: <vcpu current>
    # below the maximum, <memory> counting the virtio-mem area; <currentMemory>
    # is the boot memory plus what was plugged).
    memory = taken.find("currentMemory")
    if memory is None:
        memory = taken.find("memory")
    vcpu = taken.find("vcpu")
    vcpus = int((vcpu.get("current") or vcpu.text or 0) if vcpu is not None else 0)
    factor = {"KiB": 1024, "MiB": 1, "GiB": 1 / 1024}.get(
        memory.get("unit", "KiB") if memory is not None else "KiB", 1024)
    memory_mib = int(memory.text or 0) / factor if memory is not None else 0
    disks = [d for d in taken.iterfind("devices/disk[@device='disk']")
             if d.find("readonly") is None]
    return (vcpus != spec["cpus"] or memory_mib != spec["memory"]
            or len(disks) != 1 + len(spec.get("disks", [])))


class SnapshotOperations:
    def __init__(self, ctx: Context, files: VmFiles, lifecycle: Lifecycle):
        self.ctx = ctx
        self.files = files
        self.lifecycle = lifecycle
        self.metadata = files.snapshot_metadata

    def handlers(self) -> dict[str, Handler]:
        return {"snapshot": self.snapshot, "snapshot-delete": self.delete, "revert": self.revert}

    def _guest(self, row: dict) -> Guest:
        """The VM's domain on its host (defined there if it is not), its snapshot
        metadata made whole from the store."""
        link = self.ctx.links.connected(row["host"])
        guest = link.lookup(row["id"])
        if guest is None:
            return self.files.ensure_defined(row)  # which restores the metadata
        self.metadata.restore(guest, row["id"])
        return guest

    def _snapshot_row(self, op: dict, row: dict) -> dict:
        snap = self.ctx.store.get_snapshot(row["id"], op["params"]["name"])
        if snap is None:
            raise Failed(f"snapshot {op['params']['name']} no longer exists")
        return snap

    # -- snapshot ----------------------------------------------------------------------------
    def snapshot(self, op: dict, row: dict) -> None:
        snap = self._snapshot_row(op, row)
        if snap["state"] == SnapshotState.READY:
            return  # recorded before a crash: done
        try:
            self._take(op, row, snap)
        except Exception as err:
            self.ctx.store.update_snapshot(snap["id"], state=SnapshotState.FAILED.value,
                                           error=failure_reason(err))
            raise

    def _take(self, op: dict, row: dict, snap: dict) -> None:
        store, name = self.ctx.store, snap["name"]
        guest = self._guest(row)
        before = guest.disks_allocated()
        if name in guest.snapshot_names():  # taken before a crash, not recorded: adopt it
            xml, size, vm_state = guest.snapshot_xml(name), snap["size"], snap["vm_state"]
        else:
            if snap["memory"] and not guest.is_active():
                raise Failed(f"a snapshot with memory needs a running VM; {row['name']} "
                             "is not running")
            vm_state = guest.state()[0]
            xml = guest.snapshot_create(name, snap["description"] or "", bool(snap["memory"]))
            # Its size: how much the disks grew while it was taken (the saved RAM and
            # the qcow2 tables; clusters shared with the live disk count nowhere).
            size = max(0, guest.disks_allocated() - before)
        with store.transaction():
            store.update_snapshot(snap["id"], state=SnapshotState.READY.value, xml=xml,
                                  parent=parent_of(xml), size=size, vm_state=vm_state, error=None)
            store.set_current_snapshot(row["id"], name)
            kind = "with memory" if snap["memory"] else "disks only"
            store.add_event("snapshot-taken", f"snapshot {name} taken ({kind})", row, op["id"])

    # -- snapshot-delete ---------------------------------------------------------------------
    def delete(self, op: dict, row: dict) -> None:
        store = self.ctx.store
        snap = self._snapshot_row(op, row)
        guest = self._guest(row)
        if snap["name"] in guest.snapshot_names():
            guest.snapshot_delete(snap["name"])  # libvirt merges it into its children
        with store.transaction():
            store.reparent_snapshots(row["id"], snap["name"], snap["parent"])
            if snap["current"]:
                store.set_current_snapshot(row["id"], snap["parent"])
            store.delete_snapshot(snap["id"])
        # The children's XML names their new parent: keep it for a later redefine.
        known = set(guest.snapshot_names())
        for child in store.list_snapshots(row["id"]):
            if child["parent"] == snap["parent"] and child["name"] in known:
                store.update_snapshot(child["id"], xml=guest.snapshot_xml(child["name"]))
        store.add_event("snapshot-deleted", f"snapshot {snap['name']} deleted", row, op["id"])

    # -- revert -------------------------------------------------------------------------------
    def revert(self, op: dict, row: dict) -> None:
        store = self.ctx.store
        snap = self._snapshot_row(op, row)
        if snap["state"] != SnapshotState.READY:
            raise Failed(f"snapshot {snap['name']} is {snap['state']}")
        guest = self._guest(row)
        if snap["memory"] and not guest.is_active() and not self.lifecycle.may_boot(op, row):
            # It would start the guest (libvirt's revert to a running snapshot), whose
            # room a stop asked since may have given away (issue 17): nothing reverted.
            raise Conflict(f"not reverted: {row['name']} is no longer wanted running on "
                           f"host {row['host']}, and a revert to snapshot {snap['name']} "
                           "(with memory) starts it; revert again to start it", "snapshot")
        self._drop_checkpoints(op, row, guest)
        if snap["memory"]:
            guest.snapshot_revert(snap["name"], keep_memory=True)
            # QEMU was restarted with the snapshot's RAM: the persistent definition
            # follows the spec again, and the port forwards are added anew.
            self.files.ensure_defined(row)
            if guest.is_active():
                guest.apply_port_forwards(port_forwards(row))
            if hardware_differs(snap["xml"], row["spec"]):
                store.update_vm(row["id"], bump=False, restart_required=1)
        else:
            guest.snapshot_revert(snap["name"], keep_memory=False)  # ends shut off
            guest = self.files.ensure_defined(row)
            fresh = store.get_vm_by_id(row["id"]) or row
            if (fresh["desired_state"] in (DesiredState.RUNNING, DesiredState.PAUSED)
                    and self.lifecycle.boot(op, fresh, guest)):
                if fresh["desired_state"] == DesiredState.PAUSED:
                    guest.suspend()
        with store.transaction():
            store.set_current_snapshot(row["id"], snap["name"])
            how = "the guest resumed as it was" if snap["memory"] else "disks reverted"
            store.add_event("reverted", f"reverted to snapshot {snap['name']} ({how})", row,
                            op["id"])

    def _drop_checkpoints(self, op: dict, row: dict, guest: Guest) -> None:
        """QEMU cannot revert a disk with dirty bitmaps (it quits): the VM's
        checkpoints go first, and with them the incremental chain (the next
        backup is a full one; the bitmaps would describe a disk that is gone)."""
        names = guest.checkpoint_names()
        for name in reversed(names):
            guest.checkpoint_delete(name)
        if names:
            self.ctx.store.add_event(
                "checkpoints-deleted", f"checkpoints {', '.join(names)} deleted for the revert; "
                "the next backup is a full one", row, op["id"])

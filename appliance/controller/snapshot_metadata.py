"""libvirt's snapshot metadata kept in step with the store.

A VM's internal snapshots live in its qcow2 disks; libvirt's metadata about
them (name, parent, the domain as it was) lives in the host's
/var/lib/libvirt. The store keeps each snapshot's XML, so that a host whose
libvirt lacks it gets it back: after the domain is (re)defined (a start on
another host, an evacuation, an offline move, a lost /var/lib/libvirt) and
after a live migration, which libvirt refuses for a domain with snapshots
("cannot migrate domain with N snapshots"): the metadata is dropped on the
source (never the data in the disks), the domain migrates, and the metadata
is redefined on the target (or back on the source when the migration fails).
"""
from __future__ import annotations

import logging

from appliance.controller.context import Context
from appliance.model import SnapshotState
from appliance.virt.driver import DriverError, Guest

log = logging.getLogger("appliance.controller")

# Snapshots whose data is in the disks (a delete under way has not removed it yet).
IN_DISKS = (SnapshotState.READY, SnapshotState.DELETING)


class SnapshotMetadata:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def _kept(self, vm_id: str) -> list[dict]:
        return [s for s in self.ctx.store.list_snapshots(vm_id, with_xml=True)
                if s["state"] in IN_DISKS and s["xml"]]

    def restore(self, guest: Guest, vm_id: str) -> None:
        """Redefine, parents first, each snapshot of the store that the domain's
        libvirt lacks; one that fails is reported as an event, the rest go on (a
        start never fails for want of snapshot metadata)."""
        if not self.ctx.store.has_ready_snapshots(vm_id):
            return  # no question to libvirt for the VMs without snapshots
        known = set(guest.snapshot_names())
        missing = [s for s in self._kept(vm_id) if s["name"] not in known]
        for snap in missing:
            try:
                guest.snapshot_redefine(snap["xml"], current=bool(snap["current"]))
            except DriverError as err:
                log.warning("redefining snapshot %s of %s failed: %s", snap["name"], vm_id, err)
                row = self.ctx.store.get_vm_by_id(vm_id)
                if row is not None:
                    self.ctx.store.add_event(
                        "snapshot-metadata", f"libvirt's metadata of snapshot {snap['name']} "
                        f"could not be restored: {err.reason}", row)
        if missing:
            log.info("restored libvirt's metadata of %d snapshot(s) of %s", len(missing), vm_id)

    def detach(self, guest: Guest, vm_id: str) -> list[str]:
        """Drop libvirt's metadata of every snapshot of the domain (children first),
        leaving their data in the disks: what a migration or a plain undefine
        needs (only for a VM the store has snapshots of). Returns the names dropped."""
        if not self.ctx.store.has_ready_snapshots(vm_id):
            return []
        names = guest.snapshot_names()
        for name in reversed(names):
            guest.snapshot_delete(name, metadata_only=True)
        return names

"""Internal snapshots and checkpoints through libvirt (the driver delegates here).

What libvirt 9.0 + QEMU 7.2 do, checked on this machine (RECIPES, "Snapshots
and backups"), and how each case is made:

- A stopped domain: `snapshotCreateXML` with just a name makes an internal
  disk-only snapshot (`qemu-img snapshot -c` on each writable qcow2; the
  read-only seed is left out). Reverting it (`qemu-img snapshot -a`) works
  shut off; on a running domain libvirt powers the domain off first.
- A running domain: libvirt refuses an internal snapshot without the memory
  state ("internal snapshot of a running VM must include the memory state"),
  and DISK_ONLY makes external snapshots, which 9.0 cannot revert. So every
  snapshot of a running domain is taken with its memory (QEMU's savevm, a
  pause of ~0.1-0.5 s); one asked for without memory is reverted as a
  disk-only one: to the snapshot paused (QEMU's -loadvm, the guest never runs
  a cycle of the old RAM), then powered off, leaving the disks as they were
  at that instant (crash-consistent, as a power cut).
- Checkpoints (persistent dirty bitmaps) block a revert: QEMU quits with
  "Device has active dirty bitmaps" and the domain ends shut off. They must be
  deleted for real (a metadata-only delete leaves the bitmaps in the qcow2),
  and libvirt deletes checkpoints only of a running domain: a stopped one is
  started paused for the delete and powered off again.
- Migration: libvirt refuses a domain with snapshots ("cannot migrate domain
  with N snapshots"): the controller drops the metadata only, migrates and
  redefines it on the target (the store keeps each snapshot's XML).
- Rename: 9.0 renames a stopped domain with snapshots and moves their metadata.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TypeVar

import libvirt

from appliance.virt.driver import DriverError

T = TypeVar("T")
_SNAP_XML_FLAGS = 0  # no secure fields: the domain's graphics listen nowhere and have no password


def _snapshot_xml(name: str, description: str, memory: bool) -> str:
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    if memory:
        ET.SubElement(root, "memory", snapshot="internal")
    return ET.tostring(root, encoding="unicode")


def create(dom: libvirt.virDomain, name: str, description: str, memory: bool) -> str:
    active = bool(dom.isActive())
    if memory and not active:
        raise DriverError("a memory snapshot needs a running domain",
                          "a snapshot with memory needs a running VM")
    # On a running domain the memory is always saved (see above); stopped: disks only.
    snap = dom.snapshotCreateXML(_snapshot_xml(name, description, memory=active), 0)
    return str(snap.getXMLDesc(_SNAP_XML_FLAGS))


def redefine(dom: libvirt.virDomain, xml: str, current: bool) -> None:
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
    if current:
        flags |= libvirt.VIR_DOMAIN_SNAPSHOT_CREATE_CURRENT
    dom.snapshotCreateXML(xml, flags)


def names(dom: libvirt.virDomain) -> list[str]:
    snaps = dom.listAllSnapshots(libvirt.VIR_DOMAIN_SNAPSHOT_LIST_TOPOLOGICAL)
    return [s.getName() for s in snaps]


def xml_of(dom: libvirt.virDomain, name: str) -> str:
    return str(dom.snapshotLookupByName(name).getXMLDesc(_SNAP_XML_FLAGS))


def _has_memory(snap: libvirt.virDomainSnapshot) -> bool:
    """Whether libvirt took the snapshot with the guest running (with its memory)."""
    state = ET.fromstring(snap.getXMLDesc(0)).findtext("state")  # noqa: S314 - libvirt's own XML
    return state in ("running", "paused")


def revert(dom: libvirt.virDomain, name: str, keep_memory: bool) -> None:
    snap = dom.snapshotLookupByName(name)
    if keep_memory or not _has_memory(snap):
        dom.revertToSnapshot(snap, 0)
        return
    # A snapshot taken with memory, reverted as disk-only: load it paused and power off.
    dom.revertToSnapshot(snap, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED)
    dom.destroy()


def delete(dom: libvirt.virDomain, name: str, metadata_only: bool) -> None:
    flags = libvirt.VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY if metadata_only else 0
    dom.snapshotLookupByName(name).delete(flags)


def checkpoint_names(dom: libvirt.virDomain) -> list[str]:
    cps = dom.listAllCheckpoints(libvirt.VIR_DOMAIN_CHECKPOINT_LIST_TOPOLOGICAL)
    return [c.getName() for c in cps]


def checkpoint_delete(dom: libvirt.virDomain, name: str, metadata_only: bool) -> None:
    checkpoint = dom.checkpointLookupByName(name)
    if metadata_only:
        checkpoint.delete(libvirt.VIR_DOMAIN_CHECKPOINT_DELETE_METADATA_ONLY)
        return
    if dom.isActive():
        checkpoint.delete(0)
        return
    # libvirt removes bitmaps only through a running QEMU: start it paused for the delete.
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)
    try:
        checkpoint.delete(0)
    finally:
        dom.destroy()


def disks_allocated(dom: libvirt.virDomain) -> int:
    """Sum of each writable disk's allocation (blockInfo), in bytes."""
    root = ET.fromstring(dom.XMLDesc(0))  # noqa: S314 - libvirt's own XML
    total = 0
    for disk in root.iterfind("./devices/disk[@device='disk']"):
        source = disk.find("source")
        if disk.find("readonly") is not None or source is None or not source.get("file"):
            continue
        total += int(dom.blockInfo(source.get("file"), 0)[1])
    return total


class SnapshotMethods:
    """The Guest methods of snapshots and checkpoints, for LibvirtGuest: each calls
    this module's function on the domain through the guest's `call`, which turns
    libvirt's errors into DriverErrors."""

    def call(self, function: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    def snapshot_create(self, name: str, description: str, memory: bool) -> str:
        return self.call(create, name, description, memory)

    def snapshot_redefine(self, xml: str, current: bool = False) -> None:
        self.call(redefine, xml, current)

    def snapshot_names(self) -> list[str]:
        return self.call(names)

    def snapshot_xml(self, name: str) -> str:
        return self.call(xml_of, name)

    def snapshot_revert(self, name: str, keep_memory: bool = True) -> None:
        self.call(revert, name, keep_memory)

    def snapshot_delete(self, name: str, metadata_only: bool = False) -> None:
        self.call(delete, name, metadata_only)

    def checkpoint_names(self) -> list[str]:
        return self.call(checkpoint_names)

    def checkpoint_delete(self, name: str, metadata_only: bool = False) -> None:
        self.call(checkpoint_delete, name, metadata_only)

    def disks_allocated(self) -> int:
        return self.call(disks_allocated)

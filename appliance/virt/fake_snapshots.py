"""Snapshots and checkpoints of the fake hypervisor (fake.py's FakeGuest), as
libvirt 9.0 behaves (libvirt_snapshots.py): a running domain's snapshot holds
its memory; a domain with snapshots refuses a migration and a plain undefine;
a revert with a checkpoint present fails and leaves the domain shut off."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import defusedxml.ElementTree as DefusedET

from appliance.virt.driver import DriverError

if TYPE_CHECKING:
    from appliance.virt.fake import FakeDomain, FakeDriver

SNAPSHOT_BYTES = 1 << 20  # what the fake's disks grow by with each snapshot


def _error(message: str) -> DriverError:
    return DriverError(message, message)


def snapshot_xml(name: str, description: str, state: str, parent: str | None,
                 domain_xml: str = "") -> str:
    """As libvirt writes it: the domain as it was inside."""
    root = ET.Element("domainsnapshot")
    ET.SubElement(root, "name").text = name
    if description:
        ET.SubElement(root, "description").text = description
    ET.SubElement(root, "state").text = state
    if parent:
        ET.SubElement(ET.SubElement(root, "parent"), "name").text = parent
    with_memory = state in ("running", "paused")
    ET.SubElement(root, "memory", snapshot="internal" if with_memory else "no")
    if domain_xml:
        root.append(DefusedET.fromstring(domain_xml))
    return ET.tostring(root, encoding="unicode")


class FakeSnapshotMethods:
    driver: FakeDriver

    def _dom(self) -> FakeDomain:
        raise NotImplementedError

    def _note(self, call: str) -> FakeDomain:
        dom = self._dom()
        self.driver.fake_host().calls.append(f"{call} {dom.uuid}")
        return dom

    def _snapshot(self, dom: FakeDomain, name: str) -> str:
        if name not in dom.snapshots:
            raise _error(f"no domain snapshot with matching name '{name}'")
        return dom.snapshots[name]

    def snapshot_create(self, name: str, description: str, memory: bool) -> str:
        with self.driver.cloud.lock:
            dom = self._note(f"snapshot-create {name}")
            active = dom.state in ("running", "paused")
            if memory and not active:
                raise _error("a snapshot with memory needs a running VM")
            if name in dom.snapshots:
                raise _error(f"domain snapshot {name} already exists")
            if dom.disks_inactive:  # QEMU 7.2's answer (fake.py's FakeDomain)
                raise _error("Device 'libvirt-2-format' is writable but does not support snapshots")
            xml = snapshot_xml(name, description, dom.state if active else "shutoff",
                               dom.current_snapshot, dom.xml)
            dom.snapshots[name] = xml
            dom.current_snapshot = name
            dom.allocated += SNAPSHOT_BYTES
            return xml

    def snapshot_redefine(self, xml: str, current: bool = False) -> None:
        with self.driver.cloud.lock:
            root = DefusedET.fromstring(xml)
            name = root.findtext("name") or ""
            dom = self._note(f"snapshot-redefine {name}")
            parent = root.findtext("parent/name")
            if parent and parent not in dom.snapshots:
                raise _error(f"parent {parent} for snapshot {name} not found")
            dom.snapshots[name] = xml
            if current:
                dom.current_snapshot = name

    def snapshot_names(self) -> list[str]:
        with self.driver.cloud.lock:
            return list(self._dom().snapshots)

    def snapshot_xml(self, name: str) -> str:
        with self.driver.cloud.lock:
            dom = self._dom()
            return self._snapshot(dom, name)

    def snapshot_revert(self, name: str, keep_memory: bool = True) -> None:
        with self.driver.cloud.lock:
            dom = self._note(f"snapshot-revert {name}")
            state = DefusedET.fromstring(self._snapshot(dom, name)).findtext("state")
            if dom.checkpoints:
                dom.state, dom.reason = "stopped", "failed"
                raise _error("internal error: qemu unexpectedly closed the monitor: "
                             "Device has active dirty bitmaps")
            if keep_memory and state in ("running", "paused"):
                dom.state, dom.reason = state, "from snapshot"
            else:
                dom.state, dom.reason = "stopped", "from snapshot"
            dom.current_snapshot = name

    def snapshot_delete(self, name: str, metadata_only: bool = False) -> None:
        with self.driver.cloud.lock:
            kind = "metadata" if metadata_only else "data"
            dom = self._note(f"snapshot-delete-{kind} {name}")
            xml = self._snapshot(dom, name)
            parent = DefusedET.fromstring(xml).findtext("parent/name")
            del dom.snapshots[name]
            if dom.current_snapshot == name:
                dom.current_snapshot = parent
            if metadata_only:
                return
            for child, child_xml in list(dom.snapshots.items()):  # libvirt reparents the children
                root = DefusedET.fromstring(child_xml)
                link = root.find("parent")
                if link is None or link.findtext("name") != name:
                    continue
                if parent is None:
                    root.remove(link)
                else:
                    link.find("name").text = parent  # type: ignore[union-attr]
                dom.snapshots[child] = ET.tostring(root, encoding="unicode")

    def checkpoint_names(self) -> list[str]:
        with self.driver.cloud.lock:
            return list(self._dom().checkpoints)

    def checkpoint_delete(self, name: str, metadata_only: bool = False) -> None:
        with self.driver.cloud.lock:
            dom = self._note(f"checkpoint-delete {name}")
            if name not in dom.checkpoints:
                raise _error(f"no domain checkpoint with matching name '{name}'")
            dom.checkpoints.remove(name)
            if not metadata_only:  # a real delete takes the bitmap out of the disks (fake_backups)
                dom.bitmaps.discard(name)

    def disks_allocated(self) -> int:
        with self.driver.cloud.lock:
            return self._dom().allocated

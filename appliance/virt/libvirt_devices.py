"""Disks and CD-ROMs changed on a running domain (issue 14, part B), through
libvirt (LibvirtGuest delegates here through its `call`).

Checked on this machine (libvirt 9.0, QEMU 7.2, TCG, RECIPES "Live resize"):
- blockResize grows a virtio disk live and the guest sees the new size at
  once; it also shrinks without a word, so the service refuses shrinking and
  this module refuses a smaller size too (a second lock on the same door).
- attachDeviceFlags(AFFECT_LIVE) hot-plugs a virtio disk into a spare q35
  root port (domain_devices.py declares them); detachDeviceFlags asks the
  guest to release it (PCIe native hot-unplug): libvirt waits ~5 s for QEMU's
  DEVICE_DELETED and otherwise returns while the removal is still pending, so
  `detach_disk` polls the live XML until the disk is gone.
- NICs (issue 15) the same way: attachDeviceFlags(AFFECT_LIVE) of an
  <interface type='network'> into a spare root port, detachDeviceFlags of the
  live XML's interface with its MAC, polled until it is gone (a TCG guest lets
  go of a virtio-net device in 1-3 s).
- updateDeviceFlags(AFFECT_LIVE) on a CD-ROM changes or ejects its media
  (QEMU's blockdev-change-medium / eject; a guest that locked the tray makes
  the eject fail, which comes back as a DriverError).
"""
from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TypeVar

import defusedxml.ElementTree as DefusedET
import libvirt

from appliance.virt.driver import DiskDevice, DriverError

T = TypeVar("T")
LIVE = libvirt.VIR_DOMAIN_AFFECT_LIVE
DETACH_TIMEOUT = 20.0  # a TCG guest answers a PCIe unplug in 1-3 s


def disk_devices(dom: libvirt.virDomain) -> list[DiskDevice]:
    """The running domain's disks and CD-ROMs, as its live XML has them."""
    return parse_disks(dom.XMLDesc(0))


def parse_disks(xml: str) -> list[DiskDevice]:
    found: list[DiskDevice] = []
    for disk in DefusedET.fromstring(xml).iterfind("devices/disk"):
        target = disk.find("target")
        if target is None or not target.get("dev"):
            continue
        source = disk.find("source")
        found.append(DiskDevice(
            target=str(target.get("dev")), device=disk.get("device", "disk"),
            file=source.get("file") if source is not None else None,
            readonly=disk.find("readonly") is not None))
    return found


def attach(dom: libvirt.virDomain, xml: str) -> None:
    dom.attachDeviceFlags(xml, LIVE)


def update(dom: libvirt.virDomain, xml: str) -> None:
    dom.updateDeviceFlags(xml, LIVE)


def detach(dom: libvirt.virDomain, xml: str, target: str,
           clock: Callable[[], float] = time.monotonic) -> bool:
    """Ask for the disk's removal; True once the live XML no longer has it,
    False when the guest has not released it within DETACH_TIMEOUT (it may still)."""
    try:
        dom.detachDeviceFlags(xml, LIVE)
    except libvirt.libvirtError as err:
        # An earlier request still pending, or the disk already gone: look at the XML.
        if err.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                        libvirt.VIR_ERR_DEVICE_MISSING):
            raise
    deadline = clock() + DETACH_TIMEOUT
    while True:
        if all(d.target != target for d in disk_devices(dom)):
            return True
        if clock() >= deadline:
            return False
        time.sleep(0.2)


def interface_macs(xml: str) -> list[str]:
    """The MACs of a domain XML's NICs, lowercase."""
    return [str(mac.get("address")).lower()
            for mac in DefusedET.fromstring(xml).iterfind("devices/interface/mac")
            if mac.get("address")]


def nic_macs(dom: libvirt.virDomain) -> list[str]:
    return interface_macs(dom.XMLDesc(0))


def attach_nic(dom: libvirt.virDomain, xml: str) -> None:
    """Hot-plug a NIC into the running domain (a spare root port on q35); the
    persistent definition has it already (ensure_defined)."""
    dom.attachDeviceFlags(xml, LIVE)


def detach_nic(dom: libvirt.virDomain, mac: str,
               clock: Callable[[], float] = time.monotonic) -> bool:
    """Ask for the NIC's removal (its live XML, found by MAC); True once the live XML
    no longer has it, False when the guest has not released it within DETACH_TIMEOUT."""
    for iface in DefusedET.fromstring(dom.XMLDesc(0)).iterfind("devices/interface"):
        found = iface.find("mac")
        if found is not None and str(found.get("address")).lower() == mac:
            try:
                dom.detachDeviceFlags(ET.tostring(iface, encoding="unicode"), LIVE)
            except libvirt.libvirtError as err:
                if err.get_error_code() not in (libvirt.VIR_ERR_OPERATION_INVALID,
                                                libvirt.VIR_ERR_DEVICE_MISSING):
                    raise
            break
    deadline = clock() + DETACH_TIMEOUT
    while True:
        if mac not in nic_macs(dom):
            return True
        if clock() >= deadline:
            return False
        time.sleep(0.2)


def block_resize(dom: libvirt.virDomain, target: str, size_bytes: int) -> None:
    capacity = dom.blockInfo(target, 0)[0]
    if size_bytes < capacity:
        raise DriverError(f"{target} is {capacity} bytes, asked {size_bytes}",
                          "a disk is never shrunk")
    if size_bytes > capacity:
        dom.blockResize(target, size_bytes, libvirt.VIR_DOMAIN_BLOCK_RESIZE_BYTES)


def block_capacity(dom: libvirt.virDomain, target: str) -> int:
    return int(dom.blockInfo(target, 0)[0])


class DeviceMethods:
    """The Guest methods of live disks and media, for LibvirtGuest."""

    def call(self, function: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    def disk_devices(self) -> list[DiskDevice]:
        return self.call(disk_devices)

    def attach_device(self, xml: str) -> None:
        self.call(attach, xml)

    def update_device(self, xml: str) -> None:
        self.call(update, xml)

    def detach_disk(self, xml: str, target: str) -> bool:
        return self.call(detach, xml, target)

    def block_resize(self, target: str, size_bytes: int) -> None:
        self.call(block_resize, target, size_bytes)

    def nic_macs(self) -> list[str]:
        return self.call(nic_macs)

    def attach_nic(self, xml: str) -> None:
        self.call(attach_nic, xml)

    def detach_nic(self, mac: str) -> bool:
        return self.call(detach_nic, mac)

    def block_capacity(self, target: str) -> int:
        return self.call(block_capacity, target)


__all__ = ["DeviceMethods", "interface_macs", "parse_disks"]

"""Disks and CD-ROMs of a running fake domain (fake.py's FakeGuest), as
libvirt_devices.py behaves: the live devices start as the definition had them
at boot, change by attach/detach/update/resize, and are what the live XML
shows. `cloud.stuck_detach` (a set of targets) plays a guest that never
releases a disk; `cloud.no_hotplug` a host whose driver cannot hot-plug."""
from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

from appliance.virt import libvirt_devices
from appliance.virt.driver import DiskDevice, DriverError

if TYPE_CHECKING:
    from appliance.virt.fake import FakeDomain, FakeDriver

FAKE_DISK_BYTES = 16 << 20  # a disk whose size the definition does not say


def devices_at_boot(xml: str) -> dict[str, dict]:
    """target -> the live disk, as a boot of this definition plugs them."""
    return {d.target: {"device": d.device, "file": d.file, "readonly": d.readonly,
                       "size": FAKE_DISK_BYTES}
            for d in libvirt_devices.parse_disks(xml)}


class FakeDeviceMethods:
    driver: FakeDriver

    def _dom(self) -> FakeDomain:
        raise NotImplementedError

    def _live(self) -> dict[str, dict]:
        """target -> {device, file, readonly, size} of the running domain."""
        dom = self._dom()
        if dom.state not in ("running", "paused"):
            raise DriverError("the domain is not running", "the domain is not running")
        if dom.live_devices is None:  # started before this was recorded (a migration's copy)
            dom.live_devices = devices_at_boot(dom.xml)
        return dom.live_devices

    def _call(self, what: str) -> None:
        self.driver.fake_host().calls.append(f"{what} {self._dom().uuid}")
        if getattr(self.driver.cloud, "no_hotplug", False):
            raise DriverError(f"{what}: not supported", f"{what}: not supported on this host")

    def disk_devices(self) -> list[DiskDevice]:
        return [DiskDevice(target, d["device"], d["file"], d["readonly"])
                for target, d in self._live().items()]

    def attach_device(self, xml: str) -> None:
        self._call("attach")
        disk = ET.fromstring(xml)  # noqa: S314 - the controller's own XML
        target = disk.find("target").get("dev")  # type: ignore[union-attr]
        live = self._live()
        if target in live:
            raise DriverError(f"target {target} already exists", "the disk target is taken")
        source = disk.find("source")
        live[str(target)] = {"device": disk.get("device", "disk"),
                             "file": source.get("file") if source is not None else None,
                             "readonly": disk.find("readonly") is not None,
                             "size": FAKE_DISK_BYTES}

    def update_device(self, xml: str) -> None:
        self._call("update")
        disk = ET.fromstring(xml)  # noqa: S314 - the controller's own XML
        if disk.tag == "interface":  # a NIC's filter parameters (nic_hotplug.py): in place
            return
        target = str(disk.find("target").get("dev"))  # type: ignore[union-attr]
        live = self._live()
        if target not in live:
            raise DriverError(f"no device {target}", "no such device")
        source = disk.find("source")
        live[target]["file"] = source.get("file") if source is not None else None

    def detach_disk(self, xml: str, target: str) -> bool:
        self._call("detach")
        if target in getattr(self.driver.cloud, "stuck_detach", set()):
            return False
        self._live().pop(target, None)
        return True

    def block_resize(self, target: str, size_bytes: int) -> None:
        self._call("resize")
        live = self._live()
        if target not in live:
            raise DriverError(f"no disk {target}", "no such disk")
        if size_bytes < live[target]["size"]:
            raise DriverError("shrink", "a disk is never shrunk")
        live[target]["size"] = size_bytes

    def block_capacity(self, target: str) -> int:
        return int(self._live()[target]["size"])

    def _nics(self) -> list[str]:
        self._live()  # refuses a domain that is not running
        dom = self._dom()
        if dom.live_nics is None:
            dom.live_nics = libvirt_devices.interface_macs(dom.xml)
        return dom.live_nics

    def nic_macs(self) -> list[str]:
        return list(self._nics())

    def attach_nic(self, xml: str) -> None:
        self._call("attach-nic")
        mac = ET.fromstring(xml).find("mac").get("address")  # type: ignore[union-attr] # noqa: S314
        if mac in self._nics():
            raise DriverError(f"MAC {mac} attached already", "the NIC is attached already")
        self._nics().append(str(mac))

    def detach_nic(self, mac: str) -> bool:
        self._call("detach-nic")
        if mac in getattr(self.driver.cloud, "stuck_detach", set()):
            return False
        if mac in self._nics():
            self._nics().remove(mac)
        return True

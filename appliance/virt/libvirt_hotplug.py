"""vCPUs and memory changed on a running domain through libvirt (the driver delegates here).

What libvirt 9.0 + QEMU 7.2 do under TCG, checked on this machine with the
demo guest (Debian's 6.1 kernel):

- vCPUs: the domain is defined with `<vcpu current='N'>MAX</vcpu>`;
  `setVcpusFlags(n, AFFECT_LIVE)` plugs vCPUs in ~20 ms, and the guest sees
  them offline until its userspace onlines them (a udev rule on real distros;
  the demo guest's init runs busybox `uevent` for it). Unplug is not offered:
  the guest does offline the vCPU, but libvirt times out waiting for QEMU
  ("vcpu unplug request timed out"), keeps counting it, and a later plug then
  crashes QEMU; so fewer vCPUs wait for the next boot.
- Memory: a virtio-mem device (`<memory model='virtio-mem'>`, which needs
  `<maxMemory>` and a NUMA cell) whose `<requested>` size is changed with
  `updateDeviceFlags(AFFECT_LIVE)` on the device's XML as the live definition
  shows it (libvirt finds the device by comparing it, not by alias alone). The
  guest's virtio_mem driver plugs the memory (its `<current>` follows within a
  second here) and the kernel onlines it (memhp_default_state=online); giving
  memory back works as far as the guest can empty the blocks (movable ones).
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TypeVar

import defusedxml.ElementTree as DefusedET
import libvirt

from appliance.virt.driver import DriverError, HotplugMemory

T = TypeVar("T")
_VIRTIO_MEM = "devices/memory[@model='virtio-mem']"
_UNITS_KIB = {"b": 1 / 1024, "bytes": 1 / 1024, "k": 1, "kib": 1, "kb": 1000 / 1024,
              "m": 1024, "mib": 1024, "mb": 1000 ** 2 / 1024, "g": 1024 ** 2, "gib": 1024 ** 2}


def _mib(element: ET.Element | None) -> int:
    """A libvirt size element (<size unit='KiB'>...) in MiB (0 when absent)."""
    if element is None or not (element.text or "").strip():
        return 0
    unit = element.get("unit", "KiB").lower()
    return int(int(element.text or "0") * _UNITS_KIB.get(unit, 1) // 1024)


def live_vcpus(dom: libvirt.virDomain) -> tuple[int, int]:
    live = libvirt.VIR_DOMAIN_AFFECT_LIVE
    return (int(dom.vcpusFlags(live)),
            int(dom.vcpusFlags(live | libvirt.VIR_DOMAIN_VCPU_MAXIMUM)))


def set_live_vcpus(dom: libvirt.virDomain, count: int) -> None:
    dom.setVcpusFlags(count, libvirt.VIR_DOMAIN_AFFECT_LIVE)


def _live_device(dom: libvirt.virDomain) -> tuple[ET.Element, ET.Element] | None:
    root = DefusedET.fromstring(dom.XMLDesc(0))
    device = root.find(_VIRTIO_MEM)
    return (root, device) if device is not None else None


def live_memory(dom: libvirt.virDomain) -> HotplugMemory | None:
    found = _live_device(dom)
    if found is None:
        return None
    root, device = found
    cells = root.findall("cpu/numa/cell")
    base = sum(_mib(_sized(cell)) for cell in cells) if cells else _mib(root.find("memory"))
    return HotplugMemory(base=base, size=_mib(device.find("target/size")),
                         requested=_mib(device.find("target/requested")),
                         current=_mib(device.find("target/current")))


def _sized(cell: ET.Element) -> ET.Element:
    """A NUMA cell's memory attribute as a size element, for _mib."""
    element = ET.Element("memory", unit=cell.get("unit", "KiB"))
    element.text = cell.get("memory", "0")
    return element


def request_live_memory(dom: libvirt.virDomain, requested_mib: int) -> None:
    found = _live_device(dom)
    if found is None:
        raise DriverError("the domain has no virtio-mem device",
                          "this VM was started without hot-pluggable memory")
    _root, device = found
    target = device.find("target")
    assert target is not None  # noqa: S101 - libvirt always writes <target> for virtio-mem
    current = target.find("current")
    if current is not None:  # read-only: libvirt refuses a change of it
        target.remove(current)
    requested = target.find("requested")
    if requested is None:
        requested = ET.SubElement(target, "requested")
    requested.set("unit", "MiB")
    requested.text = str(requested_mib)
    dom.updateDeviceFlags(ET.tostring(device, encoding="unicode"),
                          libvirt.VIR_DOMAIN_AFFECT_LIVE)


class HotplugMethods:
    """The Guest methods of live resize, for LibvirtGuest: each calls this module's
    function on the domain through the guest's `call` (libvirt errors -> DriverError)."""

    def call(self, function: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    def live_vcpus(self) -> tuple[int, int]:
        return self.call(live_vcpus)

    def set_live_vcpus(self, count: int) -> None:
        self.call(set_live_vcpus, count)

    def live_memory(self) -> HotplugMemory | None:
        return self.call(live_memory)

    def request_live_memory(self, requested_mib: int) -> None:
        self.call(request_live_memory, requested_mib)

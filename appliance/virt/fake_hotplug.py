"""Live resize on the fake hypervisor (fake.py's FakeGuest), as libvirt 9.0
behaves (libvirt_hotplug.py): what a running domain can grow to is what its
XML said when it started (a redefinition while it runs changes only the next
boot); vCPUs are only plugged, never beyond the maximum; a virtio-mem request
is taken by the guest at once, unless the test made its guest unwilling
(`FakeDomain.live["stuck"] = True`: no virtio_mem driver in it)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import defusedxml.ElementTree as DefusedET

from appliance.virt.driver import DriverError, HotplugMemory

if TYPE_CHECKING:
    from appliance.virt.fake import FakeDomain, FakeDriver


def boot(dom: FakeDomain) -> None:
    """The running shape, from the definition the domain starts with."""
    root = DefusedET.fromstring(dom.xml) if dom.xml else None
    live: dict[str, Any] = {"vcpus": 1, "max_vcpus": 1, "base": 0, "size": None,
                            "requested": 0, "current": 0, "stuck": dom.live.get("stuck", False)}
    if root is not None:
        vcpu = root.find("vcpu")
        if vcpu is not None:
            live["max_vcpus"] = int(vcpu.text or "1")
            live["vcpus"] = int(vcpu.get("current", live["max_vcpus"]))
        memory = root.find("memory")
        live["base"] = int(memory.text or "0") if memory is not None else 0
        cell = root.find("cpu/numa/cell")
        if cell is not None:
            live["base"] = int(cell.get("memory", "0"))
        size = root.find("devices/memory[@model='virtio-mem']/target/size")
        if size is not None:
            live["size"] = int(size.text or "0")
    dom.live = live


class FakeHotplugMethods:
    driver: FakeDriver

    def _dom(self) -> FakeDomain:
        raise NotImplementedError

    def _running(self, call: str) -> dict[str, Any]:
        dom = self._dom()
        self.driver.fake_host().calls.append(f"{call} {dom.uuid}")
        if dom.state not in ("running", "paused"):
            raise DriverError(f"{call}: domain is not running", "the domain is not running")
        if "vcpus" not in dom.live:  # started another way (start_paused)
            boot(dom)
        return dom.live

    def live_vcpus(self) -> tuple[int, int]:
        live = self._running("vcpus")
        return live["vcpus"], live["max_vcpus"]

    def set_live_vcpus(self, count: int) -> None:
        live = self._running("setvcpus")
        if count > live["max_vcpus"]:
            raise DriverError("requested vcpus is greater than max allowable vcpus",
                              "more vCPUs than the domain's maximum")
        if count < live["vcpus"]:
            raise DriverError("vcpu unplug request timed out", "vCPU unplug timed out")
        live["vcpus"] = count

    def live_memory(self) -> HotplugMemory | None:
        live = self._running("memory")
        if live["size"] is None:
            return None
        return HotplugMemory(base=live["base"], size=live["size"],
                             requested=live["requested"], current=live["current"])

    def request_live_memory(self, requested_mib: int) -> None:
        live = self._running("update-memory")
        if live["size"] is None:
            raise DriverError("no virtio-mem device", "no hot-pluggable memory")
        if requested_mib > live["size"]:
            raise DriverError("requested size exceeds the device's size", "beyond max_memory")
        live["requested"] = requested_mib
        if not live["stuck"]:
            live["current"] = requested_mib

"""A host's CPU through libvirt (issue 14, part F): what a guest can be given
there, the baseline of several hosts' CPUs, a model's full feature list, and
the host's hugepages. LibvirtDriver takes these methods from CpuMethods.

Verified on this machine (libvirt 9.0, QEMU 7.2, TCG; 2026-11-30): the
capabilities' <host><cpu> describes the physical CPU, whose baseline TCG
cannot run ("host doesn't support invariant TSC"); the domain capabilities'
host-model for virttype "qemu" is what TCG can emulate, and a baseline made
from those boots under TCG with check='full'. So each host records the
host-model of the appliance's own virttype (KVM: what KVM gives there), and
the capabilities' CPU only where the domain capabilities have none."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import defusedxml.ElementTree as DefusedET
import libvirt

from appliance.virt.libvirt_errors import translate

if TYPE_CHECKING:
    from appliance.virt.driver import CpuPins, DriverError

T = TypeVar("T")
ARCH = "x86_64"
MACHINE = "q35"
# The parts of the capabilities' <cpu> that describe this one machine, not the model.
_MACHINE_ONLY = ("microcode", "signature", "counter", "topology", "maxphysaddr", "pages", "cache")
_REQUIRED = re.compile(r"<feature policy='require' name='([^']+)'/>")


def hypervisor_cpu(conn: libvirt.virConnect, virttype: str) -> str | None:
    """This host's CPU as the hypervisor `virttype` can give it to a guest (a
    custom CPU definition: model, vendor, features), or None when unknown."""
    try:
        caps = DefusedET.fromstring(conn.getDomainCapabilities(None, ARCH, MACHINE, virttype))
        host_model = caps.find("cpu/mode[@name='host-model']")
        if host_model is not None and host_model.get("supported") == "yes" \
                and host_model.find("model") is not None:
            # a guest CPU definition: the host-model's features say require or disable
            cpu = ET.Element("cpu", {"mode": "custom", "match": "exact"})
            cpu.extend(host_model)
            return ET.tostring(cpu, encoding="unicode")
    except (libvirt.libvirtError, ET.ParseError):
        pass
    try:
        host_cpu = DefusedET.fromstring(conn.getCapabilities()).find("host/cpu")
    except (libvirt.libvirtError, ET.ParseError):
        return None
    if host_cpu is None or host_cpu.find("model") is None:
        return None
    for tag in _MACHINE_ONLY:
        for element in host_cpu.findall(tag):
            host_cpu.remove(element)
    return ET.tostring(host_cpu, encoding="unicode")


def baseline(conn: libvirt.virConnect, virttype: str, cpus: list[str]) -> str:
    """libvirt's baseline of these hosts' CPUs: a model (and features) every one
    of them runs, with the migratable features only. Hosts of different vendors
    (Intel and AMD) have no common named model: libvirt then gets them restated
    as a 486 with all their features, and answers a vendor-neutral model."""
    flags = libvirt.VIR_CONNECT_BASELINE_CPU_MIGRATABLE
    try:
        return conn.baselineHypervisorCPU(None, ARCH, MACHINE, virttype, cpus, flags)
    except libvirt.libvirtError as err:
        if "vendors do not match" not in (err.get_error_message() or ""):
            raise
    # A named model carries its vendor (cpu_map): each CPU is restated as the
    # vendor-neutral 486 (whose few features every x86_64 CPU has) with every
    # feature it has, and those are baselined.
    neutral = []
    for cpu in cpus:
        restated = ET.Element("cpu")
        ET.SubElement(restated, "arch").text = ARCH
        ET.SubElement(restated, "model").text = "486"  # cpu_map's least model
        for name in sorted(features(conn, virttype, cpu)):
            ET.SubElement(restated, "feature", {"name": name})
        neutral.append(ET.tostring(restated, encoding="unicode"))
    return conn.baselineHypervisorCPU(None, ARCH, MACHINE, virttype, neutral, flags)


def features(conn: libvirt.virConnect, virttype: str, cpu: str) -> frozenset[str]:
    """Every feature a CPU definition gives: its model's (libvirt's cpu_map,
    through baselineCPU's expansion of the bare model), plus those it requires,
    minus those it disables. Not baselineHypervisorCPU: that one adapts the
    answer to this host's hypervisor (a Skylake seen from a host whose KVM
    lacks AVX2 loses it), and the CPU asked about is often another host's."""
    from appliance.virt.cpu_xml import model_parts  # domain.py imports cpu_xml: no cycle here
    parts = model_parts(cpu)
    if parts is None:
        raise libvirt.libvirtError(f"not a CPU definition with a model ({virttype})")
    model, vendor, listed = parts
    bare = ET.Element("cpu")
    ET.SubElement(bare, "arch").text = ARCH
    ET.SubElement(bare, "model").text = model
    if vendor:
        ET.SubElement(bare, "vendor").text = vendor
    expanded = conn.baselineCPU([ET.tostring(bare, encoding="unicode")],
                                libvirt.VIR_CONNECT_BASELINE_CPU_EXPAND_FEATURES)
    given = set(_REQUIRED.findall(expanded))
    given |= {name for policy, name in listed if policy in ("require", "force")}
    given -= {name for policy, name in listed if policy in ("disable", "forbid")}
    return frozenset(given)


def compare(conn: libvirt.virConnect, virttype: str, cpu: str) -> bool:
    """Whether this host's hypervisor can run a guest with this CPU."""
    result = conn.compareHypervisorCPU(None, ARCH, MACHINE, virttype, cpu, 0)
    return result in (libvirt.VIR_CPU_COMPARE_IDENTICAL, libvirt.VIR_CPU_COMPARE_SUPERSET)


def hugepages_mib(conn: libvirt.virConnect) -> tuple[int, int]:
    """(total, free) MiB of 2 MiB hugepages over the host's NUMA cells."""
    caps = DefusedET.fromstring(conn.getCapabilities())
    cells = caps.findall("host/topology/cells/cell")
    total = sum(int(p.text or 0) for cell in cells
                for p in cell.findall("pages[@size='2048']"))
    try:
        free_pages = conn.getFreePages([2048], 0, max(1, len(cells)))
    except libvirt.libvirtError:
        free_pages = {}
    free = sum(counts.get(2048, 0) for counts in free_pages.values())
    return total * 2, free * 2


def repinned_xml(dom: libvirt.virDomain, pins: CpuPins | None) -> dict[str, str]:
    """A live migration's parameters that give the target its own host CPU
    pins: the running domain's XML (and its persistent definition) re-pinned
    (cpu_xml.repin); {} when neither pins anything. SECURE: the XML the
    target gets keeps what libvirt's own migration would carry (passwords)."""
    from appliance.virt.cpu_xml import repin  # domain.py imports cpu_xml: no cycle here
    if pins is None:
        return {}
    flags = libvirt.VIR_DOMAIN_XML_MIGRATABLE | libvirt.VIR_DOMAIN_XML_SECURE
    live = repin(dom.XMLDesc(flags), pins.pinned, pins.shared)
    if live is None:
        return {}
    params = {libvirt.VIR_MIGRATE_PARAM_DEST_XML: live}
    if dom.isPersistent():
        persistent = repin(dom.XMLDesc(flags | libvirt.VIR_DOMAIN_XML_INACTIVE),
                           pins.pinned, pins.shared)
        if persistent is not None:
            params[libvirt.VIR_MIGRATE_PARAM_PERSIST_XML] = persistent
    return params


class CpuMethods:
    """The HostDriver's CPU methods for LibvirtDriver (which gives `conn`)."""

    conn: libvirt.virConnect

    def _call(self, function: Callable[..., T], *args: object) -> T:
        try:
            return function(self.conn, *args)
        except libvirt.libvirtError as err:
            error: DriverError = translate(err)
            raise error from err

    def cpu_xml(self, virttype: str) -> str | None:
        return self._call(hypervisor_cpu, virttype)

    def baseline_cpu(self, virttype: str, cpus: list[str]) -> str:
        return self._call(baseline, virttype, cpus)

    def cpu_features(self, virttype: str, cpu: str) -> frozenset[str]:
        return self._call(features, virttype, cpu)

    def runs_cpu(self, virttype: str, cpu: str) -> bool:
        return self._call(compare, virttype, cpu)

    def cpu_inventory(self) -> dict:
        total, free = self._call(hugepages_mib)
        return {"hugepages_mib": total, "hugepages_free_mib": free}

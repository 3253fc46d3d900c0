"""The CPU parts of a domain (issue 14, part F): <cpu> (model and topology),
<cputune> (pinning) and <memoryBacking> (hugepages), from the spec's `cpu` and
`hugepages` and what the controller chose for the host (DomainPlan's
cluster_cpu, pinned_cpus, shared_cpus).

The cluster model arrives as libvirt's own baseline XML (the store's meta
"cluster_cpu"); only its model, vendor and features are copied, each checked,
into an element built here."""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import defusedxml.ElementTree as DefusedET

from appliance.model.cpu import CpuMode, cpu_of, cpuset_text, hugepages_of, topology

if TYPE_CHECKING:
    from appliance.virt.domain import DomainPlan

# cpu_map's names: letters, digits and a few marks (Skylake-Client-IBRS, sse4.1, Opteron_G2)
_NAME = re.compile(r"[A-Za-z0-9_.+-]{1,64}")
_POLICIES = frozenset({"require", "disable", "force", "optional", "forbid"})


cpuset = cpuset_text  # libvirt's cpuset text: 0-3,6


def model_parts(cpu_xml: str) -> tuple[str, str | None, list[tuple[str, str]]] | None:
    """(model, vendor, [(policy, feature)]) of a baseline CPU XML, or None when
    it has no model or a part that is not a plain cpu_map name."""
    try:
        root = DefusedET.fromstring(cpu_xml)
    except ET.ParseError:
        return None
    model = root.findtext("model")
    if not model or not _NAME.fullmatch(model):
        return None
    vendor = root.findtext("vendor")
    if vendor is not None and not _NAME.fullmatch(vendor):
        return None
    features = []
    for feature in root.findall("feature"):
        name, policy = feature.get("name") or "", feature.get("policy") or "require"
        if not _NAME.fullmatch(name) or policy not in _POLICIES:
            return None
        features.append((policy, name))
    return model, vendor, features


def running_cpu(domain_xml: str) -> str | None:
    """The CPU definition (model, vendor, features) a domain's XML gives its
    guest, rebuilt from its checked parts; None when it names no model (a
    host-model or TCG default CPU) or is not a domain XML."""
    try:
        cpu = DefusedET.fromstring(domain_xml).find("cpu") if domain_xml else None
    except ET.ParseError:
        return None
    parts = model_parts(ET.tostring(cpu, encoding="unicode")) if cpu is not None else None
    if parts is None:
        return None
    model, vendor, features = parts
    rebuilt = ET.Element("cpu", {"mode": "custom", "match": "exact"})
    ET.SubElement(rebuilt, "model", {"fallback": "forbid"}).text = model
    if vendor:
        ET.SubElement(rebuilt, "vendor").text = vendor
    for policy, name in features:
        ET.SubElement(rebuilt, "feature", {"policy": policy, "name": name})
    return ET.tostring(rebuilt, encoding="unicode")


def _cpu_element(domain: ET.Element, plan: DomainPlan, mode: str) -> ET.Element:
    kvm = plan.domain_type == "kvm"
    if mode == CpuMode.HOST_PASSTHROUGH:
        # TCG has no host CPU to pass through; 'maximum' is its equivalent (all it can do).
        return ET.SubElement(domain, "cpu", {"mode": "host-passthrough" if kvm else "maximum"})
    if mode == CpuMode.HOST_MODEL:
        return ET.SubElement(domain, "cpu", {"mode": "host-model"})
    parts = model_parts(plan.cluster_cpu) if plan.cluster_cpu else None
    if parts is None:
        # No baseline yet (no host answered): KVM as before, host-model; TCG its default.
        return ET.SubElement(domain, "cpu", {"mode": "host-model"} if kvm else {})
    model, vendor, features = parts
    # check='partial': libvirt checks at start that this host gives every feature
    # asked for; fallback='forbid': no silent substitution of another model.
    cpu = ET.SubElement(domain, "cpu", {"mode": "custom", "match": "exact", "check": "partial"})
    ET.SubElement(cpu, "model", {"fallback": "forbid"}).text = model
    if vendor:
        ET.SubElement(cpu, "vendor").text = vendor
    for policy, name in features:
        ET.SubElement(cpu, "feature", {"policy": policy, "name": name})
    return cpu


def add(domain: ET.Element, plan: DomainPlan) -> None:
    """<cpu>, and when asked for <cputune> and <memoryBacking>, into `domain`
    (whose <vcpu> is built already: its count is the topology's product)."""
    spec = plan.spec
    cpu = cpu_of(spec)
    vcpu = domain.find("vcpu")
    vcpus = int(vcpu.text or 1) if vcpu is not None else int(spec["cpus"])
    element = _cpu_element(domain, plan, cpu.get("mode", CpuMode.CLUSTER))
    sockets, cores, threads = topology(cpu, vcpus)
    ET.SubElement(element, "topology", {"sockets": str(sockets), "dies": "1",
                                        "cores": str(cores), "threads": str(threads)})
    _pinning(domain, vcpu, plan.pinned_cpus, plan.shared_cpus)
    if hugepages_of(spec):
        backing = ET.SubElement(domain, "memoryBacking")
        ET.SubElement(backing, "hugepages")


def _pinning(domain: ET.Element, vcpu: ET.Element | None, pinned: tuple[int, ...] | None,
             shared_cpus: tuple[int, ...] | None) -> None:
    """A dedicated VM: vCPU i on host CPU pinned[i] alone, its emulator
    threads on the shared CPUs. A shared VM on a host with a dedicated set:
    every vCPU and the emulator on the shared CPUs, never a dedicated one."""
    if not shared_cpus:
        return  # a host without a dedicated set: no pinning at all, as before
    shared = cpuset(shared_cpus)
    if vcpu is not None:  # the default of every vCPU without a <vcpupin> of its own
        vcpu.set("cpuset", shared)
    tune = domain.find("cputune")
    if tune is None:
        tune = ET.SubElement(domain, "cputune")
    vcpus = int(vcpu.text or 1) if vcpu is not None else len(pinned or ())
    for index, host_cpu in enumerate((pinned or ())[:vcpus]):
        ET.SubElement(tune, "vcpupin", {"vcpu": str(index), "cpuset": str(host_cpu)})
    ET.SubElement(tune, "emulatorpin", {"cpuset": shared})


_PIN_TAGS = ("vcpupin", "emulatorpin")  # what _pinning makes


def repin(domain_xml: str, pinned: tuple[int, ...] | None,
          shared_cpus: tuple[int, ...] | None) -> str | None:
    """A domain's XML (libvirt's, of the running guest) with its host CPU pins
    replaced by those of another host (a live migration's target): vCPU and
    emulator pins as add() makes them, every other part as it was, so that the
    guest's ABI is untouched. None when the XML pins nothing and nothing is to
    be pinned: it can travel as it is."""
    root = DefusedET.fromstring(domain_xml)
    vcpu = root.find("vcpu")
    tune = root.find("cputune")
    old_pins = [] if tune is None else [e for e in tune if e.tag in _PIN_TAGS]
    if not shared_cpus and not old_pins and (vcpu is None or vcpu.get("cpuset") is None):
        return None
    if vcpu is not None:
        vcpu.attrib.pop("cpuset", None)
    if tune is not None:
        for element in old_pins:
            tune.remove(element)
        if len(tune) == 0 and not tune.attrib:
            root.remove(tune)
    _pinning(root, vcpu, pinned, shared_cpus)
    return ET.tostring(root, encoding="unicode")

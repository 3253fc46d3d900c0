"""libvirt domain XML, built from a spec with ElementTree (never by formatting strings).

The domain carries the appliance's identity in <metadata>, so that a restarted
controller can tell its own domains from strangers and match them to VMs even
after a rename.
"""
from __future__ import annotations

import dataclasses
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import defusedxml.ElementTree as DefusedET

from appliance.model.hotplug import MEMORY_BLOCK_MIB
from appliance.virt import cpu_xml, domain_devices, firmware, nwfilter_xml, xml_patches

METADATA_NS = "urn:vm-appliance:domain:1"
ET.register_namespace("vma", METADATA_NS)
QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)
# The netdev libvirt makes for the NIC aliased ua-net0; port forwards are added to it.
USER_NETDEV = "hostua-net0"
# A slot on q35's root bus for the restricted NIC, which libvirt does not know
# about: libvirt fills pcie.0 from slot 1 upwards (root ports, 8 per slot) and
# keeps 0x1f for the chipset, so 0x1e stays clear for any VM this appliance builds.
RESTRICTED_NIC_ADDR = "0x1e"
AGENT_CHANNEL = "org.qemu.guest_agent.0"  # the guest agent's virtio-serial port


@dataclasses.dataclass
class DomainPlan:
    vm_id: str
    domain_name: str
    vm_name: str
    instance_id: str  # which appliance owns the domain
    spec: dict
    domain_type: str  # "kvm" or "qemu" (TCG)
    vm_dir: Path
    mac: str
    seed_iso: Path | None
    direct_io: bool
    # Issue 14, part F (virt/cpu_xml.py): the cluster's baseline CPU XML, the host
    # CPUs a dedicated VM's vCPUs are pinned to, and the host's shared CPUs (None:
    # the host has no dedicated set, nothing is pinned).
    cluster_cpu: str | None = None
    pinned_cpus: tuple[int, ...] | None = None
    shared_cpus: tuple[int, ...] | None = None
    # each CD-ROM drive's ISO file, from the image store (None: empty); issue 14
    cdrom_files: list[Path | None] = dataclasses.field(default_factory=list)
    # issue 15: each libvirt-network NIC's nwfilter parameters, by MAC (nwfilter_xml.py);
    # a NIC not in it has no filter
    nic_filters: dict[str, dict[str, str]] = dataclasses.field(default_factory=dict)

    @property
    def root_disk(self) -> Path:
        return self.vm_dir / "root.qcow2"

    def disk_path(self, name: str) -> Path:
        return self.vm_dir / f"disk-{name}.qcow2"

    @property
    def console_log(self) -> Path:
        return self.vm_dir / "console.log"


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    element = ET.SubElement(parent, tag, {k.rstrip("_"): v for k, v in attrs.items()})
    if text is not None:
        element.text = text
    return element


def _disk(
    devices: ET.Element, path: Path, fmt: str, target: str, cache: str, readonly: bool = False
) -> None:
    disk = _sub(devices, "disk", type="file", device="disk")
    _sub(
        disk,
        "driver",
        name="qemu",
        type=fmt,
        cache=cache,
        discard="unmap" if fmt == "qcow2" else "ignore",
    )
    _sub(disk, "source", file=str(path))
    _sub(disk, "target", dev=target, bus="virtio")
    if readonly:
        _sub(disk, "readonly")


def disk_xml(path: Path, target: str, cache: str) -> str:
    """One writable qcow2 virtio disk, as build() makes them (a hot-plugged data disk)."""
    holder = ET.Element("devices")
    _disk(holder, path, "qcow2", target, cache)
    return ET.tostring(holder[0], encoding="unicode")


def _nova_smbios(domain: ET.Element, os_el: ET.Element, vm_id: str) -> None:
    """The SMBIOS system Nova gives its guests: cloud-init's ds-identify and its
    OpenStack datasource know the platform by the product name, and only then
    ask 169.254.169.254 (a `"datasource": "metadata"` VM has no seed disk)."""
    system = _sub(_sub(domain, "sysinfo", type="smbios"), "system")
    for name, value in (("manufacturer", "OpenStack Foundation"),
                        ("product", "OpenStack Nova"), ("serial", vm_id), ("uuid", vm_id),
                        ("family", "Virtual Machine")):
        _sub(system, "entry", value, name=name)
    _sub(os_el, "smbios", mode="sysinfo")


def build(plan: DomainPlan) -> str:
    spec = plan.spec
    domain = ET.Element("domain", {"type": plan.domain_type})
    _sub(domain, "name", plan.domain_name)
    _sub(domain, "uuid", plan.vm_id)
    metadata = _sub(domain, "metadata")
    ET.SubElement(
        metadata,
        f"{{{METADATA_NS}}}vm",
        {"appliance": plan.instance_id, "id": plan.vm_id, "name": plan.vm_name},
    )
    _sub(domain, "memory", str(spec["memory"]), unit="MiB")
    _sub(domain, "currentMemory", str(spec["memory"]), unit="MiB")
    # Room for hot-plugged vCPUs (issue 14: controller/hotplug.py): the domain has
    # max_cpus, cpus of them online. Written before cpu_xml.add, whose topology
    # counts every vCPU the domain can have.
    max_cpus = max(spec.get("max_cpus") or spec["cpus"], spec["cpus"])
    vcpu = _sub(domain, "vcpu", str(max_cpus), placement="static")
    if max_cpus > spec["cpus"]:
        vcpu.set("current", str(spec["cpus"]))
    os_el = _sub(domain, "os")
    _sub(os_el, "type", "hvm", arch="x86_64", machine=firmware.machine_of(spec))
    _sub(os_el, "boot", dev="hd")
    by_metadata = (spec.get("cloud_init") or {}).get("datasource") == "metadata"
    if by_metadata:
        _nova_smbios(domain, os_el, plan.vm_id)
    features = _sub(domain, "features")
    _sub(features, "acpi")
    _sub(features, "apic")
    cpu_xml.add(domain, plan)  # <cpu> model and topology, pinning, hugepages (spec.cpu)
    _sub(domain, "clock", offset="utc")
    _sub(domain, "on_poweroff", "destroy")
    _sub(domain, "on_reboot", "restart")
    _sub(domain, "on_crash", "destroy")

    devices = _sub(domain, "devices")
    cache = "none" if plan.direct_io else "writeback"
    targets = iter(f"vd{chr(ord('a') + i)}" for i in range(26))
    _disk(devices, plan.root_disk, "qcow2", next(targets), cache)
    for disk in spec.get("disks", []):
        _disk(devices, plan.disk_path(disk["name"]), "qcow2", next(targets), cache)
    if plan.seed_iso is not None and not by_metadata:  # metadata: the service only
        # As KubeVirt attaches its NoCloud seed: a read-only raw virtio disk.
        _disk(devices, plan.seed_iso, "raw", next(targets), cache, readonly=True)

    network = spec.get("network", {"type": "none"})
    if network["type"] == "user" and network.get("outbound") == "none":
        _restricted_nic(domain, plan.mac, firmware.ROOT_BUS[firmware.machine_of(spec)])
    elif network["type"] != "none":
        if network["type"] == "user":
            iface = _sub(devices, "interface", type="user")
        else:
            iface = _sub(devices, "interface", type="network")
            _sub(iface, "source", network=network["name"])
        _sub(iface, "mac", address=plan.mac)
        _sub(iface, "model", type="virtio")
        # No iPXE option ROM: VMs boot from their disk, and the ROM's network
        # probing costs seconds under TCG.
        _sub(iface, "rom", enabled="no")
        _sub(iface, "alias", name="ua-net0")
        if plan.mac in plan.nic_filters:
            nwfilter_xml.add_filterref(iface, plan.vm_id, plan.nic_filters[plan.mac])
    for nic in spec.get("networks") or []:  # further NICs (model/nics.py)
        devices.append(nic_element(nic, plan.vm_id, plan.nic_filters.get(nic["mac"])))

    # A pty serial port whose output libvirt (virtlogd) also appends to a file:
    # `virsh console` stays interactive and `console` in the tree can be tailed.
    serial = _sub(devices, "serial", type="pty")
    _sub(serial, "log", file=str(plan.console_log), append="on")
    _sub(serial, "target", port="0")
    console = _sub(devices, "console", type="pty")
    _sub(console, "target", type="serial", port="0")

    if spec.get("graphics", "vnc") == "vnc":
        # A VNC server that listens nowhere: no port, no socket file. Clients are
        # handed to QEMU by libvirt's openGraphicsFD (appliance/consoles/), so
        # the only way in is the appliance's authenticated proxy. The video
        # model: vga shows text and screenshots on every guest; sharePolicy
        # lets several viewers watch at once.
        graphics = _sub(devices, "graphics", type="vnc", sharePolicy="allow-exclusive")
        _sub(graphics, "listen", type="none")
        video = _sub(devices, "video")
        _sub(video, "model", type="vga")

    agent = _sub(devices, "channel", type="unix")
    _sub(agent, "target", type="virtio", name=AGENT_CHANNEL)
    balloon = _sub(devices, "memballoon", model="virtio")
    _sub(balloon, "stats", period="5")
    rng = _sub(devices, "rng", model="virtio")
    _sub(rng, "backend", "/dev/urandom", model="random")
    firmware.add(domain, plan.vm_dir, spec)  # part G: UEFI, its NVRAM, SMM, the TPM
    _live_shape(domain, devices, spec)
    domain_devices.add_media(domain, devices, spec, plan.cdrom_files)
    ET.indent(domain)
    # an admin's patches, last (virt/xml_patches.py; PatchError if one cannot apply)
    return xml_patches.apply(ET.tostring(domain, encoding="unicode"), spec.get("xml_patches", []))


def nic_element(nic: dict, vm_id: str = "", filter_params: dict[str, str] | None = None
                ) -> ET.Element:
    """A further NIC (spec networks[i], its network resolved to the libvirt name): on a
    libvirt network, its MAC (which libvirt finds it by when it is detached), and the
    VM's network filter with the NIC's parameters (issue 15), when given."""
    iface = ET.Element("interface", type="network")
    _sub(iface, "mac", address=nic["mac"])
    _sub(iface, "source", network=nic["network"])
    _sub(iface, "model", type="virtio")
    _sub(iface, "rom", enabled="no")
    if filter_params is not None:
        nwfilter_xml.add_filterref(iface, vm_id, filter_params)
    return iface


def nic_xml(nic: dict, vm_id: str = "", filter_params: dict[str, str] | None = None) -> str:
    return ET.tostring(nic_element(nic, vm_id, filter_params), encoding="unicode")


def _live_shape(domain: ET.Element, devices: ET.Element, spec: dict) -> None:
    """Room to grow while running (issue 14; controller/hotplug.py): vCPUs up to
    max_cpus (`<vcpu current='cpus'>max_cpus</vcpu>`, written by build()), and memory up to
    max_memory through a virtio-mem device over the part above `memory`, which
    needs <maxMemory> and a NUMA cell holding the boot memory (libvirt 9.0 +
    QEMU 7.2; virt/libvirt_hotplug.py says what was checked). The device
    starts empty (requested 0): the guest boots with `memory`. The spec's
    maxima are resolved by then (model/hotplug.py: with_maxima); without them
    the domain is built with no room."""
    cpus, memory = spec["cpus"], spec["memory"]
    max_cpus = max(spec.get("max_cpus") or cpus, cpus)  # the <vcpu> build() wrote
    extra = max((spec.get("max_memory") or memory) - memory, 0)
    extra -= extra % MEMORY_BLOCK_MIB
    if not extra:
        return
    _sub(domain, "maxMemory", str(memory + extra), unit="MiB", slots="1")
    total = domain.find("memory")  # libvirt counts memory devices in <memory>
    assert total is not None  # noqa: S101 - build() wrote it
    total.text = str(memory + extra)
    cpu = domain.find("cpu")
    if cpu is None:
        cpu = _sub(domain, "cpu")
    numa = _sub(cpu, "numa")
    _sub(numa, "cell", id="0", cpus=f"0-{max_cpus - 1}", memory=str(memory), unit="MiB")
    target = _sub(_sub(devices, "memory", model="virtio-mem"), "target")
    _sub(target, "size", str(extra), unit="MiB")
    _sub(target, "node", "0")
    _sub(target, "block", str(MEMORY_BLOCK_MIB), unit="MiB")
    _sub(target, "requested", "0", unit="MiB")


def _restricted_nic(domain: ET.Element, mac: str, bus: str) -> None:
    """A user-mode NIC with QEMU's restrict=on: the guest reaches nothing on the
    host (10.0.2.2 is the host's loopback otherwise) nor beyond; forwards into
    it still work. libvirt 9.0's <interface type='user'> cannot say restrict,
    so the netdev and the NIC are given to QEMU directly, with the ids libvirt
    would have used (so the port forwards find the netdev the same way)."""
    netdev = {"type": "user", "id": USER_NETDEV, "restrict": True}
    device = {
        "driver": "virtio-net-pci",
        "netdev": USER_NETDEV,
        "id": "ua-net0",
        "mac": mac,
        "bus": bus,
        "addr": RESTRICTED_NIC_ADDR,
        "romfile": "",
    }  # no iPXE ROM, as rom enabled='no'
    commandline = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
    for value in ("-netdev", json.dumps(netdev), "-device", json.dumps(device)):
        ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", {"value": value})


def read_identity(xml: str) -> dict | None:
    """The appliance's <metadata> entry of a domain, or None for a stranger."""
    try:
        root = DefusedET.fromstring(xml)
    except ET.ParseError:
        return None
    element = root.find(f"metadata/{{{METADATA_NS}}}vm")
    return dict(element.attrib) if element is not None else None


def appliance_of(element: str) -> str:
    """The appliance (its instance id) that a domain's <metadata> entry names, as
    libvirt's virDomainGetMetadata returns the entry; "" if it names none."""
    try:
        root = DefusedET.fromstring(element)
    except ET.ParseError:
        return ""
    return root.get("appliance") or ""


def agent_channel_state(xml: str) -> str | None:
    """The guest agent channel's state in a running domain's live XML: "connected"
    once the guest opened its port (and libvirt handled that), "disconnected" before
    and after; "" when libvirt shows none (an inactive domain); None without the channel."""
    try:
        root = DefusedET.fromstring(xml)
    except ET.ParseError:
        return None
    for target in root.iterfind("devices/channel/target"):
        if target.get("type") == "virtio" and target.get("name") == AGENT_CHANNEL:
            return target.get("state") or ""
    return None

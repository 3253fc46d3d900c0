"""A libvirt domain the appliance did not create, read back into a VM spec
(`vmctl adopt`, service/adoption.py), or refused with the reason.

Pure: the domain's inactive XML in, a `Shape` out (the spec's fields, and each
disk's file as the domain names it), or `Unrepresentable(reason)`. Only what
the appliance builds again the same way is taken (virt/domain.py): vCPUs and
memory, file disks, one NIC (user mode or a libvirt network), the display,
the firmware and machine, a TPM, hugepages, the CPU mode and topology. A
device or setting it would drop silently is refused instead (host devices,
raw QEMU arguments, block or network disks, a second NIC, ...): an adoption
changes nothing until the spec says all that the domain was.

Paths here are only read out of the XML; service/adoption.py checks them
against the folders the admin allowed before anything opens them.
"""
from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET
from typing import Any

import defusedxml.ElementTree as DefusedET

from appliance.virt.domain import METADATA_NS, QEMU_NS

MAX_XML = 1 << 20
# Devices that the appliance's own domain has (or that it drops without loss for
# the guest: input devices, the controllers libvirt adds, the emulator's path).
KEPT_DEVICES = frozenset({"disk", "interface", "serial", "console", "channel", "input",
                          "graphics", "video", "memballoon", "rng", "controller", "emulator",
                          "tpm", "audio", "sound", "watchdog", "panic"})
UNITS = {"b": 1, "bytes": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20,
         "mib": 1 << 20, "mb": 1000 ** 2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000 ** 3}
BUSES = ("virtio", "sata", "scsi", "ide", "usb")


class Unrepresentable(Exception):
    """The domain has something a VM spec cannot say; the reason says what."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class DiskFile:
    name: str  # "root" or the spec's disk name
    path: str  # as the domain's XML names it (unchecked)
    format: str  # "qcow2" or "raw", as the domain's driver says
    target: str  # vda, sdb, ...


@dataclasses.dataclass
class Shape:
    name: str
    uuid: str
    spec: dict[str, Any]  # the spec's fields (no name, image, disks' sizes yet)
    disks: list[DiskFile]
    notes: list[str]


def _mib(element: ET.Element | None) -> int:
    if element is None or not (element.text or "").strip().isdigit():
        raise Unrepresentable("its memory is not a number")
    unit = UNITS.get((element.get("unit") or "KiB").lower())
    if unit is None:
        raise Unrepresentable(f"memory unit {element.get('unit')!r} unknown")
    return int(element.text or 0) * unit // (1 << 20)


def _refuse_unrepresentable(root: ET.Element) -> None:
    if root.find(f"metadata/{{{METADATA_NS}}}vm") is not None:
        raise Unrepresentable("it is already an appliance's domain (its <metadata> says so)")
    if root.find(f"{{{QEMU_NS}}}commandline") is not None or any(
            child.tag.startswith(f"{{{QEMU_NS}}}") for child in root):
        raise Unrepresentable("it passes raw arguments to QEMU (qemu:commandline), which a spec "
                              "cannot say; an admin adds them after adoption as xml_patches")
    devices = root.find("devices")
    for device in [] if devices is None else list(devices):
        if device.tag not in KEPT_DEVICES:
            kind = "passthrough " if device.tag in ("hostdev", "redirdev") else ""
            raise Unrepresentable(f"it has a {kind}<{device.tag}> device, which the "
                                  "appliance does not give VMs")
    for tag in ("iothreads", "numatune", "blkiotune", "sysinfo", "idmap", "resource"):
        if root.find(tag) is not None:
            raise Unrepresentable(f"it sets <{tag}>, which a spec cannot say")
    os_type = root.find("os/type")
    if os_type is None or os_type.text != "hvm" or os_type.get("arch", "x86_64") != "x86_64":
        raise Unrepresentable("only x86_64 hvm guests are adopted")
    if root.find("os/kernel") is not None:
        raise Unrepresentable("it boots a kernel file directly (<os><kernel>), which a spec "
                              "cannot say")


def _machine_and_firmware(root: ET.Element, notes: list[str]) -> dict[str, Any]:
    machine_name = (root.find("os/type").get("machine") or "q35")  # type: ignore[union-attr]
    if "q35" in machine_name:
        machine = "q35"
    elif machine_name == "pc" or "i440fx" in machine_name:
        machine = "pc"
    else:
        raise Unrepresentable(f"machine type {machine_name!r} is neither q35 nor pc")
    os_el = root.find("os")
    loader = root.find("os/loader")
    efi = (os_el is not None and os_el.get("firmware") == "efi") or (
        loader is not None and loader.get("type") == "pflash")
    secure = efi and (loader is not None and loader.get("secure") == "yes" or any(
        f.get("name") == "secure-boot" and f.get("enabled") == "yes"
        for f in root.iterfind("os/firmware/feature")))
    if efi:
        notes.append("UEFI: the appliance gives the VM fresh NVRAM (boot entries are "
                     "found again by the firmware's fallback path)")
    return {"machine": machine,
            "firmware": "uefi-secure" if secure else ("uefi" if efi else "bios")}


def _cpus(root: ET.Element, notes: list[str]) -> dict[str, Any]:
    vcpu = root.find("vcpu")
    if vcpu is None or not (vcpu.text or "").strip().isdigit():
        raise Unrepresentable("it has no vCPU count")
    most = int(vcpu.text or 1)
    current = int(vcpu.get("current") or most)
    out: dict[str, Any] = {"cpus": current}
    if most > current:
        out["max_cpus"] = most
    cpu_el = root.find("cpu")
    cpu: dict[str, Any] = {}
    mode = cpu_el.get("mode") if cpu_el is not None else None
    if mode in ("host-model", "host-passthrough"):
        cpu["mode"] = mode
    elif mode == "custom" or (cpu_el is not None and cpu_el.find("model") is not None):
        notes.append("CPU: its custom model becomes the cluster's baseline")
    topology = cpu_el.find("topology") if cpu_el is not None else None
    if topology is not None:
        cpu.update({key: int(topology.get(key) or 1) for key in ("sockets", "cores", "threads")})
        cpu.pop("dies", None)
    if cpu:
        out["cpu"] = cpu
    if root.find("cputune/vcpupin") is not None:
        notes.append("CPU: its vCPU pinning is not kept (spec.cpu.dedicated pins anew)")
    return out


def _disks(root: ET.Element, notes: list[str]) -> list[DiskFile]:
    files: list[DiskFile] = []
    for disk in root.iterfind("devices/disk"):
        device = disk.get("device", "disk")
        target_el = disk.find("target")
        target = (target_el.get("dev") or "?") if target_el is not None else "?"
        if device == "cdrom":
            if disk.find("source") is not None:
                raise Unrepresentable(f"its CD-ROM {target} holds media; eject it first "
                                      "(the appliance's media are images of its store)")
            notes.append(f"the empty CD-ROM drive {target} is not kept")
            continue
        if device != "disk":
            raise Unrepresentable(f"its {device} {target} is not a disk the appliance gives VMs")
        if disk.get("type") != "file":
            raise Unrepresentable(f"disk {target} is a {disk.get('type')} disk; only file "
                                  "disks are adopted")
        source = disk.find("source")
        driver = disk.find("driver")
        fmt = driver.get("type", "raw") if driver is not None else "raw"
        if source is None or not source.get("file"):
            raise Unrepresentable(f"disk {target} has no file")
        if fmt not in ("qcow2", "raw"):
            raise Unrepresentable(f"disk {target} is {fmt}; only qcow2 and raw are adopted")
        if disk.find("readonly") is not None or disk.find("shareable") is not None:
            raise Unrepresentable(f"disk {target} is read-only or shared")
        bus = target_el.get("bus", "virtio") if target_el is not None else "virtio"
        if bus not in BUSES:
            raise Unrepresentable(f"disk {target} is on a {bus} bus")
        if bus != "virtio":
            notes.append(f"disk {target} moves from the {bus} bus to virtio")
        files.append(DiskFile("", source.get("file", ""), fmt, target))
    if not files:
        raise Unrepresentable("it has no disk to boot from")
    # The boot disk first: the one <boot order='1'> names, else the first.
    ordered = sorted(range(len(files)), key=lambda i: _boot_order(root, files[i].target))
    files = [files[i] for i in ordered]
    files[0].name = "root"
    for index, extra in enumerate(files[1:], start=1):
        extra.name = f"disk{index}"
    return files


def _boot_order(root: ET.Element, target: str) -> int:
    for disk in root.iterfind("devices/disk"):
        element = disk.find("target")
        boot = disk.find("boot")
        if element is not None and element.get("dev") == target and boot is not None:
            return int(boot.get("order") or 1000)
    return 1000


def _network(root: ET.Element) -> dict[str, Any]:
    interfaces = root.findall("devices/interface")
    if not interfaces:
        return {"type": "none"}
    if len(interfaces) > 1:
        raise Unrepresentable(f"it has {len(interfaces)} NICs; the appliance gives a VM one")
    iface = interfaces[0]
    kind = iface.get("type")
    out: dict[str, Any]
    if kind == "user":
        out = {"type": "user", "port_forwards": _forwards(iface)}
    elif kind == "network":
        source = iface.find("source")
        out = {"type": "network", "name": source.get("network") if source is not None else None}
    else:
        raise Unrepresentable(f"its NIC is of type {kind!r}; the appliance's are user mode or "
                              "a libvirt network")
    mac = iface.find("mac")
    if mac is not None and mac.get("address"):
        out["mac"] = mac.get("address")
    return out


def _forwards(iface: ET.Element) -> list[dict[str, Any]]:
    forwards: list[dict[str, Any]] = []
    for forward in iface.iterfind("portForward"):
        proto = forward.get("proto", "tcp")
        for port_range in forward.iterfind("range"):
            start, to = port_range.get("start"), port_range.get("to") or port_range.get("start")
            if port_range.get("end") or not (start or "").isdigit() or not (to or "").isdigit():
                raise Unrepresentable("its port forward ranges are not single ports")
            forwards.append({"host_port": int(start or 0), "guest_port": int(to or 0),
                             "protocol": proto,
                             "host_address": forward.get("address") or "127.0.0.1"})
    return forwards


def read(xml: str) -> Shape:
    """The domain's shape, or Unrepresentable naming the first thing a spec cannot say."""
    if len(xml) > MAX_XML:
        raise Unrepresentable("its XML is larger than 1 MiB")
    try:
        root = DefusedET.fromstring(xml)
    except (ET.ParseError, ValueError) as err:
        raise Unrepresentable(f"its XML cannot be read ({type(err).__name__})") from None
    _refuse_unrepresentable(root)
    notes: list[str] = []
    memory = root.find("currentMemory")
    spec: dict[str, Any] = {
        "memory": _mib(memory if memory is not None else root.find("memory")),
        **_cpus(root, notes),
        **_machine_and_firmware(root, notes),
        "network": _network(root),
        "graphics": "vnc" if root.find("devices/graphics") is not None else "none",
        "tpm": root.find("devices/tpm") is not None,
        "hugepages": root.find("memoryBacking/hugepages") is not None,
    }
    if root.find("devices/memory") is not None:
        raise Unrepresentable("it has memory devices (hot-plug DIMMs)")
    for tag in ("sound", "audio", "watchdog", "panic"):
        if root.find(f"devices/{tag}") is not None:
            notes.append(f"its <{tag}> device is not kept")
    disks = _disks(root, notes)
    return Shape(name=(root.findtext("name") or "").strip(),
                 uuid=(root.findtext("uuid") or "").strip().lower(), spec=spec, disks=disks,
                 notes=notes)

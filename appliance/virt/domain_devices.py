"""The parts of a domain that issue 14's part B adds (domain.build calls
add_media once): CD-ROM drives, spare PCIe root ports for hot-plugged disks,
and the boot order; and the XML of one device, for attaching, detaching and
changing media on a running domain (controller/disk_hotplug.py).

CD-ROM drives sit on a virtio-scsi controller, not SATA: the demo guest's
Debian cloud kernel has no AHCI driver (a SATA drive boots through SeaBIOS but
the booted guest cannot see it), and virtio-scsi drives are seen by every
Linux guest and booted from by SeaBIOS and OVMF. (A Windows installer needs
the virtio-win driver disk for them.) Each drive's media is the image store's
ISO file, opened raw and read-only: the spec names an image, never a path.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

# q35 hot-plugs a PCIe device only into an empty root port: a domain gets this
# many more ports than its cold-plugged devices could use, for data disks added
# while it runs (more wait for the restart that cold-plugs them).
SPARE_ROOT_PORTS = 4
# PCIe devices a domain of domain.build has besides its data disks (root disk,
# seed disk, NIC, video, virtio-serial, balloon, rng, USB, SCSI controller,
# virtio-mem): an upper bound; ports it leaves unused are spares too.
OTHER_PCI_DEVICES = 10
CDROM_TARGETS = tuple(f"sd{chr(ord('a') + i)}" for i in range(26))
DISK_TARGETS = tuple(f"vd{chr(ord('a') + i)}" for i in range(26))


def cdrom_target(index: int) -> str:
    return CDROM_TARGETS[index]


def cdrom_alias(index: int) -> str:
    return f"ua-cdrom{index}"  # libvirt keeps user aliases starting ua-


def cdrom_element(index: int, iso: Path | None) -> ET.Element:
    """Drive `index` holding `iso` (None: an empty drive)."""
    disk = ET.Element("disk", {"type": "file", "device": "cdrom"})
    ET.SubElement(disk, "driver", {"name": "qemu", "type": "raw"})
    if iso is not None:
        ET.SubElement(disk, "source", {"file": str(iso)})
    ET.SubElement(disk, "target", {"dev": cdrom_target(index), "bus": "scsi"})
    ET.SubElement(disk, "readonly")
    ET.SubElement(disk, "alias", {"name": cdrom_alias(index)})
    return disk


def cdrom_xml(index: int, iso: Path | None) -> str:
    return ET.tostring(cdrom_element(index, iso), encoding="unicode")


def add_media(domain: ET.Element, devices: ET.Element, spec: dict,
              cdrom_files: list[Path | None]) -> None:
    """CD-ROM drives, spare root ports and the boot order, into a built domain."""
    for index, iso in enumerate(cdrom_files):
        devices.append(cdrom_element(index, iso))
    if cdrom_files:
        ET.SubElement(devices, "controller", {"type": "scsi", "index": "0",
                                              "model": "virtio-scsi"})
    if spec.get("machine", "q35") == "q35":
        # PCIe hotplug needs a root port per device: q35's root bus first (libvirt
        # numbers controllers without an index in order). The pc machine's PCI bus
        # takes hot-plugged devices in its own slots (ACPI hotplug): no ports there.
        ports = (len(spec.get("disks") or []) + len(spec.get("networks") or [])
                 + OTHER_PCI_DEVICES + SPARE_ROOT_PORTS)
        ET.SubElement(devices, "controller", {"type": "pci", "index": "0", "model": "pcie-root"})
        for _ in range(ports):
            ET.SubElement(devices, "controller", {"type": "pci", "model": "pcie-root-port"})
    _boot_order(domain, devices, spec.get("boot_order") or ["hd"], cdrom_files)


def _boot_order(domain: ET.Element, devices: ET.Element, order: list[str],
                cdrom_files: list[Path | None]) -> None:
    """Per-device <boot order=N> (libvirt refuses it beside <os><boot dev>)."""
    os_el = domain.find("os")
    if os_el is not None:
        for boot in os_el.findall("boot"):
            os_el.remove(boot)
    disks = devices.findall("disk[@device='disk']")
    cdroms = devices.findall("disk[@device='cdrom']")
    nics = devices.findall("interface")
    booted: list[ET.Element] = []
    for device in order:
        if device == "hd" and disks:
            booted.append(disks[0])  # the root disk; data disks are blank
        elif device == "cdrom":
            full = zip(cdroms, cdrom_files, strict=True)
            booted += [drive for drive, iso in full if iso is not None]
        elif device == "network" and nics:
            rom = nics[0].find("rom")
            if rom is not None:  # network boot needs the NIC's option ROM (iPXE)
                nics[0].remove(rom)
            booted.append(nics[0])
    for number, element in enumerate(booted, start=1):
        ET.SubElement(element, "boot", {"order": str(number)})


def free_disk_target(live_xml_targets: set[str]) -> str | None:
    """A virtio target dev no disk of the running domain has (a hot-plugged disk's)."""
    for target in DISK_TARGETS:
        if target not in live_xml_targets:
            return target
    return None

"""Firmware, machine type and virtual TPM in the domain XML (issue 14, part G).

UEFI is libvirt's firmware autoselection (libvirt 9.0 reads the descriptors
Debian's `ovmf` installs in /usr/share/qemu/firmware): `<os firmware='efi'>`
with the features wanted. A plain 'efi' picks the Secure Boot build, so
secure-boot is always said, yes or no. The NVRAM (the firmware's variables:
boot entries, Secure Boot's keys) is a file in the VM's own directory, named
after the firmware kind, which libvirt copies from the chosen build's template
at the first start: it is removed with the VM (undefine's NVRAM flag, then the
directory), moves with it (controller/firmware_files.py) and a change of
firmware kind starts from the new kind's template instead of a store of the
other build's variables.

The TPM is swtpm, started by libvirt for each run; its state is libvirt's
(/var/lib/libvirt/swtpm/UUID on the VM's host, removed by undefine) and is
carried by a live migration's stream.
"""
from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from appliance.model.firmware import Firmware, Machine

# The root PCI bus's name per machine (devices given to QEMU directly name it).
ROOT_BUS: dict[str, str] = {Machine.Q35: "pcie.0", Machine.PC: "pci.0"}


def machine_of(spec: dict) -> str:
    return str(spec.get("machine") or Machine.Q35)


def firmware_of(spec: dict) -> str:
    return str(spec.get("firmware") or Firmware.BIOS)


def nvram_path(vm_dir: Path, spec: dict) -> Path | None:
    """The VM's NVRAM file (UEFI only): one per firmware kind."""
    firmware = firmware_of(spec)
    return None if firmware == Firmware.BIOS else vm_dir / f"nvram-{firmware}.fd"


def nvram_files(vm_dir: Path) -> list[Path]:
    """Every NVRAM file a VM may have (whatever firmware it had): what a move copies."""
    return [vm_dir / f"nvram-{kind}.fd" for kind in (Firmware.UEFI, Firmware.UEFI_SECURE)]


def add(domain: ET.Element, vm_dir: Path, spec: dict) -> None:
    """The firmware into <os> (and SMM into <features> for Secure Boot), the TPM
    into <devices>; <os>, <features> and <devices> are already there."""
    firmware = firmware_of(spec)
    os_el = domain.find("os")
    features = domain.find("features")
    devices = domain.find("devices")
    assert os_el is not None and features is not None and devices is not None  # noqa: S101
    if firmware != Firmware.BIOS:
        secure = "yes" if firmware == Firmware.UEFI_SECURE else "no"
        os_el.set("firmware", "efi")
        wanted = ET.Element("firmware")
        ET.SubElement(wanted, "feature", {"enabled": secure, "name": "secure-boot"})
        ET.SubElement(wanted, "feature", {"enabled": secure, "name": "enrolled-keys"})
        # <firmware> and <nvram> follow <type>, before <boot> (libvirt's order)
        os_el.insert(1, wanted)
        nvram = ET.Element("nvram")
        nvram.text = str(nvram_path(vm_dir, spec))
        os_el.insert(2, nvram)
        if firmware == Firmware.UEFI_SECURE:
            # Secure Boot's variable store is only safe from the guest's kernel in SMM.
            ET.SubElement(features, "smm", {"state": "on"})
    if spec.get("tpm"):
        tpm = ET.SubElement(devices, "tpm", {"model": "tpm-crb"})
        ET.SubElement(tpm, "backend", {"type": "emulator", "version": "2.0"})

"""A UEFI VM's NVRAM on an offline move between storages (issue 14, part G).

The NVRAM (virt/firmware.py) is a file in the VM's directory beside its
disks: where hosts share the appliance's folders it is there already; to or
from a host with storage of its own it is copied like the disks (through its
driver's volumes), if it exists (libvirt makes it from the firmware's template
at the first start, so a VM never started has none, and needs none).
carry_file() moves the disks on such a move too (controller/files.py).
A live migration needs no copy: QEMU sends the flash's contents in its stream
and the target's QEMU writes them into its own NVRAM file.
"""
from __future__ import annotations

from pathlib import Path

from appliance.controller.context import HostLink
from appliance.virt import firmware
from appliance.virt.domain import DomainPlan


def carry_file(plan: DomainPlan, source: HostLink, dest: HostLink, path: Path,
               source_own: bool, dest_own: bool) -> bool:
    """One file of the VM's directory (a disk, the NVRAM) to its new storage,
    through a local temporary file when either end is a host's own storage.
    False when the source host's own storage has no such file (nothing carried)."""
    tmp = path.with_name(f".{path.name}.move")
    try:
        if source_own:
            if not source.driver.download_volume(plan, path.name, tmp):
                return False
            local = tmp
        else:
            local = path
        if dest_own:
            dest.driver.upload_volume(plan, path.name, local)
        elif local is tmp:
            tmp.replace(path)
        return True
    finally:
        tmp.unlink(missing_ok=True)


def copy_nvram(plan: DomainPlan, source: HostLink, dest: HostLink,
               source_own: bool, dest_own: bool) -> None:
    for path in firmware.nvram_files(plan.vm_dir):
        # None at the source: never started with that firmware, nothing to carry
        if source_own or path.exists():
            carry_file(plan, source, dest, path, source_own, dest_own)

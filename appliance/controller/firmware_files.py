"""A UEFI VM's NVRAM on an offline move between storages (issue 14, part G).

The NVRAM (virt/firmware.py) is a file in the VM's directory beside its
disks: where hosts share the appliance's folders it is there already; to or
from a host with storage of its own it is copied like the disks (through its
driver's volumes), if it exists (libvirt makes it from the firmware's template
at the first start, so a VM never started has none, and needs none).
A live migration needs no copy: QEMU sends the flash's contents in its stream
and the target's QEMU writes them into its own NVRAM file.
"""
from __future__ import annotations

from appliance.controller.context import HostLink
from appliance.virt import firmware
from appliance.virt.domain import DomainPlan


def copy_nvram(plan: DomainPlan, source: HostLink, dest: HostLink,
               source_own: bool, dest_own: bool) -> None:
    for path in firmware.nvram_files(plan.vm_dir):
        tmp = path.with_name(f".{path.name}.move")
        try:
            if source_own:
                if not source.driver.download_volume(plan, path.name, tmp):
                    continue  # never started with that firmware: nothing to carry
                local = tmp
            elif path.exists():
                local = path
            else:
                continue
            if dest_own:
                dest.driver.upload_volume(plan, path.name, local)
            elif local is tmp:
                tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

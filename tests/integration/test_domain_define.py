"""Every shape a spec can ask for defines on the real libvirtd (QEMU 7.2 here),
not only on libvirt's test driver, which does not check a machine type's buses:
the parts of issue 14 each add to the domain XML (hotplug room, the CPU model,
firmware, CD-ROMs and root ports), and their combinations must stay valid.
Define only, no boot: cheap, and what libvirt refuses it refuses at define."""
from __future__ import annotations

import uuid
from pathlib import Path

import libvirt
import pytest

from appliance import spec as specs
from appliance.model import hotplug
from appliance.virt import domain

SHAPES = [
    {"machine": "q35"},
    {"machine": "pc"},
    {"machine": "pc", "disks": [{"name": "data", "size": "1G"}], "cdroms": ["", ""]},
    {"machine": "q35", "disks": [{"name": "data", "size": "1G"}], "cdroms": [""],
     "boot_order": ["cdrom", "hd"]},
    {"machine": "pc", "firmware": "uefi", "memory": "512M"},
    {"machine": "q35", "firmware": "uefi-secure", "tpm": True, "memory": "512M"},
    {"cpus": 2, "max_cpus": 4, "memory": "256M", "max_memory": "1G",
     "cpu": {"mode": "cluster", "sockets": 2, "cores": 2, "threads": 1}},
    {"cpus": 2, "cpu": {"sockets": 1, "cores": 2, "threads": 1}},
]


@pytest.mark.parametrize("extra", SHAPES, ids=[str(i) for i in range(len(SHAPES))])
def test_the_shape_defines_on_the_real_libvirtd(tmp_path: Path, extra: dict) -> None:
    spec = specs.validate({"name": "shape", "image": "demo", **extra})
    vm_id = str(uuid.uuid4())
    plan = domain.DomainPlan(
        vm_id=vm_id, domain_name=f"vmapp-test-define-{vm_id[:8]}", vm_name="shape",
        instance_id="test-define", spec=hotplug.with_maxima(spec, 2, 4096),
        domain_type="qemu", vm_dir=tmp_path, mac="52:54:00:12:34:56", seed_iso=None,
        direct_io=False, cdrom_files=[None] * len(spec.get("cdroms") or []))
    conn = libvirt.open("qemu:///system")
    try:
        dom = conn.defineXML(domain.build(plan))
        try:
            assert dom.UUIDString() == vm_id
        finally:
            flags = libvirt.VIR_DOMAIN_UNDEFINE_NVRAM | getattr(libvirt, "VIR_DOMAIN_UNDEFINE_TPM", 0)
            dom.undefineFlags(flags)
    finally:
        conn.close()

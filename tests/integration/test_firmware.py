"""Firmware, TPM, machine type and admin domain XML patches on real TCG guests
(issue 14, part G). Two guests for the whole module:

- `uefi1`: UEFI (OVMF) with a TPM on q35. The demo image is a BIOS disk (a
  whole-disk FAT with SYSLINUX, no \\EFI\\BOOT\\BOOTX64.EFI), so OVMF falls back
  to its UEFI Interactive Shell, which the test reads on the serial console; it
  then types the shell command that starts the demo kernel's EFI stub from that
  FAT (fs0:), and the booted guest shows /sys/firmware/efi, /dev/tpm0 and the
  Q35 machine.
- `pc1`: BIOS on the pc machine with three admin patches (an SMBIOS sysinfo,
  <smbios mode='sysinfo'/> and a qemu:commandline -smbios), which the guest
  reads from /sys/class/dmi/id; a non-admin's patch is refused and another
  field still changes; a bad patch is a 422 that changes nothing.
"""
from __future__ import annotations

import os
import pwd
import subprocess
import uuid
from pathlib import Path

import libvirt
import pytest

from tests.appliance_process import READY_LINE, Appliance
from tests.snapshot_helpers import ask

pytestmark = pytest.mark.integration

BOOT_SECONDS = 180
REPO = Path(__file__).resolve().parents[2]
LOCAL_CA = Path("/var/lib/swtpm-localca")
PATCHES = [
    {"op": "add", "xpath": "/domain", "xml": (
        "<sysinfo type='smbios'><system><entry name='manufacturer'>vmapp-patched"
        "</entry></system></sysinfo>")},
    {"op": "add", "xpath": "/domain/os", "xml": "<smbios mode='sysinfo'/>"},
    {"op": "add", "xpath": "/domain", "xml": (
        "<qemu:commandline><qemu:arg value='-smbios'/>"
        "<qemu:arg value='type=3,manufacturer=vmapp-qemu-arg'/></qemu:commandline>")},
]


@pytest.fixture(scope="module")
def app(unmounted_appliance):
    return unmounted_appliance


@pytest.fixture(scope="module")
def operator(app) -> dict[str, str]:
    name = f"op-{uuid.uuid4().hex[:4]}"
    assert app.api("POST", "/v1/users", json={"name": name, "role": "operator"}).status_code == 201
    resp = app.api("POST", "/v1/tokens", json={"user": name})
    assert resp.status_code == 201, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


@pytest.fixture(scope="module")
def guests(app):
    # UEFI under TCG needs more than the demo's 128 MiB (the EFI stub faults below ~512).
    app.create_vm("uefi1", memory=512, firmware="uefi", tpm=True)
    app.create_vm("pc1", machine="pc", xml_patches=PATCHES)
    return app


def test_setup_host_gives_the_tpm_local_ca_to_swtpms_user_whoever_wrote_it_first():
    """CI regression: a libvirtd started before swtpm-tools existed ran swtpm as
    root, whose files in the local CA (its lock first) then made every TPM VM's
    create fail under the next libvirtd, which ran swtpm as tss. setup-host.sh
    names the user in qemu.conf and hands such files back; the TPM VM of the
    module's fixture (created after this test) is the proof that libvirt agrees."""
    if not LOCAL_CA.is_dir():
        pytest.skip("swtpm-tools is not installed (packaging/setup-host.sh installs it)")
    lock = LOCAL_CA / ".lock.swtpm-localca"
    lock.touch()
    os.chown(lock, 0, 0)  # as swtpm_localca leaves it when it ran as root
    done = subprocess.run(["bash", str(REPO / "packaging/setup-host.sh")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    tss = pwd.getpwnam("tss")
    assert (lock.stat().st_uid, lock.stat().st_gid) == (tss.pw_uid, tss.pw_gid)
    conf = Path("/etc/libvirt/qemu.conf").read_text()
    assert 'swtpm_user = "tss"' in conf and 'swtpm_group = "tss"' in conf


def domain_xml(app: Appliance, vm: str) -> str:
    resp = app.api("GET", f"/v1/vms/{vm}/domain.xml")
    assert resp.status_code == 200, resp.text
    return resp.text


def test_a_uefi_vm_shows_the_ovmf_shell_then_boots_the_demo_kernel_with_a_tpm(guests):
    app = guests
    app.wait_console("uefi1", "UEFI Interactive Shell", BOOT_SECONDS)
    # the shell counts 5 s down before startup.nsh (there is none): a key ends the wait
    app.wait_console("uefi1", "any other key to continue", BOOT_SECONDS)
    assert app.api("PUT", "/v1/vms/uefi1/console", data=b"\x1b").status_code in (200, 204)
    app.wait_console("uefi1", "Shell>", BOOT_SECONDS)
    xml = domain_xml(app, "uefi1")
    assert "OVMF_CODE" in xml and "<tpm model='tpm-crb'>" in xml, xml
    vm = app.api("GET", "/v1/vms/uefi1").json()
    nvram = app.home / "vms" / vm["id"] / "nvram-uefi.fd"
    assert str(nvram) in xml and nvram.stat().st_size > 0  # per VM, made from the template
    # the demo disk's FAT is fs0:; the Debian kernel is an EFI stub
    # (the UEFI shell's Enter is a carriage return)
    resp = app.api("PUT", "/v1/vms/uefi1/console",
                   data=b"fs0:\\vmlinuz initrd=\\initrd.gz console=ttyS0\r")
    assert resp.status_code in (200, 204), resp.text
    app.wait_console("uefi1", READY_LINE, BOOT_SECONDS)
    assert ask(app, "uefi1", "ls -d /sys/firmware/efi") == "/sys/firmware/efi"
    assert ask(app, "uefi1", "ls /dev/tpm0") == "/dev/tpm0"  # the kernel's tpm_crb (built in)
    assert "Q35" in ask(app, "uefi1", "cat /sys/class/dmi/id/product_name")
    # swtpm runs for this VM, its state in libvirt's directory for it
    conn = libvirt.open("qemu:///system")
    try:
        uuid_ = conn.lookupByName(app.prefix + "uefi1").UUIDString()
    finally:
        conn.close()
    assert any(uuid_ in open(f"/proc/{pid}/cmdline").read()
               for pid in _pids_of("swtpm")), "no swtpm for the VM"
    # libvirt 9.0 cannot take an internal snapshot of a running pflash VM: refused, said why
    resp = app.api("POST", "/v1/vms/uefi1/snapshots", json={"name": "s1"})
    assert resp.status_code == 409 and "NVRAM" in resp.json()["reason"], resp.text


def _pids_of(name: str) -> list[str]:
    import os
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                if open(f"/proc/{pid}/comm").read().strip() == name:
                    found.append(pid)
            except OSError:
                continue
    return found


def test_admin_patches_reach_the_guest_on_the_pc_machine(guests):
    app = guests
    app.wait_console("pc1", READY_LINE, BOOT_SECONDS)
    xml = domain_xml(app, "pc1")
    assert "vmapp-patched" in xml and "type=3,manufacturer=vmapp-qemu-arg" in xml, xml
    # one line typed for the three (product_name shows the machine: pc, not Q35)
    dmi = ask(app, "pc1", "cd /sys/class/dmi/id; cat product_name sys_vendor chassis_vendor"
                          " | tr '\\n' ,; cd /")
    assert dmi.startswith("Standard PC (i440FX + PIIX"), dmi
    assert dmi.endswith(",vmapp-patched,vmapp-qemu-arg,"), dmi  # sysinfo; qemu:commandline
    events = app.api("GET", "/v1/vms/pc1/events").text
    assert "domain XML patches changed: 3 domain XML patch(es)" in events  # the audit


def test_patches_are_an_admins_and_bad_ones_change_nothing(guests, operator):
    app = guests
    before = app.api("GET", "/v1/vms/pc1").json()
    # an operator may not add, change or drop patches, at create or PATCH
    resp = app.api("PATCH", "/v1/vms/pc1", json={"xml_patches": []}, headers=operator)
    assert resp.status_code == 403 and resp.json()["field"] == "xml_patches", resp.text
    resp = app.api("POST", "/v1/vms", headers=operator, json={
        "name": "sneaky", "xml_patches": PATCHES[:1], "state": "stopped"})
    assert resp.status_code == 403, resp.text
    # ...but changes another field of a VM with patches, which stay
    resp = app.api("PATCH", "/v1/vms/pc1?wait=false", json={"labels": {"tier": "web"}},
                   headers=operator)
    assert resp.status_code in (200, 202), resp.text
    after = app.api("GET", "/v1/vms/pc1").json()
    assert after["spec"]["xml_patches"] == before["spec"]["xml_patches"]
    assert after["spec"]["labels"] == {"tier": "web"}
    # an XPath that selects nothing, and XML libvirt's schema refuses: 422, nothing changed
    generation = after["generation"]
    nothing = {"op": "remove", "xpath": "/domain/devices/watchdog", "xml": None}
    resp = app.api("PATCH", "/v1/vms/pc1", json={"xml_patches": [*PATCHES, nothing]})
    assert resp.status_code == 422 and resp.json()["field"] == "xml_patches[3].xpath", resp.text
    bogus = {"op": "add", "xpath": "/domain/devices", "xml": "<bogus/>"}
    resp = app.api("PATCH", "/v1/vms/pc1", json={"xml_patches": [*PATCHES, bogus]})
    assert resp.status_code == 422 and resp.json()["field"] == "xml_patches[3]", resp.text
    assert "libvirt" in resp.json()["reason"] and "schema" in resp.json()["reason"]
    unchanged = app.api("GET", "/v1/vms/pc1").json()
    assert unchanged["generation"] == generation
    assert unchanged["spec"]["xml_patches"] == PATCHES
    assert "bogus" not in domain_xml(app, "pc1")

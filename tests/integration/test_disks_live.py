"""Disks and install media changed live, seen from inside a real guest (issue 14, part B).

One guest for the module: it boots from a bootable ISO made here from the demo image's
own kernel and initramfs (isolinux + xorriso, packaging/setup-host.sh installs them),
whose kernel command line carries a marker the demo image's disk boot does not, so the
guest's /proc/cmdline says where it booted from. Then, through the REST paths the mount
shares, without a reboot: its data disk grows (/sys/block/vdX/size), a hot-plugged disk
appears as a new block device and disappears when removed (its file deleted), a shrink
is refused, and a second CD-ROM drive gets media and loses it (/sys/block/sr1/size).
"""
from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from tests.appliance_process import BOOT_LINE, DEMO_IMAGE, READY_LINE, Appliance
from tests.snapshot_helpers import ask

pytestmark = pytest.mark.integration

CDROM_MARKER = "vma_booted_from=cdrom"
ISOLINUX = Path("/usr/lib/ISOLINUX/isolinux.bin")
LDLINUX = Path("/usr/lib/syslinux/modules/bios/ldlinux.c32")
MIB = 1 << 20
SECTOR = 512


def _run(*args: str | Path, cwd: Path | None = None) -> None:
    subprocess.run([str(a) for a in args], check=True, capture_output=True, cwd=cwd, timeout=120)


def make_boot_iso(work: Path) -> Path:
    """A BIOS-bootable ISO (isolinux) with the demo image's kernel and initramfs."""
    raw, tree = work / "demo.raw", work / "boot"
    (tree / "isolinux").mkdir(parents=True)
    _run("qemu-img", "convert", "-f", "qcow2", "-O", "raw", DEMO_IMAGE, raw)
    for name in ("vmlinuz", "initrd.gz"):  # the demo disk is a FAT file system (mtools)
        _run("mcopy", "-i", raw, f"::{name}", tree / name)
    shutil.copy(ISOLINUX, tree / "isolinux")
    shutil.copy(LDLINUX, tree / "isolinux")
    # The demo disk's own kernel arguments (packaging/build-demo-image.sh): with the
    # memory hotplug area above 4 GiB, a 128 MiB guest without swiotlb=noforce
    # reserves 64 MiB of bounce buffers and panics out of memory at boot.
    (tree / "isolinux" / "isolinux.cfg").write_text(
        "DEFAULT linux\nPROMPT 0\nTIMEOUT 1\nLABEL linux\n  KERNEL /vmlinuz\n"
        "  APPEND initrd=/initrd.gz console=ttyS0 quiet cryptomgr.notests swiotlb=noforce"
        " memhp_default_state=online memory_hotplug.online_policy=auto-movable"
        f" {CDROM_MARKER}\n")
    iso = work / "boot.iso"
    _run("xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "-V", "VMABOOT",
         "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot",
         "-boot-load-size", "4", "-boot-info-table", tree)
    raw.unlink()
    return iso


def make_data_iso(work: Path) -> Path:
    tree = work / "data"
    tree.mkdir()
    (tree / "hello.txt").write_bytes(b"x" * (3 * MIB))
    iso = work / "data.iso"
    _run("xorriso", "-as", "mkisofs", "-quiet", "-o", iso, "-V", "VMADATA", tree)
    return iso


@pytest.fixture(scope="module")
def media(appliance: Appliance, tmp_path_factory) -> dict[str, int]:
    """The two ISOs, uploaded as images; name -> bytes."""
    missing = [tool for tool in ("xorriso", "mcopy") if shutil.which(tool) is None]
    if missing or not ISOLINUX.exists() or not LDLINUX.exists():
        pytest.skip(f"needs xorriso, isolinux and mtools (packaging/setup-host.sh): {missing}")
    work = tmp_path_factory.mktemp("iso")
    sizes = {}
    for name, iso in (("bootiso", make_boot_iso(work)), ("dataiso", make_data_iso(work))):
        resp = appliance.api("PUT", f"/v1/images/{name}", data=iso.read_bytes(),
                             headers={"Content-Type": "application/octet-stream"})
        assert resp.status_code == 201, resp.text
        assert resp.json()["kind"] == "iso" and resp.json()["path"].endswith(".iso")
        sizes[name] = iso.stat().st_size
    return sizes


@pytest.fixture(scope="module")
def vm(appliance: Appliance, media) -> str:
    appliance.create_vm("dk1", state="running", disks=[{"name": "data", "size": 96}],
                        cdroms=["bootiso", ""], boot_order=["cdrom", "hd"])
    appliance.wait_console("dk1", READY_LINE, timeout=120)
    return "dk1"


def until(app: Appliance, vm: str, expr: str, want, timeout: float = 60) -> str:
    """Ask the guest again until the answer satisfies `want` (a value or a predicate)."""
    check = want if callable(want) else (lambda seen: seen == want)
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = ask(app, vm, expr, timeout=20)
        if check(seen):
            return seen
        time.sleep(0.5)
    raise AssertionError(f"{expr!r} in {vm}: {seen!r}, not what was wanted, after {timeout} s")


def _disk_devices(app: Appliance, vm: str) -> str:
    return ask(app, vm, "ls /sys/block | grep ^vd | tr '\\n' ' '")


def test_the_guest_booted_from_the_cdrom(appliance, vm):
    until(appliance, vm, "cat /proc/cmdline", lambda line: CDROM_MARKER in line)
    assert "<boot order='1'/>" in appliance.api("GET", f"/v1/vms/{vm}/domain.xml").text.replace(
        '"', "'")
    assert ask(appliance, vm, "cat /sys/block/sr0/size") != "0"  # the boot ISO is in drive 0


def test_a_data_disk_grows_live_and_never_shrinks(appliance, vm):
    disks = _disk_devices(appliance, vm).split()
    # the 96 MiB data disk: the guest's one vd device of that size (the root disk has 64)
    data = next(d for d in disks
                if ask(appliance, vm, f"cat /sys/block/{d}/size") == str(96 * MIB // SECTOR))
    resp = appliance.api("PUT", f"/v1/vms/{vm}/disks/data/size", data=b"160M",
                         headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["size"] == 160 and resp.json()["attached_size"] == 160
    until(appliance, vm, f"cat /sys/block/{data}/size", str(160 * MIB // SECTOR), timeout=30)
    shrink = appliance.api("PATCH", f"/v1/vms/{vm}", json={"disks": [{"name": "data",
                                                                       "size": 32}]})
    assert shrink.status_code == 422 and shrink.json()["field"] == "disks[0].size", shrink.text
    assert appliance.api("GET", f"/v1/vms/{vm}").json()["spec"]["disks"][0]["size"] == 160
    status = appliance.api("GET", f"/v1/vms/{vm}/status.json").json()
    assert status["restart_required"] in (0, False), status


def test_a_disk_is_hotplugged_and_removed(appliance, vm):
    before = set(_disk_devices(appliance, vm).split())
    resp = appliance.api("PUT", f"/v1/vms/{vm}/disks/scratch", json={"size": "48M"})
    assert resp.status_code == 201, resp.text
    seen = until(appliance, vm, "ls /sys/block | grep ^vd | tr '\\n' ' '",
                 lambda out: len(set(out.split()) - before) == 1, timeout=30)
    new = (set(seen.split()) - before).pop()
    assert ask(appliance, vm, f"cat /sys/block/{new}/size") == str(48 * MIB // SECTOR)
    vm_id = appliance.api("GET", f"/v1/vms/{vm}").json()["id"]
    disk_file = appliance.home / "vms" / vm_id / "disk-scratch.qcow2"
    assert disk_file.exists()
    resp = appliance.api("DELETE", f"/v1/vms/{vm}/disks/scratch")
    assert resp.status_code == 204, resp.text
    until(appliance, vm, "ls /sys/block | grep ^vd | tr '\\n' ' '",
          lambda out: set(out.split()) == before, timeout=30)
    assert not disk_file.exists()  # deleted once libvirt confirmed the detach
    status = appliance.api("GET", f"/v1/vms/{vm}/status.json").json()
    assert status["restart_required"] in (0, False), status
    assert appliance.console(vm).count(BOOT_LINE) == 1  # all of it without a reboot


HAS_MEDIA = "dd if=/dev/sr1 of=/dev/null bs=2048 count=1 2>/dev/null && echo media || echo none"


def test_media_is_inserted_and_ejected_live(appliance, vm, media):
    until(appliance, vm, HAS_MEDIA, "none")  # drive 1 is empty: "No medium found"
    resp = appliance.api("PUT", f"/v1/vms/{vm}/cdroms/1", data=b"dataiso",
                         headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.text
    # The first read after a change may meet the drive's "medium changed": asked again.
    until(appliance, vm, HAS_MEDIA, "media", timeout=30)
    sectors = int(ask(appliance, vm, "cat /sys/block/sr1/size"))
    assert media["dataiso"] - 64 * 1024 <= sectors * SECTOR <= media["dataiso"] + 64 * 1024
    until(appliance, vm, "mkdir -p /mnt/cd && mount -t iso9660 -o ro /dev/sr1 /mnt/cd"
          " 2>/dev/null; wc -c < /mnt/cd/hello.txt; umount /mnt/cd", str(3 * MIB))
    resp = appliance.api("PUT", f"/v1/vms/{vm}/cdroms/1", json={"image": ""})
    assert resp.status_code == 200, resp.text
    until(appliance, vm, HAS_MEDIA, "none", timeout=30)
    assert appliance.api("GET", f"/v1/vms/{vm}").json()["spec"]["cdroms"] == ["bootiso", ""]
    assert appliance.console(vm).count(BOOT_LINE) == 1

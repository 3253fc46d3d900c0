"""Issue 14 (part B) in the mount, with real shell commands: vms/NAME/disks/ (mkdir adds a
disk, D/size grows it, rmdir removes it, D/info.json) and vms/NAME/cdroms/N (insert,
eject), on a controller on libvirt's test driver: a stopped VM's disk files follow
(qemu-img makes, grows and deletes them). Refused input changes nothing, fails with
EINVAL / EBUSY / ENOENT, and leaves a `refused` event. (Live changes on a running
guest: tests/integration/test_disks_live.py.)"""
from __future__ import annotations

import errno
import json
import struct

import pytest

from tests.fs.conftest import Mount, refused, run
from tests.unit.conftest import make_iso_image

MIB = 1 << 20


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    mount = Mount(tmp_path_factory.mktemp("fs-disks"))
    try:
        started = mount.start()
        iso = tmp_path_factory.mktemp("media") / "install.iso"
        make_iso_image(iso)
        started.service.import_image_file("install", iso)
        yield started
    finally:
        mount.stop()


def _refusals(m: Mount) -> list[tuple[str, str]]:
    return [(e["message"], e["result"]) for e in m.service.list_events(limit=10000)
            if e["kind"] == "refused"]


def _virtual_size(m: Mount, vm: str, disk: str) -> int:
    """The qcow2 header's virtual size of the VM's disk file (the controller made it)."""
    vm_id = m.service.get_vm(vm)["id"]
    with open(m.config.vm_dir(vm_id) / f"disk-{disk}.qcow2", "rb") as f:
        return struct.unpack(">Q", f.read(32)[24:32])[0]


def test_a_shell_adds_grows_and_removes_a_disk(m):
    m.mkvm("dk1")
    assert run(m, "ls vms/dk1/disks") == ""
    assert "disks" in run(m, "ls vms/dk1") and "cdroms" in run(m, "ls vms/dk1")
    run(m, "mkdir vms/dk1/disks/data")  # returns when its operation ended
    assert run(m, "ls vms/dk1/disks") == "data\n"
    assert run(m, "ls -U vms/dk1/disks/data") == "size\ninfo.json\n"
    assert run(m, "cat vms/dk1/disks/data/size") == "1024\n"
    assert _virtual_size(m, "dk1", "data") == 1024 * MIB
    run(m, "echo 2G > vms/dk1/disks/data/size")
    assert run(m, "cat vms/dk1/disks/data/size") == "2048\n"
    assert m.service.get_vm("dk1")["spec"]["disks"] == [{"name": "data", "size": 2048}]
    assert _virtual_size(m, "dk1", "data") == 2048 * MIB  # qemu-img grew the stopped VM's file
    info = json.loads(run(m, "cat vms/dk1/disks/data/info.json"))
    assert info["name"] == "data" and info["size"] == 2048 and info["attached_size"] is None
    vm_dir = m.config.vm_dir(m.service.get_vm("dk1")["id"])
    run(m, "rmdir vms/dk1/disks/data")
    assert run(m, "ls vms/dk1/disks") == ""
    assert m.service.get_vm("dk1")["spec"]["disks"] == []
    assert not (vm_dir / "disk-data.qcow2").exists()  # deleted with its data


def test_refused_disk_changes_change_nothing_and_leave_an_event(m):
    m.mkvm("dk2")
    run(m, "mkdir vms/dk2/disks/data && echo 2G > vms/dk2/disks/data/size")
    before = m.service.get_vm("dk2")["spec"]
    for command, code in [
        ("echo 1G > vms/dk2/disks/data/size", errno.EINVAL),  # never shrinks
        ("echo lots > vms/dk2/disks/data/size", errno.EINVAL),
        ("mkdir vms/dk2/disks/data", errno.EEXIST),
        ("mkdir vms/dk2/disks/Bad_Name", errno.EINVAL),
        ("rmdir vms/dk2/disks/nothing", errno.ENOENT),
        ("echo x > vms/dk2/disks/data/info.json", errno.EACCES),
    ]:
        refused(m, command, code)
        assert m.service.get_vm("dk2")["spec"] == before, command
    assert any(what == "write vms/dk2/disks/data/size" and why.startswith(
        "EINVAL Invalid: a disk cannot shrink") for what, why in _refusals(m))
    # Under a snapshot a disk is neither added nor removed: a revert needs the same disks.
    run(m, "mkdir vms/dk2/snapshots/s1")
    refused(m, "mkdir vms/dk2/disks/more", errno.EBUSY)
    refused(m, "rmdir vms/dk2/disks/data", errno.EBUSY)
    run(m, "echo 3G > vms/dk2/disks/data/size")  # growth is fine: qcow2 keeps each snapshot's size
    assert m.service.get_vm("dk2")["spec"]["disks"] == [{"name": "data", "size": 3072}]


def test_cdrom_media_is_inserted_and_ejected_by_a_write(m):
    m.mkvm("cd1")
    m.service.update_vm("cd1", {"cdroms": ["install", ""], "boot_order": ["cdrom", "hd"]})
    assert run(m, "ls vms/cd1/cdroms") == "0\n1\n"
    assert run(m, "cat vms/cd1/cdroms/0") == "install\n"
    run(m, 'echo "" > vms/cd1/cdroms/0')
    run(m, "echo install > vms/cd1/cdroms/1")
    assert m.service.get_vm("cd1")["spec"]["cdroms"] == ["", "install"]
    xml = m.service.vm_row("cd1")["domain_xml"] or ""
    assert "install.iso" in xml  # the image store's file, read-only on the SCSI bus
    before = m.service.get_vm("cd1")["spec"]
    for command, code in [
        ("echo demo > vms/cd1/cdroms/0", errno.EINVAL),  # a disk image is not install media
        ("echo ../../../etc/shadow > vms/cd1/cdroms/0", errno.EINVAL),
        ("echo /etc/shadow > vms/cd1/cdroms/0", errno.EINVAL),
        ("echo nothing > vms/cd1/cdroms/0", errno.EINVAL),
        ("echo install > vms/cd1/cdroms/2", errno.EACCES),  # drives come from the spec
    ]:
        refused(m, command, code)
        assert m.service.get_vm("cd1")["spec"] == before, command

"""Issue 16, adopt: a stranger domain's XML made a spec or refused with the reason
(virt/adopt_xml.py), and its disk files checked against the allowed folders
(virt/adopt_disks.py); the service's refusals change nothing (service/adoption.py).
The real takeover on libvirtd: tests/integration/test_adopt.py."""
from __future__ import annotations

import pytest

from appliance.access.principal import Principal, Role, acting_as
from appliance.errors import Conflict, Forbidden, Invalid
from appliance.virt import adopt_disks, adopt_read, adopt_xml, images

UUID = "6f1c1a52-3a0e-4c55-9d7a-0f0e5b1c2d3e"


def domain_xml(disk: str = "/var/lib/libvirt/images/a.qcow2", devices: str = "",
               extra: str = "", nic: str = "<interface type='user'><mac address='52:54:00:aa:bb:cc'/>"
                                               "<model type='virtio'/></interface>") -> str:
    return f"""<domain type='kvm'>
  <name>legacy1</name><uuid>{UUID}</uuid>
  <memory unit='KiB'>524288</memory><currentMemory unit='KiB'>524288</currentMemory>
  <vcpu placement='static' current='2'>4</vcpu>
  <os><type arch='x86_64' machine='pc-q35-7.2'>hvm</type><boot dev='hd'/></os>
  <cpu mode='host-model'><topology sockets='4' cores='1' threads='1'/></cpu>
  {extra}
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/>
      <target dev='sda' bus='sata'/><readonly/></disk>
    {nic}
    <serial type='pty'><target port='0'/></serial>
    <graphics type='vnc' port='-1'/><video><model type='vga'/></video>
    <controller type='usb' model='qemu-xhci'/>
    {devices}
  </devices>
</domain>"""


def test_a_plain_domain_becomes_a_spec():
    shape = adopt_xml.read(domain_xml())
    assert (shape.name, shape.uuid) == ("legacy1", UUID)
    assert shape.spec == {
        "memory": 512, "cpus": 2, "max_cpus": 4,
        "cpu": {"mode": "host-model", "sockets": 4, "cores": 1, "threads": 1},
        "machine": "q35", "firmware": "bios",
        "network": {"type": "user", "port_forwards": [], "mac": "52:54:00:aa:bb:cc"},
        "graphics": "vnc", "tpm": False, "hugepages": False}
    assert [(d.name, d.path, d.format) for d in shape.disks] == [
        ("root", "/var/lib/libvirt/images/a.qcow2", "qcow2")]
    assert any("CD-ROM" in note for note in shape.notes)


def test_uefi_a_libvirt_network_and_a_second_disk_booting_first():
    extra_disk = ("<disk type='file' device='disk'><driver name='qemu' type='raw'/>"
                  "<source file='/srv/boot.img'/><target dev='sdb' bus='sata'/>"
                  "<boot order='1'/></disk>")
    xml = domain_xml(devices=extra_disk, nic="<interface type='network'><source network='lan'/>"
                                             "</interface>")
    xml = xml.replace("<os>", "<os firmware='efi'>")
    shape = adopt_xml.read(xml)
    assert shape.spec["firmware"] == "uefi"
    assert shape.spec["network"] == {"type": "network", "name": "lan"}
    assert [(d.name, d.path) for d in shape.disks] == [("root", "/srv/boot.img"),
                                                       ("disk1", "/var/lib/libvirt/images/a.qcow2")]
    assert any("sata bus to virtio" in note for note in shape.notes)


def test_user_mode_port_forwards_are_kept():
    nic = ("<interface type='user'><portForward proto='tcp' address='127.0.0.1'>"
           "<range start='2222' to='22'/></portForward></interface>")
    shape = adopt_xml.read(domain_xml(nic=nic))
    assert shape.spec["network"]["port_forwards"] == [
        {"host_port": 2222, "guest_port": 22, "protocol": "tcp", "host_address": "127.0.0.1"}]


@pytest.mark.parametrize("change, reason", [
    (dict(devices="<hostdev mode='subsystem' type='pci'><source><address domain='0' bus='1' "
                  "slot='0' function='0'/></source></hostdev>"), "passthrough <hostdev>"),
    (dict(devices="<filesystem type='mount'><source dir='/srv'/><target dir='srv'/>"
                  "</filesystem>"), "<filesystem>"),
    (dict(nic="<interface type='user'/><interface type='user'/>"), "2 NICs"),
    (dict(nic="<interface type='bridge'><source bridge='br0'/></interface>"), "type 'bridge'"),
    (dict(devices="<disk type='block' device='disk'><source dev='/dev/sdz'/>"
                  "<target dev='vdz'/></disk>"), "block disk"),
    (dict(devices="<disk type='file' device='cdrom'><source file='/x.iso'/>"
                  "<target dev='sdc'/></disk>"), "holds media"),
    (dict(devices="<disk type='file' device='disk'><driver type='vmdk'/><source file='/x'/>"
                  "<target dev='vdc'/></disk>"), "vmdk"),
    (dict(extra="<iothreads>2</iothreads>"), "<iothreads>"),
    (dict(extra="<metadata><vma:vm xmlns:vma='urn:vm-appliance:domain:1' appliance='x' "
                "id='y' name='z'/></metadata>"), "already an appliance's domain"),
])
def test_what_a_spec_cannot_say_is_refused_with_the_reason(change, reason):
    with pytest.raises(adopt_xml.Unrepresentable) as refused:
        adopt_xml.read(domain_xml(**change))
    assert reason in refused.value.reason


def test_raw_qemu_arguments_are_refused():
    xml = domain_xml().replace("<domain type='kvm'>", "<domain type='kvm' xmlns:qemu="
                               "'http://libvirt.org/schemas/domain/qemu/1.0'>")
    xml = xml.replace("</devices>", "</devices><qemu:commandline><qemu:arg value='-S'/>"
                                    "</qemu:commandline>")
    with pytest.raises(adopt_xml.Unrepresentable, match="raw arguments to QEMU"):
        adopt_xml.read(xml)


def test_entities_are_not_expanded():
    xml = "<!DOCTYPE d [<!ENTITY x SYSTEM 'file:///etc/passwd'>]>" + domain_xml().replace(
        "<name>legacy1</name>", "<name>&x;</name>")
    with pytest.raises(adopt_xml.Unrepresentable, match="cannot be read"):
        adopt_xml.read(xml)


# -- the disks ----------------------------------------------------------------------------
def _disk(path, fmt="qcow2"):
    return adopt_xml.DiskFile("root", str(path), fmt, "vda")


def test_a_disk_in_an_allowed_folder_and_its_chain(tmp_path):
    allowed, base_dir = tmp_path / "allowed", tmp_path / "bases"
    allowed.mkdir()
    base_dir.mkdir()
    base = base_dir / "base.qcow2"
    images.create_blank(base, 8)
    overlay = allowed / "vm.qcow2"
    images.create_overlay(base, "qcow2", overlay)
    # the backing file outside the allowed folders: refused in place, fine to copy
    with pytest.raises(Invalid, match="backing file lies outside"):
        adopt_disks.check(_disk(overlay), [str(allowed)], copy=False)
    checked = adopt_disks.check(_disk(overlay), [str(allowed), str(base_dir)], copy=False)
    assert (checked.path, checked.chain, checked.virtual_size) == (str(overlay), [str(base)],
                                                                   8 << 20)
    assert adopt_disks.check(_disk(overlay), [str(allowed)], copy=True).chain == [str(base)]


def test_disks_outside_through_symlinks_or_of_another_format_are_refused(tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    outside = tmp_path / "secret.qcow2"
    images.create_blank(outside, 8)
    link = allowed / "link.qcow2"
    link.symlink_to(outside)
    with pytest.raises(Invalid, match="symbolic link"):
        adopt_disks.check(_disk(link), [str(allowed)], copy=False)
    with pytest.raises(Invalid, match="declares it raw but it is qcow2"):
        adopt_disks.check(_disk(outside, "raw"), [str(tmp_path)], copy=True)
    raw = allowed / "disk.img"
    with open(raw, "wb") as f:
        f.truncate(4 << 20)
        f.seek(510)
        f.write(b"\x55\xaa")
    with pytest.raises(Invalid, match="raw disk is not referenced in place"):
        adopt_disks.check(_disk(raw, "raw"), [str(allowed)], copy=False)
    assert adopt_disks.check(_disk(raw, "raw"), [str(allowed)], copy=True).virtual_size == 4 << 20
    with pytest.raises(Invalid, match="not a regular file"):
        adopt_disks.check(_disk(tmp_path, "raw"), [str(tmp_path)], copy=True)


def test_a_relative_backing_name_is_refused_in_place(tmp_path):
    images.create_blank(tmp_path / "base.qcow2", 8)
    overlay = tmp_path / "vm.qcow2"
    images._run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", "base.qcow2",
                 str(overlay)], "overlay")
    with pytest.raises(Invalid, match="relative path"):
        adopt_disks.check(_disk(overlay), [str(tmp_path)], copy=False)


def test_a_name_that_reaches_its_file_another_way_is_refused(tmp_path):
    """QEMU opens the very names of the XML and the qcow2 headers at every start: a name
    through /proc/PID/root (realpath, as root, reads it as this namespace's /) or a
    symlink could be another file by then (security review of this stop: such a backing
    name passed the check and was recorded as its resolved path)."""
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    base = allowed / "base.qcow2"
    images.create_blank(base, 8)
    through_proc = f"/proc/self/root{base}"
    overlay = allowed / "vm.qcow2"
    images._run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-u", "-b",
                 through_proc, str(overlay), "8M"], "overlay")
    for copy in (False, True):
        with pytest.raises(Invalid, match="symbolic link or /proc"):
            adopt_disks.check(_disk(overlay), [str(allowed)], copy=copy)
        with pytest.raises(Invalid, match="symbolic link or /proc"):
            adopt_disks.check(_disk(f"/proc/self/root{base}"), [str(allowed)], copy=copy)
    inside = allowed / "inside.qcow2"
    inside.symlink_to(base)  # a link within the folder: repointable after the adoption
    with pytest.raises(Invalid, match="symbolic link"):
        adopt_disks.check(_disk(inside), [str(allowed)], copy=False)
    with pytest.raises(Invalid, match="absolute path"):
        adopt_disks.check(_disk("allowed/base.qcow2"), [str(allowed)], copy=True)


def test_the_home_system_folders_and_sizes_past_the_image_limit_are_refused(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    other_vm = home / "root.qcow2"
    images.create_blank(other_vm, 8)
    with pytest.raises(Invalid, match="no disk may come from"):
        adopt_disks.check(_disk(other_vm), [str(tmp_path)], copy=True, refused=(str(home),))
    with pytest.raises(Invalid, match="no disk may come from"):
        adopt_disks.check(_disk("/dev/zero", "raw"), ["/"], copy=True)
    with pytest.raises(Invalid, match="larger"):
        adopt_disks.check(_disk(other_vm), [str(tmp_path)], copy=True, max_bytes=4 << 20)
    assert adopt_disks.check(_disk(other_vm), [str(tmp_path)], copy=True,
                             max_bytes=8 << 20).virtual_size == 8 << 20


# -- the service's refusals change nothing ---------------------------------------------------
class Reader:
    def __init__(self, xml, **state):
        self.stranger = adopt_read.Stranger(xml=xml, active=False, snapshots=0,
                                            managed_save=False)
        for key, value in state.items():
            setattr(self.stranger, key, value)
        self.asked = []

    def __call__(self, uri, name):
        self.asked.append((uri, name))
        return self.stranger


ADMIN = Principal(user="root", role=Role.ADMIN)


def _adopt(service, reader, body):
    service.read_domain = reader
    with acting_as(ADMIN):
        return service.adopt_vm(body)


@pytest.mark.parametrize("state, reason", [
    ({"active": True}, "is running"), ({"snapshots": 2}, "2 libvirt snapshot"),
    ({"managed_save": True}, "saved state")])
def test_a_domain_that_cannot_be_taken_now_is_a_conflict(service, state, reason):
    with pytest.raises(Conflict, match=reason):
        _adopt(service, Reader(domain_xml(), **state), {"domain": "legacy1"})
    assert service.store.list_vms() == []


def test_refusals_name_the_reason_and_record_nothing(service, tmp_path):
    service.config.adopt_disk_dirs = [str(tmp_path / "allowed")]
    with pytest.raises(Invalid) as refused:
        _adopt(service, Reader(domain_xml(nic="<interface type='direct'/>")), {"domain": "x"})
    assert refused.value.field == "domain" and "type 'direct'" in refused.value.reason
    with pytest.raises(Invalid) as refused:
        _adopt(service, Reader(domain_xml(disk=str(tmp_path / "nope.qcow2"))), {"domain": "x"})
    assert "cannot be read" in refused.value.reason
    assert service.store.list_vms() == [] and service.store.list_operations() == []


def test_only_an_admin_adopts(service):
    reader = Reader(domain_xml())
    service.read_domain = reader
    with acting_as(Principal(user="op", role=Role.OPERATOR)), pytest.raises(Forbidden):
        service.adopt_vm({"domain": "legacy1"})
    assert reader.asked == []  # refused before libvirt is asked anything


def test_an_accepted_adoption_records_the_vm_under_the_domain_s_uuid(service, tmp_path):
    allowed = tmp_path / "allowed"
    allowed.mkdir()
    images.create_blank(allowed / "root.qcow2", 64)
    images.create_blank(allowed / "data.qcow2", 32)
    data = ("<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>"
            f"<source file='{allowed / 'data.qcow2'}'/><target dev='vdb' bus='virtio'/></disk>")
    service.config.adopt_disk_dirs = [str(allowed)]
    reader = Reader(domain_xml(disk=str(allowed / "root.qcow2"), devices=data))
    with pytest.raises(Invalid) as refused:  # a standalone root disk: no image to infer
        _adopt(service, reader, {"domain": "legacy1"})
    assert refused.value.field == "image"
    vm, op = _adopt(service, reader, {"domain": "legacy1", "name": "old1", "image": "demo"})
    assert reader.asked[-1] == (service.config.libvirt_uri, "legacy1")
    row = service.store.get_vm_by_id(UUID)
    assert (vm["name"], row["name"], row["desired_state"]) == ("old1", "old1", "stopped")
    assert row["spec"]["disks"] == [{"name": "disk1", "size": 32}]
    assert row["spec"]["cpus"] == 2 and row["spec"]["max_cpus"] == 4
    source = op["params"]["source"]["adopt"]
    assert source["copy"] is False and [d["path"] for d in source["disks"]] == [
        str(allowed / "root.qcow2"), str(allowed / "data.qcow2")]
    with pytest.raises(Conflict, match="already a VM"):
        _adopt(service, reader, {"domain": "legacy1", "name": "old2", "image": "demo"})


def test_a_failed_takeover_and_a_delete_leave_the_stranger_defined(service, stepped_controller,
                                                                   tmp_path):
    """The disk changed between the request and the controller's placement: the create
    fails, and deleting the VM then leaves the admin's domain (same UUID) as it was."""
    import libvirt

    from tests.unit.conftest import run_passes

    allowed = tmp_path / "allowed"
    allowed.mkdir()
    root = allowed / "root.qcow2"
    images.create_blank(root, 64)
    service.config.adopt_disk_dirs = [str(allowed)]
    xml = domain_xml(disk=str(root), nic="")
    conn = libvirt.open("test:///default")
    try:
        conn.defineXML(xml.replace("<domain type='kvm'>", "<domain type='test'>").replace(
            "machine='pc-q35-7.2'", "").replace("arch='x86_64'", "arch='i686'"))
        _adopt(service, Reader(xml), {"domain": "legacy1", "image": "demo"})
        root.unlink()  # before the controller's pass: its check again fails
        assert run_passes(stepped_controller, lambda: service.store.list_operations()[0][
            "status"] == "failed")
        with acting_as(ADMIN):
            service.delete_vm("legacy1", force=True)
        assert run_passes(stepped_controller, lambda: service.store.list_vms() == [])
        assert conn.lookupByUUIDString(UUID).name() == "legacy1"  # still the admin's
    finally:
        try:
            conn.lookupByUUIDString(UUID).undefine()
        except libvirt.libvirtError:
            pass
        conn.close()


def test_a_host_with_storage_of_its_own_is_refused_before_libvirt_is_asked(service):
    service.store.update_host("local", storage="own")
    reader = Reader(domain_xml())
    with pytest.raises(Conflict, match="storage of its own"):
        _adopt(service, reader, {"domain": "legacy1"})
    assert reader.asked == []

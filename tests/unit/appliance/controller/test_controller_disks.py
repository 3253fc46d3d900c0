"""Disks and CD-ROM media changed on a running VM (controller/disk_hotplug.py) and on a
stopped one, on the fake hypervisor (virt/fake_devices.py): what is attached, grown,
detached and deleted, what waits for a restart, and why."""
from __future__ import annotations

import pytest
from tests.unit.appliance.controller.controller_harness import settle
from tests.unit.conftest import make_iso_image

from appliance.errors import Conflict, Invalid
from appliance.virt import domain_devices
from appliance.virt.libvirt_devices import parse_disks

MIB = 1 << 20


@pytest.fixture
def iso(service, tmp_path):
    path = tmp_path / "install.iso"
    make_iso_image(path)
    return service.import_image_file("install", path)


def _running(service, controller, clock, **spec):
    vm, _ = service.create_vm({"name": "web1", **spec})
    settle(controller, clock)
    return vm


def _live(cloud, vm_id):
    """target -> the fake's live disk (its definition's at boot, then as changed)."""
    dom = next(h.domains[vm_id] for h in cloud.hosts.values() if vm_id in h.domains)
    if dom.live_devices is None:  # not looked at since the boot: the definition's
        return {d.target: {"file": d.file, "size": None} for d in parse_disks(dom.xml)}
    return dom.live_devices


def _row(service):
    return service.store.get_vm("web1", "default")


def _volumes(cloud, vm_id):
    """The VM's volumes on its host's own storage (the harness's hosts share "san1")."""
    return next(h.volumes[vm_id] for h in cloud.hosts.values() if vm_id in h.volumes)


def _volume_size(cloud, vm_id, name):
    return next(h.volume_sizes[(vm_id, name)] for h in cloud.hosts.values()
                if (vm_id, name) in h.volume_sizes)


def _update(service, controller, clock, patch):
    _vm, op = service.update_vm("web1", patch)
    settle(controller, clock)
    return service.store.get_operation(op["id"])


def test_a_grown_disk_is_resized_in_the_running_domain(service, controller, cloud, clock):
    vm = _running(service, controller, clock, disks=[{"name": "data", "size": 16}])
    assert _update(service, controller, clock,
                   {"disks": [{"name": "data", "size": 64}]})["status"] == "succeeded"
    live = _live(cloud, vm["id"])
    data = next(d for d in live.values() if (d["file"] or "").endswith("disk-data.qcow2"))
    assert data["size"] == 64 * MIB
    assert not _row(service)["restart_required"]
    assert [d["size"] for d in service.list_disks("web1")] == [64]


def test_a_disk_is_attached_at_a_free_target_and_detached_then_deleted(
        service, controller, cloud, clock, config):
    vm = _running(service, controller, clock, disks=[{"name": "data", "size": 16}])
    targets_before = set(_live(cloud, vm["id"]))
    service.add_disk("web1", "logs", "32M")
    settle(controller, clock)
    live = _live(cloud, vm["id"])
    added = set(live) - targets_before
    assert len(added) == 1  # a target no live disk had (vdb is data's, vdc the seed's)
    target = added.pop()
    assert live[target]["file"].endswith("disk-logs.qcow2") and target.startswith("vd")
    assert "disk-logs.qcow2" in _volumes(cloud, vm["id"])  # made before the attach
    assert not _row(service)["restart_required"]
    service.remove_disk("web1", "logs")
    settle(controller, clock)
    assert target not in _live(cloud, vm["id"])
    assert "disk-logs.qcow2" not in _volumes(cloud, vm["id"])  # once the domain lost it
    kinds = [e["kind"] for e in service.list_events("web1")]
    assert "disk-removed" in kinds


def test_a_disk_the_guest_keeps_waits_for_the_restart_and_its_file_stays(
        service, controller, cloud, clock, config):
    vm = _running(service, controller, clock, disks=[{"name": "data", "size": 16}])
    data = next(t for t, d in _live(cloud, vm["id"]).items()
                if (d["file"] or "").endswith("disk-data.qcow2"))
    cloud.stuck_detach = {data}
    service.remove_disk("web1", "data")
    settle(controller, clock)
    assert "disk-data.qcow2" in _volumes(cloud, vm["id"])  # not pulled from under the guest
    row = _row(service)
    assert row["restart_required"]
    assert any("has not released it" in e["message"] for e in service.list_events("web1")
               if e["kind"] == "restart-required")
    # The next boot defines the VM without it, and the stopped VM's file goes.
    service.set_state("web1", "stopped")
    settle(controller, clock)
    service.set_state("web1", "running")  # its define, stopped: the file goes
    settle(controller, clock)
    assert "disk-data.qcow2" not in _volumes(cloud, vm["id"])


def test_a_stopped_vms_disk_is_grown_and_a_removed_one_deleted_at_its_define(
        service, controller, cloud, clock):
    vm, _ = service.create_vm({"name": "web1", "state": "stopped",
                               "disks": [{"name": "data", "size": 16},
                                         {"name": "old", "size": 16}]})
    settle(controller, clock)
    assert _volume_size(cloud, vm["id"], "disk-data.qcow2") == 16 * MIB
    service.resize_disk("web1", "data", "48M")
    service.remove_disk("web1", "old")
    settle(controller, clock)
    assert _volume_size(cloud, vm["id"], "disk-data.qcow2") == 48 * MIB
    assert "disk-old.qcow2" not in _volumes(cloud, vm["id"])  # a later "old" starts blank


def test_a_disk_never_shrinks_and_is_not_added_or_removed_under_snapshots(
        service, controller, clock):
    _running(service, controller, clock, disks=[{"name": "data", "size": 32}])
    with pytest.raises(Invalid) as refusal:
        service.update_vm("web1", {"disks": [{"name": "data", "size": 16}]})
    assert refusal.value.field == "disks[0].size" and "cannot shrink" in refusal.value.reason
    with pytest.raises(Invalid):
        service.resize_disk("web1", "data", "16M")
    service.create_snapshot("web1", {"name": "s1"})
    settle(controller, clock)
    with pytest.raises(Conflict, match="while the VM has snapshots .*s1"):
        service.add_disk("web1", "more")
    with pytest.raises(Conflict, match="removed while the VM has snapshots"):
        service.remove_disk("web1", "data")
    assert service.get_vm("web1")["spec"]["disks"] == [{"name": "data", "size": 32}]


def test_media_changes_live_and_a_new_drive_waits_for_a_restart(
        service, controller, cloud, clock, iso):
    vm = _running(service, controller, clock, cdroms=["install", ""])
    live = _live(cloud, vm["id"])
    assert live["sda"]["file"] == iso["path"] and live["sdb"]["file"] is None
    service.set_cdrom("web1", 0, "")
    service.set_cdrom("web1", "1", "install")
    settle(controller, clock)
    live = _live(cloud, vm["id"])
    assert live["sda"]["file"] is None and live["sdb"]["file"] == iso["path"]
    assert not _row(service)["restart_required"]
    assert [e["message"] for e in service.list_events("web1") if e["kind"] == "media-changed"]
    _update(service, controller, clock, {"cdroms": ["install", "", ""]})
    assert _row(service)["restart_required"]  # a drive is cold-plugged
    assert "sdc" not in _live(cloud, vm["id"])


def test_a_boot_order_change_asks_no_restart(service, controller, clock, iso):
    _running(service, controller, clock, cdroms=["install"])
    _update(service, controller, clock, {"boot_order": ["cdrom", "hd"]})
    assert not _row(service)["restart_required"]
    xml = service.vm_row("web1")["domain_xml"] or ""
    assert "<os>" in xml or "<os " in xml


def test_a_host_without_hotplug_makes_the_change_wait(service, controller, cloud, clock):
    _running(service, controller, clock)
    cloud.no_hotplug = True
    service.add_disk("web1", "data", "16M")
    settle(controller, clock)
    assert _row(service)["restart_required"]
    assert any(e["kind"] == "restart-required" for e in service.list_events("web1"))


def test_install_media_are_iso_images_of_the_store_and_never_a_root_disk(
        service, controller, clock, iso):
    """Security: a CD-ROM names an image of the store; its file is the store's, never a
    path from the request, and a disk image or an unknown name is refused."""
    for bad in ("/etc/shadow", "../../etc/shadow", "demo", "nothing", "install.iso"):
        with pytest.raises(Invalid) as refusal:
            service.create_vm({"name": "web9", "cdroms": [bad]})
        assert refusal.value.field == "cdroms[0]", bad
    with pytest.raises(Invalid, match="ISO image") as refusal:
        service.create_vm({"name": "web9", "image": "install"})
    assert refusal.value.field == "image"
    _running(service, controller, clock, cdroms=["install"])
    xml = service.vm_row("web1")["domain_xml"] or ""
    assert f"<source file=\"{iso['path']}\"" in xml.replace("'", '"')
    with pytest.raises(Conflict, match="web1"):
        service.delete_image("install")  # in a drive: in use


def test_cdrom_xml_names_only_the_file_it_is_given():
    xml = domain_devices.cdrom_xml(1, None)
    assert "<source" not in xml and 'dev="sdb"' in xml and "<readonly" in xml


def test_growth_must_fit_the_vms_host(service, controller, clock):
    """The scheduler's disk filter on the VM's host, with its reason (the host has 100 GiB)."""
    _running(service, controller, clock, disks=[{"name": "data", "size": 16}])
    with pytest.raises(Conflict, match="does not fit on host") as refusal:
        service.resize_disk("web1", "data", "500G")
    assert refusal.value.field == "disks"
    with pytest.raises(Conflict, match="does not fit on host"):
        service.add_disk("web1", "huge", "500G")
    assert service.get_vm("web1")["spec"]["disks"] == [{"name": "data", "size": 16}]
    service.resize_disk("web1", "data", "20G")  # what fits, fits


def test_growth_counts_against_the_projects_disk_quota(service, controller, clock):
    _running(service, controller, clock, disks=[{"name": "data", "size": 16}])
    service.update_project("default", {"quota": {"disk_gib": 2}})
    with pytest.raises(Conflict) as refusal:
        service.resize_disk("web1", "data", "3G")
    assert refusal.value.field == "quota" and "disk" in refusal.value.reason
    with pytest.raises(Conflict):
        service.add_disk("web1", "more", "3G")
    service.resize_disk("web1", "data", "1G")  # within the quota

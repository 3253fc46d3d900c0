"""Backup targets and backups in the service: a target's path is checked hard
(the appliance runs as root and writes there), a refused one changes nothing;
a backup request picks its target; a backup others depend on is not deleted."""
from __future__ import annotations

import os

import pytest

from appliance import backup_chain
from appliance.errors import Conflict, Invalid, NotFound


@pytest.fixture
def nas(tmp_path):
    path = tmp_path / "nas"
    path.mkdir(mode=0o700)
    return path


def refused(service, body, field: str, reason: str) -> None:
    with pytest.raises(Invalid) as err:
        service.add_backup_target(body)
    assert err.value.field == field and reason in err.value.reason, err.value.reason
    assert service.list_backup_targets() == []


def test_a_target_is_added_listed_and_removed(service, nas):
    added = service.add_backup_target({"name": "nas", "path": str(nas)})
    assert added["path"] == str(nas) and added["available"] is True and added["backups"] == 0
    assert added["free_bytes"] > 0 and added["total_bytes"] >= added["free_bytes"]
    assert [t["name"] for t in service.list_backup_targets()] == ["nas"]
    with pytest.raises(Conflict):
        service.add_backup_target({"name": "nas", "path": str(nas)})
    service.remove_backup_target("nas")
    with pytest.raises(NotFound):
        service.get_backup_target("nas")


@pytest.mark.parametrize("path, reason", [
    ("relative/dir", "absolute"),
    ("/", "system directory"),
    ("/etc", "system directory"),
    ("/etc/ssh", "inside the system directory /etc"),
    ("/proc/self", "canonical"),  # a symlink
    ("/usr/lib/x86_64-linux-gnu", "inside the system directory"),
    ("/var/lib/libvirt/images", "inside the system directory /var/lib/libvirt"),
    ("/nonexistent-target", "no such directory"),
])
def test_system_and_bad_paths_are_refused(service, path, reason):
    refused(service, {"name": "t", "path": path}, "path", reason)


def test_symlinks_dots_and_files_are_refused(service, nas, tmp_path):
    link = tmp_path / "link"
    link.symlink_to(nas)
    refused(service, {"name": "t", "path": str(link)}, "path", f"resolves to {nas}")
    refused(service, {"name": "t", "path": f"{nas}/../nas"}, "path", "canonical")
    refused(service, {"name": "t", "path": f"{nas}/"}, "path", "canonical")
    (nas / "file").write_text("x")
    refused(service, {"name": "t", "path": str(nas / "file")}, "path", "not a directory")
    refused(service, {"name": "t", "path": str(nas) + "\0x"}, "path", "NUL")


def test_the_appliances_own_directories_and_world_writable_ones_are_refused(service, config,
                                                                            nas):
    refused(service, {"name": "t", "path": str(config.vms_dir)}, "path", "appliance's own")
    refused(service, {"name": "t", "path": str(config.home.parent)}, "path", "appliance's own")
    open_dir = nas / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    refused(service, {"name": "t", "path": str(open_dir)}, "path", "writable by every user")


def test_a_mount_point_outside_home_is_the_appliances_too(service, config, nas):
    """`mount` may be absolute: a target in the FUSE view (vms/NAME/snapshots/...)
    would have the controller's mkdir of vm-appliance/ taken as a snapshot."""
    config.mount = str(nas / "vmfs")
    (nas / "vmfs" / "vms").mkdir(parents=True)
    refused(service, {"name": "t", "path": str(nas / "vmfs" / "vms")}, "path", "appliance's own")
    refused(service, {"name": "t", "path": str(nas)}, "path", "appliance's own")


def test_names_fields_and_overlaps(service, nas):
    refused(service, {"name": "Bad_Name", "path": str(nas)}, "name", "DNS label")
    refused(service, {"name": "t", "path": str(nas), "extra": 1}, "extra", "unknown field")
    service.add_backup_target({"name": "nas", "path": str(nas)})
    (nas / "inner").mkdir()
    with pytest.raises(Conflict) as err:
        service.add_backup_target({"name": "inner", "path": str(nas / "inner")})
    assert err.value.field == "path"


def _backup_row(service, vm, backup_id, parent=None, status="good"):
    service.store.insert_backup({
        "id": backup_id, "vm_id": vm["id"], "vm_name": vm["name"], "project": "default",
        "target": "nas", "kind": "incremental" if parent else "full", "parent": parent,
        "chain": parent or backup_id, "checkpoint": backup_id, "status": status,
        "disks": [{"name": "root", "file": "root.qcow2", "virtual_size": 1, "bytes": 1}],
        "size": 1, "created": 1.0})


FULL, INC = "20261130T010000Z-aaaaaa", "20261130T020000Z-bbbbbb"


def test_backups_listed_shown_and_deleted_in_dependency_order(service, nas):
    service.add_backup_target({"name": "nas", "path": str(nas)})
    vm, _op = service.create_vm({"name": "web1"})
    _backup_row(service, vm, FULL)
    _backup_row(service, vm, INC, parent=FULL)
    for backup_id in (FULL, INC):
        (backup_chain.make_vm_folder(nas, vm["id"]) / backup_id).mkdir()
    shown = service.get_backup(INC)
    assert shown["depends_on"] == [FULL]
    assert shown["path"] == str(nas / "vm-appliance" / vm["id"] / INC)
    assert [b["id"] for b in service.list_backups("web1")] == [INC, FULL]  # newest first
    with pytest.raises(Conflict) as err:
        service.delete_backup(FULL)
    assert INC in err.value.reason
    with pytest.raises(Conflict):
        service.remove_backup_target("nas")  # backups are listed in it
    service.delete_backup(INC)
    service.delete_backup(FULL)
    assert os.listdir(nas / "vm-appliance" / vm["id"]) == []
    assert service.list_backups("web1") == []
    with pytest.raises(NotFound):
        service.get_backup("../../etc")


def test_remove_with_forget_drops_the_records_and_keeps_the_files(service, nas):
    service.add_backup_target({"name": "nas", "path": str(nas)})
    vm, _op = service.create_vm({"name": "web1"})
    _backup_row(service, vm, FULL)
    (backup_chain.make_vm_folder(nas, vm["id"]) / FULL).mkdir()
    service.remove_backup_target("nas", forget=True)
    assert service.list_backups("web1") == []
    assert (nas / "vm-appliance" / vm["id"] / FULL).is_dir()


def test_start_backup_picks_its_target(service, nas, tmp_path):
    vm, _op = service.create_vm({"name": "web1"})
    with pytest.raises(Invalid) as err:
        service.start_backup("web1")
    assert err.value.field == "target" and "none is defined" in err.value.reason
    service.add_backup_target({"name": "nas", "path": str(nas)})
    op = service.start_backup("web1")
    assert op["kind"] == "backup" and op["params"] == {"target": "nas", "full": False,
                                                      "scheduled": False}
    with pytest.raises(Conflict):
        service.start_backup("web1")  # one at a time
    other = tmp_path / "other"
    other.mkdir(mode=0o700)
    service.add_backup_target({"name": "other", "path": str(other)})
    service.cancel_operation(op["id"])
    with pytest.raises(Invalid) as err:
        service.start_backup("web1")
    assert "there are 2" in err.value.reason
    service.update_vm("web1", {"backup": {"target": "other", "keep_last": 3}})
    assert service.start_backup("web1", {"full": True})["params"]["target"] == "other"
    for bad, field in (({"full": "yes"}, "full"), ({"target": 3}, "target"), ({"x": 1}, "x")):
        with pytest.raises(Invalid) as err:
            service.start_backup("web1", bad)
        assert err.value.field == field
    with pytest.raises(NotFound):
        service.start_backup("web1", {"target": "missing"})


def test_a_vm_own_listing_needs_the_vm_and_shows_its_backups_alone(service, nas):
    """list_backups(vm, vm_must_exist=True), GET /v1/vms/NAME/backups in one call: the
    VM must be one of the caller's; a deleted namesake's backups stay under /v1/backups."""
    service.add_backup_target({"name": "nas", "path": str(nas)})
    with pytest.raises(NotFound) as missing:
        service.list_backups("web1", vm_must_exist=True)
    assert missing.value.field == "name"
    old = {"id": "0" * 32, "name": "web1"}  # a deleted web1, whose backups are kept
    _backup_row(service, old, FULL)
    vm, _op = service.create_vm({"name": "web1"})
    _backup_row(service, vm, INC)
    assert [b["id"] for b in service.list_backups("web1", vm_must_exist=True)] == [INC]
    assert [b["id"] for b in service.list_backups("web1")] == [INC, FULL]  # by name, as before
    from appliance.access import Principal, Role, acting_as

    outsider = Principal(user="eve", role=Role.OPERATOR, projects=("other",), project="other")
    with acting_as(outsider), pytest.raises(NotFound):
        service.list_backups("web1", vm_must_exist=True)  # not one of the caller's VMs

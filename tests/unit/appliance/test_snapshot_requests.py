"""What a snapshot request may say, and what a refused one changes (nothing)."""
from __future__ import annotations

import pytest

from appliance.errors import Conflict, Invalid, NotFound
from appliance.service.snapshots import MAX_SNAPSHOTS


@pytest.fixture
def vm(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    return service.store.get_vm("web1")


def nothing_changed(service, vm):
    assert service.store.list_snapshots(vm["id"]) == []
    assert [op["kind"] for op in service.store.operations_of_vm(vm["id"])] == ["create"]


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "Bad_Name"}, "name"),
    ({"name": "x" * 64}, "name"),
    ({}, "name"),
    ({"name": "s1", "memory": "yes"}, "memory"),
    ({"name": "s1", "description": 7}, "description"),
    ({"name": "s1", "description": "x" * 1001}, "description"),
    ({"name": "s1", "description": "bell\x07"}, "description"),
    ({"name": "s1", "disks": ["vda"]}, "disks"),
])
def test_a_bad_request_is_refused_with_its_field(service, vm, body, field):
    with pytest.raises(Invalid) as refused:
        service.create_snapshot("web1", body)
    assert refused.value.field == field
    nothing_changed(service, vm)


def test_a_request_that_is_not_an_object_is_refused(service, vm):
    with pytest.raises(Invalid):
        service.create_snapshot("web1", ["s1"])
    nothing_changed(service, vm)


def test_a_memory_snapshot_needs_a_running_vm(service, vm):
    with pytest.raises(Conflict, match="needs a running VM") as refused:
        service.create_snapshot("web1", {"name": "s1", "memory": True})
    assert refused.value.field == "memory"
    nothing_changed(service, vm)


def test_a_snapshot_is_recorded_with_its_operation(service, vm):
    op = service.create_snapshot("web1", {"name": "s1", "description": "two\nlines"})
    assert op["kind"] == "snapshot" and op["params"]["name"] == "s1" and op["params"]["memory"] is False
    shown = service.get_snapshot("web1", "s1")
    assert shown == {"name": "s1", "vm": "web1", "description": "two\nlines", "memory": False,
                     "parent": None, "state": "creating", "vm_state": "provisioning", "size": None,
                     "created": shown["created"], "current": False, "error": None}


def test_a_name_is_taken_once_per_vm_and_at_most_32_are_kept(service, vm):
    service.create_snapshot("web1", {"name": "s0"})
    with pytest.raises(Conflict, match="has a snapshot named") as refused:
        service.create_snapshot("web1", {"name": "s0"})
    assert refused.value.field == "name"
    for n in range(1, MAX_SNAPSHOTS):
        service.create_snapshot("web1", {"name": f"s{n}"})
    with pytest.raises(Conflict, match="at most 32"):
        service.create_snapshot("web1", {"name": "one-more"})
    assert len(service.list_snapshots("web1")) == MAX_SNAPSHOTS


def test_a_missing_snapshot_is_not_found(service, vm):
    for call in (lambda: service.get_snapshot("web1", "nope"),
                 lambda: service.delete_snapshot("web1", "nope"),
                 lambda: service.revert_snapshot("web1", "nope")):
        with pytest.raises(NotFound) as missing:
            call()
        assert missing.value.field == "snapshot"


def test_one_being_taken_can_be_neither_deleted_nor_reverted_to(service, vm):
    service.create_snapshot("web1", {"name": "s1"})
    with pytest.raises(Conflict, match="being taken"):
        service.delete_snapshot("web1", "s1")
    with pytest.raises(Conflict, match="only a ready one"):
        service.revert_snapshot("web1", "s1")


def test_a_vm_being_deleted_takes_no_snapshot(service, vm):
    service.delete_vm("web1")
    with pytest.raises(Conflict, match="being deleted"):
        service.create_snapshot("web1", {"name": "s1"})


def test_another_projects_vm_is_not_found(service, vm):
    from appliance.access import Principal, Role, acting_as

    with acting_as(Principal(user="eve", role=Role.OPERATOR, projects=("other",), project="other")):
        with pytest.raises(NotFound):
            service.list_snapshots("web1")


def test_a_cancelled_snapshot_is_failed_and_can_be_deleted(service, vm):
    op = service.create_snapshot("web1", {"name": "s1"})
    service.cancel_operation(op["id"])
    shown = service.get_snapshot("web1", "s1")
    assert shown["state"] == "failed" and shown["error"] == "cancelled by request"
    delete = service.delete_snapshot("web1", "s1")
    assert delete["kind"] == "snapshot-delete"


def test_a_delete_asked_twice_is_one_operation(service, vm):
    for name in ("s1", "s2"):
        op = service.create_snapshot("web1", {"name": name})
        service.store.update_snapshot(service.store.get_snapshot(vm["id"], name)["id"], state="ready")
        service.store.update_operation(op["id"], status="succeeded")
    first = service.delete_snapshot("web1", "s1")
    service.delete_snapshot("web1", "s2")  # now the newest pending delete
    assert service.delete_snapshot("web1", "s1")["id"] == first["id"]

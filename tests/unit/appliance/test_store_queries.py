"""The store's typed queries: each filter keeps what it names and only that,
and the claims SQL sums agree with placement's rule for one VM."""

from __future__ import annotations

import itertools

import pytest

from appliance import placement
from appliance.model import OPEN_OP_STATES, DesiredState, OpKind, OpStatus, VMState
from appliance.store import Store


@pytest.fixture
def db(tmp_path) -> Store:
    clock = itertools.count(1)
    return Store(tmp_path / "a.db", clock=lambda: float(next(clock)))


def add_vm(
    store: Store,
    name: str,
    host: str = "h1",
    desired: str = "stopped",
    observed: str = "stopped",
    **spec,
) -> dict:
    row = {
        "id": f"id-{name}",
        "name": name,
        "spec": {"name": name, "image": "img", "cpus": 2, "memory": 256, "disks": [], **spec},
        "desired_state": desired,
        "observed_state": observed,
        "host": host,
        "generation": 1,
        "created": 0.0,
        "updated": 0.0,
        "mac": f"52:54:00:00:00:{len(name):02x}",
        "domain_xml": "<domain/>",
    }
    store.insert_vm(row)
    return store.get_vm(name)


def test_vms_on_host_leaves_out_other_hosts_and_deleted_vms(db):
    add_vm(db, "a")
    add_vm(db, "b", desired="deleted")
    add_vm(db, "c", host="h2")
    add_vm(db, "d", observed="running", desired="running")
    assert [r["name"] for r in db.vms_on_host("h1")] == ["a", "d"]
    assert [r["name"] for r in db.vms_on_host("h1", include_deleted=True)] == ["a", "b", "d"]
    assert [r["name"] for r in db.vms_on_host("h1", observed=[VMState.RUNNING])] == ["d"]
    assert "domain_xml" not in db.vms_on_host("h1")[0]  # not read unless asked for
    assert db.vms_on_host("h1", with_xml=True)[0]["domain_xml"] == "<domain/>"


def test_vms_in_states_and_by_mac(db):
    a = add_vm(db, "a", observed="running", desired="running")
    add_vm(db, "bb", observed="paused", desired="paused")
    assert [r["name"] for r in db.vms_in_states([VMState.RUNNING, VMState.PAUSED])] == ["a", "bb"]
    assert db.vm_by_mac(a["mac"])["name"] == "a"
    assert db.vm_by_mac(a["mac"], excluding=a["id"]) is None
    assert db.vm_by_mac("52:54:00:ff:ff:ff") is None


def test_operations_of_vm_filters_by_status_and_kind_newest_first(db):
    a, b = add_vm(db, "a"), add_vm(db, "b")
    first = db.add_operation("op1", a, OpKind.START)
    db.add_operation("op2", a, OpKind.STOP)
    db.add_operation("op3", b, OpKind.START)
    db.update_operation(first["id"], status=OpStatus.SUCCEEDED)
    assert [o["id"] for o in db.operations_of_vm(a["id"])] == ["op2", "op1"]
    assert [o["id"] for o in db.operations_of_vm(a["id"], OPEN_OP_STATES)] == ["op2"]
    assert [o["id"] for o in db.operations_of_vm(a["id"], kinds=[OpKind.START])] == ["op1"]
    assert db.busy_operation(a["id"])["id"] == "op2"
    assert db.open_operation(a["id"], OpKind.START) is None
    assert db.has_pending(b["id"], OpKind.START) and not db.has_pending(b["id"], OpKind.STOP)
    assert [o["id"] for o in db.list_operations(vm_name="a", status=OpStatus.PENDING)] == ["op2"]
    assert db.claim_operation("op2", 5.0) and db.get_operation("op2")["status"] == OpStatus.RUNNING
    assert not db.claim_operation("op1", 5.0)  # finished: never runs again


def test_update_refuses_a_column_the_table_lacks(db):
    a = add_vm(db, "a")
    with pytest.raises(ValueError, match="no column"):
        db.update_vm(a["id"], **{"name = 'x', spec": "{}"})
    assert db.get_vm("a")["generation"] == 1


@pytest.mark.parametrize(
    "desired,observed,reserve",
    [
        ("running", "running", False),
        ("stopped", "stopped", False),
        ("stopped", "stopped", True),
        ("paused", "stopped", False),
        ("stopped", "migrating", False),
        ("deleted", "crashed", False),
    ],
)
def test_claims_by_host_follows_claims_cpu_ram(db, desired, observed, reserve):
    row = add_vm(
        db,
        "a",
        desired=desired,
        observed=observed,
        reserve_when_stopped=reserve,
        disks=[{"size": 3}],
    )
    db.insert_image(
        {
            "name": "img",
            "path": "/x",
            "format": "qcow2",
            "virtual_size": 1024,
            "actual_size": 1,
            "created": 0.0,
            "source": "test",
        }
    )
    claims = placement.claims_cpu_ram(row)
    cpus, memory, disk = placement.allocations(db)["h1"]
    assert (cpus, memory) == ((2, 256) if claims else (0, 0))
    assert disk == 1024 + 3 * 1024 * 1024  # disks are claimed always


def test_a_move_claims_on_its_target_too(db):
    a = add_vm(db, "a", desired=DesiredState.RUNNING, observed=VMState.RUNNING, group="g")
    db.add_operation("op1", a, OpKind.MIGRATE, {"target": "h2"})
    assert placement.allocations(db)["h2"][:2] == [2, 256]
    assert db.group_members_by_host("g", excluding=None) == {"h1": 1, "h2": 1}
    assert db.group_members_by_host("g", excluding=a["id"]) == {}


def test_list_events_keeps_the_newest_in_order(db):
    a = add_vm(db, "a")
    for n in range(5):
        db.add_event("k", f"m{n}", a if n % 2 == 0 else None)
    assert [e["message"] for e in db.list_events(limit=3)] == ["m2", "m3", "m4"]
    assert [e["message"] for e in db.list_events(a["id"])] == ["m0", "m2", "m4"]
    assert [e["message"] for e in db.list_events(since=4)] == ["m4"]


def test_names_where_projects_meet_are_qualified(db):
    """One name in two projects: the metrics' `vm` label (and an admin's host
    listing) names the other project's as PROJECT/NAME, so that the two are two series."""
    db.insert_project({"name": "dev", "description": "", "quota": {}, "created": 0.0})
    mine = add_vm(db, "web1", observed="running", desired="running")
    db.insert_vm({**mine, "id": "id-dev-web1", "project": "dev", "mac": "52:54:00:00:01:01"})
    theirs = db.get_vm("web1", "dev")
    assert db.vm_ids_and_names() == {mine["id"]: "web1", theirs["id"]: "dev/web1"}
    for vm in (mine, theirs):
        db.add_event("rebooted", "", vm)
        op = db.add_operation(f"op-{vm['id']}", vm, OpKind.MIGRATE)
        db.update_operation(op["id"], status=OpStatus.RUNNING, progress=40)
    assert sorted(db.vm_event_counts(["rebooted"])) == [("dev/web1", "rebooted", 1), ("web1", "rebooted", 1)]
    assert sorted(db.running_operation_progress()) == [("dev/web1", "migrate", 40), ("web1", "migrate", 40)]
    assert db.vm_names_on_host("h1") == ["web1", "dev/web1"]
    assert db.vm_names_on_host("h1", "dev") == ["web1"]


def test_scheduled_vms_own_schedule_else_projects_without_reading_every_vm(db):
    daily = {"schedule": "daily 02:00", "keep_daily": 3}
    db.insert_project({"name": "p", "description": "", "created": 0.0, "backup": daily})
    db.insert_project({"name": "q", "description": "", "created": 0.0})
    add_vm(db, "own", backup={"schedule": "hourly", "keep_last": 2})
    add_vm(db, "gone", desired="deleted", backup={"schedule": "hourly", "keep_last": 2})
    add_vm(db, "unscheduled", backup=None)
    for name, project, backup in (("inherits", "p", None), ("opts-out", "p", {"keep_last": 1}),
                                  ("plain", "q", None)):
        row = {"id": f"id-{name}", "name": name, "project": project, "desired_state": "stopped",
               "spec": {"name": name, "image": "img", "cpus": 1, "memory": 128, "disks": [], "backup": backup},
               "observed_state": "stopped", "host": "h1", "generation": 1, "created": 0.0, "updated": 0.0,
               "mac": f"52:54:00:00:02:{len(name):02x}"}
        db.insert_vm(row)
    got = {r["name"]: (r["project"], r["policy"]) for r in db.scheduled_vms()}
    assert got == {"own": ("default", {"schedule": "hourly", "keep_last": 2}), "inherits": ("p", daily)}
    from appliance.store.backup_schedules import _SCHEDULED_VMS
    plan = [row[3] for row in db.db.execute("EXPLAIN QUERY PLAN " + _SCHEDULED_VMS)]
    assert "SCAN vms USING INDEX idx_vms_own_backup_schedule" in plan
    assert not {"SCAN vms", "SCAN v"} & set(plan)  # no pass over every VM

"""Snapshot operations on the fake hypervisor, which behaves as libvirt 9.0 does
(appliance/virt/fake_snapshots.py): a domain with snapshots refuses a migration
and a plain undefine, a revert with checkpoints present fails."""
from __future__ import annotations

import pytest

from appliance.access import Principal, Role, acting_as
from appliance.errors import Conflict
from appliance.virt.driver import DriverError
from appliance.virt.fake_snapshots import SNAPSHOT_BYTES
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle

HOSTS = {"local": URI_A, "b": URI_B}


def run_operations(controller):
    """Every queued operation, each run inline to its end (one per VM per dispatch)."""
    for _ in range(10):
        if not controller.store.next_operations():
            return
        controller.operations.dispatch()


def make_vm(service, controller, clock, state="running"):
    vm, _op = service.create_vm({"name": "web1", "state": state})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    assert row["observed_state"] == state
    return row


def domain(cloud, row):
    return cloud.host(HOSTS[row["host"]]).domains[row["id"]]


def snapshot(service, controller, name, **body):
    op = service.create_snapshot("web1", {"name": name, **body})
    run_operations(controller)
    done = service.store.get_operation(op["id"])
    assert done["status"] == "succeeded", done["error"]
    return service.get_snapshot("web1", name)


def test_a_snapshot_is_recorded_with_libvirts_xml_parent_size_and_current(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    first = snapshot(service, controller, "s1", description="before upgrade")
    assert first["state"] == "ready" and first["current"] and first["parent"] is None
    assert first["size"] == SNAPSHOT_BYTES and first["vm_state"] == "running"
    assert first["description"] == "before upgrade" and first["memory"] is False
    second = snapshot(service, controller, "s2", memory=True)
    assert second["parent"] == "s1" and second["current"] and second["memory"] is True
    assert [s["current"] for s in service.list_snapshots("web1")] == [False, True]
    assert list(domain(cloud, row).snapshots) == ["s1", "s2"]
    stored = service.store.get_snapshot(row["id"], "s2")["xml"]
    assert "<name>s2</name>" in stored and "<parent><name>s1</name>" in stored


def test_a_snapshot_libvirt_took_before_a_crash_is_adopted(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    op = service.create_snapshot("web1", {"name": "s1"})
    guest = controller.link("local").lookup(row["id"]) if row["host"] == "local" else \
        controller.link("b").lookup(row["id"])
    guest.snapshot_create("s1", "", False)  # libvirt took it; the controller died before recording it
    service.store.claim_operation(op["id"], 0.0)
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert service.get_snapshot("web1", "s1")["state"] == "ready"
    assert list(domain(cloud, row).snapshots) == ["s1"]


def test_a_failed_snapshot_keeps_the_reason(service, controller, cloud, clock, monkeypatch):
    make_vm(service, controller, clock)
    from appliance.virt.fake import FakeGuest

    def refuse(self, name, description, memory):
        raise DriverError("Device 'vdb' is writable but does not support snapshots",
                          "Device 'vdb' is writable but does not support snapshots")

    monkeypatch.setattr(FakeGuest, "snapshot_create", refuse)
    op = service.create_snapshot("web1", {"name": "s1"})
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "failed"
    shown = service.get_snapshot("web1", "s1")
    assert shown["state"] == "failed" and "does not support snapshots" in shown["error"]


def test_a_disk_only_revert_of_a_running_vm_boots_it_on_the_reverted_disks(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "s1")
    snapshot(service, controller, "s2")
    calls = cloud.host(HOSTS[row["host"]]).calls
    calls.clear()
    op = service.revert_snapshot("web1", "s1")
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert f"snapshot-revert s1 {row['id']}" in calls
    assert calls.index(f"snapshot-revert s1 {row['id']}") < calls.index(f"start {row['id']}")
    assert domain(cloud, row).state == "running"
    assert service.get_snapshot("web1", "s1")["current"]
    assert service.store.get_vm_by_id(row["id"])["desired_state"] == "running"


def test_a_disk_only_revert_keeps_a_stopped_vm_stopped(service, controller, cloud, clock):
    row = make_vm(service, controller, clock, state="stopped")
    snapshot(service, controller, "s1")
    service.revert_snapshot("web1", "s1")
    run_operations(controller)
    assert domain(cloud, row).state == "stopped"


def test_a_memory_revert_resumes_a_stopped_vm_as_it_was(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "m1", memory=True)
    stop = service.set_state("web1", "stopped")
    run_operations(controller)
    assert service.store.get_operation(stop["id"])["status"] == "succeeded"
    op = service.revert_snapshot("web1", "m1")
    assert service.store.get_vm_by_id(row["id"])["desired_state"] == "running"
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert domain(cloud, row).state == "running" and domain(cloud, row).reason == "from snapshot"


def test_a_revert_deletes_the_checkpoints_first(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "s1")
    domain(cloud, row).checkpoints = ["cp1", "cp2"]  # a backup chain's dirty bitmaps
    op = service.revert_snapshot("web1", "s1")
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert domain(cloud, row).checkpoints == []
    calls = cloud.host(HOSTS[row["host"]]).calls
    assert calls.index(f"checkpoint-delete cp1 {row['id']}") > calls.index(f"checkpoint-delete cp2 {row['id']}")
    events = [e["message"] for e in service.list_events("web1") if e["kind"] == "checkpoints-deleted"]
    assert events and "next backup is a full one" in events[0]


def test_deleting_a_snapshot_reparents_its_children_and_moves_current(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    for name in ("s1", "s2", "s3"):
        snapshot(service, controller, name)
    op = service.delete_snapshot("web1", "s2")
    assert service.get_snapshot("web1", "s2")["state"] == "deleting"
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert [s["name"] for s in service.list_snapshots("web1")] == ["s1", "s3"]
    child = service.store.get_snapshot(row["id"], "s3")
    assert child["parent"] == "s1" and "<parent><name>s1</name>" in child["xml"]
    assert list(domain(cloud, row).snapshots) == ["s1", "s3"]
    service.delete_snapshot("web1", "s3")
    run_operations(controller)
    assert service.get_snapshot("web1", "s1")["current"]
    assert domain(cloud, row).current_snapshot == "s1"


def test_a_host_that_lost_the_metadata_gets_it_back_when_the_domain_is_defined(
        service, controller, cloud, clock):
    row = make_vm(service, controller, clock, state="stopped")
    snapshot(service, controller, "s1")
    snapshot(service, controller, "s2")
    cloud.host(HOSTS[row["host"]]).domains.pop(row["id"])  # /var/lib/libvirt lost
    service.set_state("web1", "running")
    run_operations(controller)
    restored = domain(cloud, row)
    assert restored.state == "running"
    assert list(restored.snapshots) == ["s1", "s2"] and restored.current_snapshot == "s2"


def test_a_delete_redefines_lost_metadata_before_deleting_the_data(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "s1")
    domain(cloud, row).snapshots.clear()  # libvirt forgot it; the qcow2 still holds it
    calls = cloud.host(HOSTS[row["host"]]).calls
    service.delete_snapshot("web1", "s1")
    run_operations(controller)
    assert f"snapshot-redefine s1 {row['id']}" in calls
    assert f"snapshot-delete-data s1 {row['id']}" in calls
    assert service.list_snapshots("web1") == []


def test_a_live_migration_carries_the_snapshot_metadata(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "s1")
    snapshot(service, controller, "s2")
    home, other = row["host"], next(h for h in HOSTS if h != row["host"])
    op = service.migrate_vm("web1", other)
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    moved = cloud.host(HOSTS[other]).domains[row["id"]]
    assert list(moved.snapshots) == ["s1", "s2"] and moved.current_snapshot == "s2"
    assert row["id"] not in cloud.host(HOSTS[home]).domains


def test_a_failed_migration_gives_the_source_its_metadata_back(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "s1")
    other = next(h for h in HOSTS if h != row["host"])

    def target_refuses():
        raise DriverError("unable to connect to the target", "unable to connect to the target")

    cloud.on_migration_started = target_refuses
    op = service.migrate_vm("web1", other)
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "failed"
    assert list(domain(cloud, row).snapshots) == ["s1"]


def test_a_copying_migration_of_a_vm_with_snapshots_is_refused_with_the_reason(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "s1")
    other = next(h for h in HOSTS if h != row["host"])
    service.store.update_host(other, storage="local-disks")
    with pytest.raises(Conflict, match="does not carry the snapshots") as refused:
        service.migrate_vm("web1", other)
    assert refused.value.field == "host"
    assert service.store.busy_operation(row["id"]) is None  # nothing changed


def test_the_controller_refuses_a_copying_migration_queued_before_the_snapshot(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    other = next(h for h in HOSTS if h != row["host"])
    snapshot(service, controller, "s1")
    service.store.update_host(other, storage="local-disks")
    with service.store.transaction():  # as a drain would queue it
        op = service.store.add_operation("op-m", row, "migrate", {"target": other, "source": row["host"]})
    run_operations(controller)
    done = service.store.get_operation(op["id"])
    assert done["status"] == "failed" and "does not carry the snapshots" in done["error"]
    assert list(domain(cloud, row).snapshots) == ["s1"]


def test_an_offline_move_keeps_the_snapshots(service, controller, cloud, clock):
    row = make_vm(service, controller, clock, state="stopped")
    snapshot(service, controller, "s1")
    home, other = row["host"], next(h for h in HOSTS if h != row["host"])
    op = service.migrate_vm("web1", other)
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded", \
        service.store.get_operation(op["id"])["error"]
    assert list(cloud.host(HOSTS[other]).domains[row["id"]].snapshots) == ["s1"]
    assert row["id"] not in cloud.host(HOSTS[home]).domains  # undefined there (its metadata first)


def test_deleting_the_vm_deletes_its_snapshot_rows(service, controller, cloud, clock):
    row = make_vm(service, controller, clock, state="stopped")
    snapshot(service, controller, "s1")
    service.delete_vm("web1")
    run_operations(controller)
    assert service.store.get_vm_by_id(row["id"]) is None
    assert service.store.list_snapshots(row["id"]) == []


def test_a_locked_vm_takes_snapshots_but_refuses_revert_and_delete(service, controller, cloud, clock):
    make_vm(service, controller, clock)
    service.store.insert_user({"name": "alice", "role": "operator", "projects": ["default"],
                               "created": 0.0, "disabled": 0})
    service.store.insert_user({"name": "bob", "role": "operator", "projects": ["default"],
                               "created": 0.0, "disabled": 0})
    alice = Principal(user="alice", role=Role.OPERATOR)
    bob = Principal(user="bob", role=Role.OPERATOR)
    with acting_as(alice):
        service.set_lock("web1", "exam running")
    with acting_as(bob):
        service.create_snapshot("web1", {"name": "s1"})
        run_operations(controller)
        for attempt in (lambda: service.revert_snapshot("web1", "s1"),
                        lambda: service.delete_snapshot("web1", "s1")):
            with pytest.raises(Conflict, match="locked by alice"):
                attempt()
    assert service.get_snapshot("web1", "s1")["state"] == "ready"


def test_a_failed_snapshot_is_deleted_without_touching_libvirt(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    op = service.create_snapshot("web1", {"name": "s1"})
    service.cancel_operation(op["id"])
    calls = cloud.host(HOSTS[row["host"]]).calls
    calls.clear()
    service.delete_snapshot("web1", "s1")
    run_operations(controller)
    assert service.list_snapshots("web1") == []
    assert not [c for c in calls if c.startswith("snapshot-delete")]


def test_a_drain_keeps_a_vm_with_snapshots_on_hosts_that_share_its_storage(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "s1")
    other = next(h for h in HOSTS if h != row["host"])
    service.store.update_host(other, storage="local-disks")  # a migration there would copy the disks
    report = service.set_host_state(row["host"], "maintenance")["drain"]
    assert report["migrating"] == []
    assert [b["vm"] for b in report["blocked"]] == ["web1"]
    assert "StorageFilter" in report["blocked"][0]["reason"]
    service.store.update_host(other, storage=service.store.get_host(row["host"])["storage"])
    service.set_host_state(row["host"], "enabled")
    report = service.set_host_state(row["host"], "maintenance")["drain"]
    assert [m["target"] for m in report["migrating"]] == [other]


def test_a_memory_revert_to_other_hardware_asks_for_a_restart(service, controller, cloud, clock):
    row = make_vm(service, controller, clock)
    snapshot(service, controller, "one-cpu", memory=True)
    service.update_vm("web1", {"cpus": 2})
    service.set_state("web1", "reboot")
    run_operations(controller)
    assert service.store.get_vm_by_id(row["id"])["restart_required"] is False  # runs with 2 now
    service.revert_snapshot("web1", "one-cpu")
    run_operations(controller)
    assert service.store.get_vm_by_id(row["id"])["restart_required"] is True  # 1 vCPU until a restart


def test_hardware_differs_reads_what_the_guest_had_not_its_room_to_grow():
    """A memory snapshot's domain XML with hotplug room (issue 14): <vcpu current>
    below its maximum, <memory> counting the virtio-mem area. What the guest had is
    <vcpu current> and <currentMemory>; comparing the maxima made every memory
    revert of a VM with room to grow say RestartRequired."""
    from appliance.controller.snapshots import hardware_differs

    xml = ("<domainsnapshot><domain><vcpu current='1'>2</vcpu>"
           "<memory unit='KiB'>524288</memory><currentMemory unit='KiB'>131072</currentMemory>"
           "<devices><disk device='disk'/></devices></domain></domainsnapshot>")
    spec = {"cpus": 1, "memory": 128, "disks": []}
    assert not hardware_differs(xml, spec)
    assert hardware_differs(xml, {**spec, "cpus": 2})
    assert hardware_differs(xml, {**spec, "memory": 256})
    old = ("<domainsnapshot><domain><vcpu>1</vcpu><memory unit='KiB'>131072</memory>"
           "<devices><disk device='disk'/></devices></domain></domainsnapshot>")
    assert not hardware_differs(old, spec)  # a domain without room: as before

"""Suspend (managed save), shelve/unshelve and rebuild on the fake hypervisor:
the states observed, the claims released and taken again, the refusals, and
what the run strategy leaves alone."""
from __future__ import annotations

import pycdlib
import pytest
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle

from appliance import placement
from appliance.errors import Conflict, Invalid, NotFound

HOSTS = {"local": URI_A, "b": URI_B}


def running_vm(service, controller, clock, **spec):
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always", **spec})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    assert row["observed_state"] == "running"
    return row


def dom(cloud, row, host=None):
    return cloud.host(HOSTS[host or row["host"]]).domains[row["id"]]


def claims(service, host):
    return placement.allocations(service.store).get(host, [0, 0, 0])


def events(service, kind):
    return [e["message"] for e in service.list_events("web1") if e["kind"] == kind]


def current(service, row):
    return service.store.get_vm_by_id(row["id"])


# -- suspend ----------------------------------------------------------------------------------
def test_suspend_saves_frees_the_claim_and_resume_restores(service, controller, cloud, clock):
    row = running_vm(service, controller, clock)
    assert claims(service, row["host"])[:2] == [1, 128]
    disk = claims(service, row["host"])[2]
    op = service.set_state("web1", "suspend")
    assert op["kind"] == "suspend"
    settle(controller, clock, passes=2)
    assert current(service, row)["observed_state"] == "suspended"
    assert dom(cloud, row).saved and dom(cloud, row).state == "stopped"  # its QEMU is gone
    assert claims(service, row["host"])[:2] == [0, 0]  # RAM released, as a stopped VM's
    assert claims(service, row["host"])[2] == disk + (128 << 20)  # the save file's room
    assert events(service, "suspended")
    calls = cloud.host(HOSTS[row["host"]]).calls
    saved_at = len(calls)
    settle(controller, clock, passes=5, step=400)  # run strategy Always: no restart
    assert current(service, row)["observed_state"] == "suspended"
    assert f"start {row['id']}" not in calls[saved_at:]
    assert service.set_state("web1", "suspended") is None  # there already
    op = service.set_state("web1", "running")
    assert op["kind"] == "start"
    assert claims(service, row["host"])[:2] == [1, 128]  # claimed again at resume
    settle(controller, clock, passes=1)
    assert claims(service, row["host"]) == [1, 128, disk]
    assert (dom(cloud, row).state, dom(cloud, row).reason) == ("running", "restored")
    assert not dom(cloud, row).saved
    assert events(service, "resumed")


def test_only_a_running_or_paused_vm_suspends(service, controller, clock):
    running_vm(service, controller, clock)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    with pytest.raises(Conflict, match="no memory to save"):
        service.set_state("web1", "suspended")


def test_a_resume_that_no_longer_fits_on_its_host_is_refused(service, controller, clock):
    row = running_vm(service, controller, clock)
    service.set_state("web1", "suspended")
    settle(controller, clock, passes=1)
    service.store.update_host(row["host"], reserved_memory_mib=10**9)
    with pytest.raises(Conflict, match="its memory is saved on host .* no longer fits"):
        service.set_state("web1", "running")
    assert current(service, row)["desired_state"] == "suspended"


def test_a_stop_discards_the_save_and_the_next_start_boots(service, controller, cloud, clock):
    row = running_vm(service, controller, clock)
    service.set_state("web1", "suspended")
    settle(controller, clock, passes=1)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    assert current(service, row)["observed_state"] == "stopped"
    assert not dom(cloud, row).saved
    assert events(service, "save-discarded")
    service.set_state("web1", "running")
    settle(controller, clock, passes=1)
    assert dom(cloud, row).reason == "booted"


def test_a_suspended_vm_refuses_what_would_not_match_its_saved_memory(
        service, controller, clock):
    row = running_vm(service, controller, clock)
    service.set_state("web1", "suspended")
    settle(controller, clock, passes=1)
    with pytest.raises(Conflict, match="suspended") as refused:
        service.update_vm("web1", {"cpus": 2})
    assert refused.value.field == "cpus"
    service.update_vm("web1", {"labels": {"tier": "web"}})  # not hardware: fine
    settle(controller, clock, passes=1)
    assert current(service, row)["observed_state"] == "suspended"  # the update kept the save
    other = next(h for h in HOSTS if h != row["host"])
    with pytest.raises(Conflict, match="suspended VM's memory is saved"):
        service.migrate_vm("web1", other)
    with pytest.raises(Conflict, match="suspended"):
        service.create_snapshot("web1", {"name": "s1"})
    with pytest.raises(Conflict, match="suspended"):
        service.rebuild_vm("web1")
    with pytest.raises(Conflict, match="cannot be paused"):
        service.set_state("web1", "paused")


def test_a_suspended_vm_deletes_without_force_and_its_save_goes(service, controller, cloud, clock):
    row = running_vm(service, controller, clock)
    service.set_state("web1", "suspended")
    settle(controller, clock, passes=1)
    service.delete_vm("web1")
    settle(controller, clock, passes=1)
    assert not service.store.vm_exists("web1")
    assert cloud.where(row["id"], active_only=False) == []


def test_a_guest_running_while_it_should_be_suspended_is_saved_by_the_controller(
        service, controller, cloud, clock):
    row = running_vm(service, controller, clock)
    service.set_state("web1", "suspended")
    settle(controller, clock, passes=1)
    dom(cloud, row).saved, dom(cloud, row).state = False, "running"  # `virsh start` by someone
    settle(controller, clock, passes=3)
    assert current(service, row)["observed_state"] == "suspended"


# -- shelve and unshelve --------------------------------------------------------------------------
def test_shelve_releases_every_claim_and_unshelve_asks_the_scheduler(
        service, controller, cloud, clock):
    row = running_vm(service, controller, clock)
    home = row["host"]
    other = next(h for h in HOSTS if h != home)
    assert claims(service, home)[2] > 0
    op = service.set_state("web1", "shelve")
    assert op["kind"] == "shelve"
    settle(controller, clock, passes=2)
    shelved = current(service, row)
    assert shelved["observed_state"] == "shelved" and shelved["host"] == home  # disks stay there
    assert row["id"] not in cloud.host(HOSTS[home]).domains  # undefined
    assert claims(service, home) == [0, 0, 0]  # vCPUs, memory and disk released
    settle(controller, clock, passes=5, step=400)  # no restart, no redefinition
    assert current(service, row)["observed_state"] == "shelved"
    with pytest.raises(Conflict, match="shelved VM is off"):
        service.set_state("web1", "stopped")
    with pytest.raises(Conflict, match="shelved VM holds no host"):
        service.migrate_vm("web1", other)
    service.set_host_state(home, "disabled")
    op = service.set_state("web1", "unshelve")
    assert op["kind"] == "unshelve" and op["params"]["target"] == other
    assert claims(service, other)[:2] == [1, 128]  # its operation claims the target
    settle(controller, clock, passes=1)
    back = current(service, row)
    assert (back["observed_state"], back["host"]) == ("running", other)
    assert dom(cloud, row, other).state == "running"
    assert claims(service, home) == [0, 0, 0]
    assert claims(service, other)[:2] == [1, 128]
    assert events(service, "unshelved")


def test_unshelve_copies_the_disks_when_the_target_sees_other_storage(
        service, controller, cloud, clock):
    row = running_vm(service, controller, clock)
    home = row["host"]
    other = next(h for h in HOSTS if h != home)
    service.store.update_host(other, storage="san2")
    service.set_state("web1", "shelved")
    settle(controller, clock, passes=1)
    service.set_host_state(home, "disabled")
    service.set_state("web1", "running")
    settle(controller, clock, passes=1)
    back = current(service, row)
    assert (back["observed_state"], back["host"]) == ("running", other)
    calls = cloud.host(HOSTS[other]).calls
    assert f"upload {row['id']} root.qcow2" in calls
    assert row["id"] not in cloud.host(HOSTS[home]).volumes  # the source's copy dropped
    assert any("disks copied" in m for m in events(service, "migrated"))


def test_an_unshelve_that_fits_nowhere_is_refused_and_it_stays_shelved(
        service, controller, clock):
    row = running_vm(service, controller, clock)
    service.set_state("web1", "shelved")
    settle(controller, clock, passes=1)
    for host in HOSTS:
        service.set_host_state(host, "disabled")
    with pytest.raises(Conflict, match="disabled"):
        service.set_state("web1", "running")
    assert current(service, row)["desired_state"] == "shelved"


def test_a_failed_unshelve_leaves_it_shelved_where_its_disks_are(
        service, controller, cloud, clock):
    row = running_vm(service, controller, clock)
    home = row["host"]
    other = next(h for h in HOSTS if h != home)
    service.store.update_host(other, storage="san2")
    service.set_state("web1", "shelved")
    settle(controller, clock, passes=1)
    service.set_host_state(home, "disabled")
    op = service.set_state("web1", "running")
    cloud.host(HOSTS[home]).volumes.pop(row["id"])  # its disks are gone from the source
    settle(controller, clock, passes=1)
    assert service.store.get_operation(op["id"])["status"] == "failed"
    after = current(service, row)
    assert (after["observed_state"], after["desired_state"], after["host"]) == (
        "shelved", "shelved", home)
    assert events(service, "unshelve-failed")


# -- rebuild --------------------------------------------------------------------------------------
def seed_meta(config, row) -> str:
    iso = pycdlib.PyCdlib()
    iso.open(str(config.vm_dir(row["id"]) / "cidata.iso"))
    try:
        import io
        out = io.BytesIO()
        iso.get_file_from_iso_fp(out, joliet_path="/meta-data")
        return out.getvalue().decode()
    finally:
        iso.close()


def test_rebuild_makes_the_root_disk_again_with_a_new_instance_id(
        service, controller, cloud, clock, config, tmp_path):
    from tests.unit.appliance.controller.controller_harness import make_disk_image
    image = tmp_path / "other.img"
    make_disk_image(image)
    service.import_image_file("other", image)
    row = running_vm(service, controller, clock, disks=[{"name": "data", "size": 16}])
    assert f"instance-id: {row['id']}" in seed_meta(config, row)
    with pytest.raises(Invalid, match="cannot change"):
        service.update_vm("web1", {"image": "other"})  # PATCH never changes it
    op = service.rebuild_vm("web1", {"image": "other"})
    assert op["kind"] == "rebuild"
    settle(controller, clock, passes=1)
    after = current(service, row)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert after["spec"]["image"] == "other" and after["mac"] == row["mac"]
    assert after["instance_id"] and after["instance_id"] != row["id"]
    assert f"instance-id: {after['instance_id']}" in seed_meta(config, after)
    calls = cloud.host(HOSTS[row["host"]]).calls
    rebuilt = calls[calls.index(f"delete-volumes {row['id']} root.qcow2"):]
    assert f"shutdown {row['id']}" in calls and f"start {row['id']}" in rebuilt
    assert "disk-data.qcow2" in cloud.host(HOSTS[row["host"]]).volumes[row["id"]]
    assert after["observed_state"] == "running"
    assert events(service, "rebuilt")


def test_rebuild_refuses_while_the_vm_has_snapshots_and_an_unknown_image(
        service, controller, clock):
    running_vm(service, controller, clock)
    service.create_snapshot("web1", {"name": "s1"})
    settle(controller, clock, passes=1)
    with pytest.raises(Conflict, match="snapshot"):
        service.rebuild_vm("web1")
    with pytest.raises(Invalid, match="unknown field"):
        service.rebuild_vm("web1", {"flavor": "x"})


@pytest.mark.parametrize("body", [{"image": 5}, {"image": "x" * 300}, {"image": " "}, ["demo"]])
def test_a_rebuild_with_a_bad_image_is_refused_and_changes_nothing(
        service, controller, clock, body):
    row = running_vm(service, controller, clock)
    with pytest.raises(Invalid):
        service.rebuild_vm("web1", body)
    with pytest.raises(NotFound):
        service.rebuild_vm("web1", {"image": "../../etc/passwd"})
    after = current(service, row)
    assert (after["spec"], after["instance_id"], after["generation"]) == (
        row["spec"], row["instance_id"], row["generation"])
    assert not service.store.open_operation(row["id"], "rebuild")


def test_the_rebuild_file_shows_the_image_and_a_write_rebuilds(service, controller, clock):
    from appliance.files import VM_FILES

    running_vm(service, controller, clock)
    entry = VM_FILES.file("rebuild")
    assert entry.read(service, "web1") == "demo\n"
    written = entry.write(service, "web1", "\n", None)  # an empty line: its own image
    assert [op["kind"] for op in written.operations] == ["rebuild"]
    assert written.operations[0]["params"] == {"image": "demo"}
    settle(controller, clock, passes=1)
    assert service.store.get_operation(written.operations[0]["id"])["status"] == "succeeded"

"""A paused VM live-migrated onto a QEMU before 10.0 keeps its disks inactive
until it runs (issue 17, found by the soak): its next migration crashed it and
its snapshots were refused. The migration now resumes and at once pauses it
again on arrival, only where the hypervisor needs it, without a "running"
recorded in between; a guest that cannot be paused again is retried, then
reported."""
from __future__ import annotations

import pytest

from appliance.virt.driver import DriverError
from appliance.virt.fake import FakeGuest
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle

HOSTS = {"local": URI_A, "b": URI_B}
QEMU_7_2 = 7_002_022


def paused_vm(service, controller, cloud, clock, qemu_version: int) -> tuple[dict, str, str]:
    for uri in HOSTS.values():
        cloud.host(uri).qemu_version = qemu_version
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    service.set_state("web1", "paused")
    controller.operations.dispatch()
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    assert row["observed_state"] == "paused"
    return row, row["host"], next(name for name in HOSTS if name != row["host"])


def migrate(service, controller, target: str) -> dict:
    op = service.migrate_vm("web1", target)
    controller.operations.dispatch()  # inline: runs to its end here
    return service.store.get_operation(op["id"])


def events(service, kind: str) -> list[str]:
    return [e["message"] for e in service.list_events("web1") if e["kind"] == kind]


def test_a_paused_vm_migrates_there_and_back_and_takes_a_snapshot_on_old_qemu(
        service, controller, cloud, clock):
    row, home, other = paused_vm(service, controller, cloud, clock, QEMU_7_2)
    before = len(events(service, "state-changed"))
    first = migrate(service, controller, other)
    assert first["status"] == "succeeded", first["error"]
    dom = cloud.host(HOSTS[other]).domains[row["id"]]
    assert (dom.state, dom.disks_inactive) == ("paused", False)
    calls = [c for c in cloud.host(HOSTS[other]).calls if c.endswith(row["id"])]
    assert calls[-2:] == [f"resume {row['id']}", f"suspend {row['id']}"]
    back = migrate(service, controller, home)  # crashed the guest before (QEMU's assertion)
    assert back["status"] == "succeeded", back["error"]
    assert cloud.where(row["id"]) == [HOSTS[home]]
    op = service.create_snapshot("web1", {"name": "s1"})
    controller.operations.dispatch()
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    settle(controller, clock, passes=2)
    after = service.store.get_vm_by_id(row["id"])
    assert (after["host"], after["observed_state"]) == (home, "paused")
    assert cloud.host(HOSTS[home]).domains[row["id"]].state == "paused"
    assert len(events(service, "disks-activated")) == 2
    assert len(events(service, "state-changed")) == before  # never "now running" in between


def test_no_resume_where_qemu_activates_the_disks_itself(service, controller, cloud, clock):
    row, home, other = paused_vm(service, controller, cloud, clock, 10_000_000)
    assert migrate(service, controller, other)["status"] == "succeeded"
    assert migrate(service, controller, home)["status"] == "succeeded"
    assert f"resume {row['id']}" not in cloud.host(HOSTS[home]).calls[-5:]
    assert f"resume {row['id']}" not in cloud.host(HOSTS[other]).calls
    assert not events(service, "disks-activated")
    assert cloud.host(HOSTS[home]).domains[row["id"]].state == "paused"


def test_a_running_vm_is_not_resumed_or_paused(service, controller, cloud, clock):
    for uri in HOSTS.values():
        cloud.host(uri).qemu_version = QEMU_7_2
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    other = next(name for name in HOSTS if name != service.store.get_vm_by_id(vm["id"])["host"])
    assert migrate(service, controller, other)["status"] == "succeeded"
    calls = cloud.host(HOSTS[other]).calls
    assert f"suspend {vm['id']}" not in calls and f"resume {vm['id']}" not in calls
    assert cloud.host(HOSTS[other]).domains[vm["id"]].state == "running"


def test_events_between_resume_and_pause_record_no_running(service, controller, cloud, clock,
                                                           monkeypatch):
    row, _home, other = paused_vm(service, controller, cloud, clock, QEMU_7_2)
    suspend = FakeGuest.suspend

    def observed_first(self):  # libvirt's "resumed" event handled before the pause
        controller.vms.on_events({(other, self.uuid)})
        suspend(self)

    monkeypatch.setattr(FakeGuest, "suspend", observed_first)
    before = len(events(service, "state-changed"))
    assert migrate(service, controller, other)["status"] == "succeeded"
    assert len(events(service, "state-changed")) == before
    assert service.store.get_vm_by_id(row["id"])["observed_state"] == "paused"


@pytest.mark.parametrize("failures, status", [(2, "succeeded"), (99, "failed")])
def test_a_failed_pause_is_retried_then_reported(service, controller, cloud, clock, monkeypatch,
                                                 failures, status):
    row, _home, other = paused_vm(service, controller, cloud, clock, QEMU_7_2)
    suspend = FakeGuest.suspend
    left = [failures]

    def flaky(self):
        if left[0] > 0:
            left[0] -= 1
            raise DriverError("suspend: timed out", "timed out")
        suspend(self)

    monkeypatch.setattr(FakeGuest, "suspend", flaky)
    op = migrate(service, controller, other)
    assert op["status"] == status, op["error"]
    assert service.store.get_vm_by_id(row["id"])["host"] == other  # it did move
    if status == "failed":
        assert "pausing it again failed (timed out)" in op["error"]
        assert "could not be paused again" in events(service, "disks-activated")[0]
        monkeypatch.setattr(FakeGuest, "suspend", suspend)
        settle(controller, clock, passes=2)  # the desired state: the run strategy pauses it
    assert cloud.host(HOSTS[other]).domains[row["id"]].state == "paused"

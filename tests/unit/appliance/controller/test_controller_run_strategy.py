"""Run strategies: a crashed guest under Always is restarted, with a back-off
that doubles while it keeps crashing; Manual leaves it stopped."""
from __future__ import annotations

from tests.unit.appliance.controller.controller_harness import settle


def crash(cloud, row):
    with cloud.lock:
        dom = next(h.domains[row["id"]] for h in cloud.hosts.values() if row["id"] in h.domains)
        dom.state, dom.reason = "stopped", "crashed"


def starts(service):
    return [o for o in service.list_operations(vm="web1") if o["kind"] == "start"]


def test_a_guest_that_keeps_crashing_is_restarted_with_back_off(service, controller, cloud, clock):
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    restarts_at = []
    for _ in range(40):  # 40 resyncs, one a second, the guest crashing again after each start
        crash(cloud, row)
        clock.advance(1.0)
        before = len(starts(service))
        controller.resync()
        controller.operations.dispatch()
        if len(starts(service)) > before:
            restarts_at.append(clock())
    gaps = [round(b - a) for a, b in zip(restarts_at, restarts_at[1:])]
    assert gaps[:3] == [5, 10, 20], gaps  # 5 s, doubling
    assert service.store.get_vm_by_id(row["id"])["desired_state"] == "running"


def test_back_off_is_forgotten_once_the_guest_runs(service, controller, cloud, clock):
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    crash(cloud, row)
    settle(controller, clock, passes=2)  # restarted, and seen running
    assert service.store.get_vm_by_id(row["id"])["observed_state"] == "running"
    crash(cloud, row)
    clock.advance(1.0)
    controller.resync()  # at once: no back-off left from the earlier crash
    assert len(starts(service)) == 2


def test_manual_leaves_a_crashed_guest_stopped(service, controller, cloud, clock):
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Manual", "state": "running"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    crash(cloud, row)
    settle(controller, clock, passes=2)
    after = service.store.get_vm_by_id(row["id"])
    assert after["desired_state"] == "stopped" and after["observed_state"] == "stopped"
    assert not starts(service)

"""A live migration's end as the source's lifecycle events tell it: the source's
domain stops (libvirt's migrated) just as the target's runs. Read on the
source's side of the record, that stop is not the VM's state (CI of stop 28: a
drain right after `echo h3 > vms/db1/host` found db1 "stopped" and refused it)."""
from __future__ import annotations

from appliance.controller import migration as live
from tests.unit.appliance.controller.controller_harness import settle
from tests.unit.appliance.controller.test_controller_migration import run_operations, running_vm


def stopped_events(service, op):
    """What was recorded stopped once the migration was asked (its own events)."""
    events = service.list_events("web1")  # in the order they were recorded
    asked = next(i for i, e in enumerate(events)
                 if e["kind"] == "migration-requested" and e["operation"] == op["id"])
    return [e["message"] for e in events[asked:]
            if e["kind"] == "state-changed" and "stopped" in e["message"]]


def test_a_source_event_handled_as_the_migration_is_recorded_is_the_migrations(
        service, controller, cloud, clock, monkeypatch):
    row, home, other = running_vm(service, controller, clock)
    real = live.record_move

    def event_first(ctx, op, vm, target, guest, message):  # the event thread runs just then
        controller.vms.on_events({(home, row["id"])})
        real(ctx, op, vm, target, guest, message)

    monkeypatch.setattr(live, "record_move", event_first)
    op = service.migrate_vm("web1", other)
    run_operations(controller)
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert not stopped_events(service, op)
    fresh = service.store.get_vm_by_id(row["id"])
    assert (fresh["host"], fresh["observed_state"]) == (other, "running")


def test_a_look_at_the_source_read_before_the_record_is_not_recorded(service, controller, cloud, clock):
    """The event thread read the row (host: the source) and looked the domain up
    there; the migration was recorded, and observed running on the target, before
    it came to record what it saw: a stale look, dropped."""
    row, home, other = running_vm(service, controller, clock)
    op = service.migrate_vm("web1", other)
    run_operations(controller)
    assert service.store.get_vm_by_id(row["id"])["observed_state"] == "running"
    seen_on_source = controller.ctx.links.get(home).lookup(row["id"])  # gone: None
    assert controller.vms.observe(row, seen_on_source) == "running"
    fresh = service.store.get_vm_by_id(row["id"])
    assert (fresh["host"], fresh["observed_state"]) == (other, "running")
    assert not stopped_events(service, op)
    settle(controller, clock, passes=1)  # and the next pass sees it where it is
    assert service.store.get_vm_by_id(row["id"])["observed_state"] == "running"


def test_a_move_recorded_while_libvirt_is_asked_is_not_undone_by_the_look(
        service, controller, cloud, clock, monkeypatch):
    """Review of d8c94dc: the look compared the row's host before asking libvirt, and the
    migration's record takes no lock of the observer's: recorded while libvirt answered (the
    source's domain already gone), the look wrote "stopped" onto the row that now said the
    target. The write is now in one transaction with a last look at the row's host."""
    row, home, other = running_vm(service, controller, clock)
    link = controller.ctx.links.get(home)
    guest = link.lookup(row["id"])
    state = guest.state

    def state_then_moved():
        state()
        service.store.update_vm(row["id"], bump=False, host=other)  # record_move, meanwhile
        return ("stopped", "migrated")

    monkeypatch.setattr(guest, "state", state_then_moved)
    before = len(service.list_events("web1"))
    assert controller.vms.observe(row, guest) == "running"
    fresh = service.store.get_vm_by_id(row["id"])
    assert (fresh["host"], fresh["observed_state"]) == (other, "running")
    assert not [e for e in service.list_events("web1")[before:] if e["kind"] == "state-changed"]

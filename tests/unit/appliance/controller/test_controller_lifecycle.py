"""Lifecycle handlers: a VM deleted while its handler runs fails the operation
with the reason, not a TypeError on the missing row."""
from __future__ import annotations

import pytest
from tests.unit.appliance.controller.controller_harness import settle

from appliance.errors import Failed


def test_a_reboot_whose_vm_is_gone_after_the_stop_fails_with_the_reason(
        service, controller, clock, monkeypatch):
    vm, _op = service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    reboot = controller.operations.registry["reboot"]
    lifecycle = reboot.__self__
    stop = lifecycle.stop

    def stop_then_vanish(op, r):
        stop(op, r)
        service.store.delete_vm(r["id"])  # as if deleted from outside while it stopped

    monkeypatch.setattr(lifecycle, "stop", stop_then_vanish)
    with pytest.raises(Failed, match="the VM no longer exists"):
        reboot({"id": "op-unit", "kind": "reboot", "params": {}}, row)


def test_a_delete_whose_guest_powers_off_under_it_still_deletes(
        service, controller, cloud, clock, monkeypatch):
    """A restarted appliance re-runs a delete its predecessor was killed in: the
    guest it saw running can be off by the time it destroys it (the earlier
    destroy completed in libvirt). That destroy is done, not a failure: before,
    the delete failed with libvirt's "domain is not running" and the VM stayed
    in `deleting` for good (tests/integration/test_restart.py, 1 run in ~5)."""
    from appliance.virt.fake import FakeGuest

    vm, _op = service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    assert cloud.where(vm["id"]) != []
    real_is_active = FakeGuest.is_active

    def active_then_off(self):  # the guest's powering-off lands between the check and the destroy
        seen = real_is_active(self)
        if seen:
            self._set("race", "stopped", "destroyed")
        return seen

    monkeypatch.setattr(FakeGuest, "is_active", active_then_off)
    op = service.delete_vm("web1", force=True)
    settle(controller, clock, passes=3)
    monkeypatch.undo()
    done = service.store.get_operation(op["operation"]["id"] if "operation" in op else op["id"])
    assert done["status"] == "succeeded", done["error"]
    assert not service.store.vm_exists("web1")
    assert cloud.where(vm["id"], active_only=False) == []


def test_a_domain_undefined_between_lookup_and_state_is_observed_gone(
        service, controller, clock, monkeypatch):
    """The loop looks a domain up, then asks its state; a delete in between
    (undefine) made guest.state() raise DomainGone out of the controller loop
    (a logged traceback per pass, found by the README walk of issue 12). It is
    the same as no domain: recorded stopped/undefined, no exception."""
    from appliance.virt.driver import DomainGone

    vm, _op = service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    guest = controller.ctx.links.connected(row["host"]).driver.lookup(vm["id"])
    assert guest is not None

    def gone():
        raise DomainGone("Domain not found", "gone")

    monkeypatch.setattr(guest, "state", gone)
    assert controller.vms.observe(row, guest) == "stopped"
    assert service.store.get_vm_by_id(vm["id"])["observed_reason"] == "undefined"


def test_a_follow_up_runs_after_the_success_and_its_failure_is_only_logged(
        service, controller, clock, caplog):
    """A handler's follow-up (housekeeping) runs once the operation is recorded succeeded,
    with the VM still claimed; if it fails, the operation stays succeeded and the VM is
    released."""
    vm, _op = service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    reboot = controller.operations.registry["reboot"]
    seen = []

    def follow_up():
        newest = service.store.list_operations(vm_name="web1", limit=1)[0]
        seen.append((newest["status"], vm["id"] in controller.ctx.busy))
        raise RuntimeError("housekeeping broke")

    def reboot_then_follow_up(op, row):
        reboot(op, row)
        return follow_up

    controller.operations.registry["reboot"] = reboot_then_follow_up
    op = service.set_state("web1", "reboot")
    controller.operations.dispatch()
    assert seen == [("succeeded", True)]
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    assert vm["id"] not in controller.ctx.busy
    assert "housekeeping broke" in caplog.text


def test_an_event_of_a_vm_deleted_while_it_is_observed_is_no_loop_error(
        service, controller, cloud, clock, monkeypatch):
    """`make soak` (kill-mount and kill-worker, 22 times in 200 kills each): the controller
    loop failed with NotFound "no VM with id ..." (logged as "controller loop", the rest of
    its events dropped, the loop asleep 0.5 s) when a lifecycle event was observed while the
    VM's delete removed its row, between the fresh read and the update of its state."""
    vm, _op = service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    link = controller.ctx.links.get(row["host"])
    guest = link.lookup(vm["id"])
    state = guest.state

    def state_then_vanish():
        seen = state()
        service.store.delete_vm(vm["id"])  # the delete's end, while the event is observed
        return ("stopped", "destroyed") if seen[0] == "running" else ("running", "booted")

    monkeypatch.setattr(guest, "state", state_then_vanish)
    monkeypatch.setattr(link, "lookup", lambda vm_id: guest)
    assert controller.vms.observe(row, guest) == "deleted"
    assert service.store.get_vm_by_id(vm["id"]) is None

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

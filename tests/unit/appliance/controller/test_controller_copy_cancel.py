"""Cancelling a clone or a restore into a new VM (the new VM's CREATE whose
params carry a "source"): pending or while it copies. The copy stops (qemu-img
killed, the backup job aborted), its partial files go, the operation ends
cancelled, the source is free again, and the new VM is deleted (record,
folder, address): no half VM is left. The hosts are in memory (FakeDriver),
the copies are made by the real qemu-img."""
from __future__ import annotations

import subprocess

import pytest
from tests.unit.appliance.controller.controller_harness import settle
from tests.unit.appliance.controller.test_controller_clones import (
    root_of,
    shared,  # noqa: F401 - the fixture
    stopped_vm,
    write_pattern,
)
from tests.unit.appliance.controller.test_controller_restores import (
    INCREMENTAL,
    backed_up_vm,
    target,  # noqa: F401 - the fixture
)

from appliance.errors import Conflict, Failed
from appliance.pinned_chain import PinnedChain
from appliance.virt import disk_copy, images


def assert_dropped(service, controller, op, vm_id, source_id):
    """The create ended cancelled and the new VM was deleted after it, wholly."""
    done = service.store.get_operation(op["id"])
    assert done["status"] == "cancelled", done["error"]
    assert done["error"] in ("cancelled", "cancelled by request")
    assert service.store.get_vm_by_id(vm_id) is None
    assert not controller.ctx.config.vm_dir(vm_id).exists()
    assert source_id not in controller.ctx.busy
    kinds = [(o["kind"], o["status"]) for o in service.store.list_operations(limit=20)
             if o["vm_id"] == vm_id]
    assert ("delete", "succeeded") in kinds


def test_a_clone_cancelled_while_it_copies_leaves_no_vm_behind(shared, controller, clock,
                                                                monkeypatch):
    source = stopped_vm(shared, controller, clock, disks=[{"name": "data", "size": "8M"}])
    write_pattern(root_of(controller, source["id"]), 0xAB, 0, 65536)
    real_convert = disk_copy.convert
    copies = []

    def convert(src, dest, **kwargs):  # the cancel arrives while qemu-img copies
        if not copies:
            shared.cancel_operation(op["id"])
            assert shared.store.get_operation(op["id"])["status"] == "running"
        copies.append(dest)
        real_convert(src, dest, **kwargs)

    monkeypatch.setattr(disk_copy, "convert", convert)
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    settle(controller, clock, passes=3)
    assert len(copies) == 1  # the data disk was not started
    assert not copies[0].exists() and not copies[0].with_name(f".{copies[0].name}.copy").exists()
    assert_dropped(shared, controller, op, clone["id"], source["id"])
    assert not shared.store.vm_exists("web2")
    events = [e["message"] for e in shared.list_events("web1")]
    assert "cloned into web2" in events
    assert images.qcow2_backing(root_of(controller, source["id"]))[0] is not None  # untouched
    # the name is free again, and a clone made after it works
    again, op2 = shared.clone_vm("web1", {"name": "web2"})
    monkeypatch.setattr(disk_copy, "convert", real_convert)
    settle(controller, clock, passes=2)
    assert shared.store.get_operation(op2["id"])["status"] == "succeeded"


def test_a_pending_clone_cancelled_copies_nothing_and_is_deleted(shared, controller, clock,
                                                                 monkeypatch):
    source = stopped_vm(shared, controller, clock)

    def no_copy(*args, **kwargs):
        raise AssertionError("copied after the cancel")

    monkeypatch.setattr(disk_copy, "convert", no_copy)
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    cancelled = shared.cancel_operation(op["id"])
    assert cancelled["status"] == "cancelled"
    assert shared.store.get_vm_by_id(clone["id"])["desired_state"] == "deleted"
    settle(controller, clock, passes=2)
    assert_dropped(shared, controller, op, clone["id"], source["id"])


def test_a_live_clone_cancelled_aborts_its_backup_job(shared, controller, cloud, clock,
                                                      monkeypatch):
    from appliance.virt.fake import FakeGuest

    source = stopped_vm(shared, controller, clock)
    shared.set_state("web1", "running")
    settle(controller, clock, passes=2)
    cloud.hold_backups = True  # the job runs until it is aborted
    aborted = []
    real_abort = FakeGuest.abort_job

    def abort_job(self):
        aborted.append(self.uuid)
        real_abort(self)

    monkeypatch.setattr(FakeGuest, "abort_job", abort_job)
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    polls = []

    def cancel_once():  # the controller sleeps between its polls of the job
        polls.append(1)
        if len(polls) == 2:
            shared.cancel_operation(op["id"])
        if len(polls) == 50:  # never aborted: the job ends, the test fails (not hangs)
            cloud.hold_backups = False

    clock.on_sleep.append(cancel_once)
    settle(controller, clock, passes=3)
    clock.on_sleep.remove(cancel_once)
    assert aborted == [source["id"]]
    assert_dropped(shared, controller, op, clone["id"], source["id"])
    assert shared.store.get_vm_by_id(source["id"])["observed_state"] == "running"


def test_a_restore_into_a_new_vm_cancelled_while_it_flattens(shared, controller, clock, target,
                                                              monkeypatch):
    source = backed_up_vm(shared, controller, clock, target)
    real_flatten = PinnedChain.flatten
    partial = []

    def flatten(chain, disk, dest, progress=None, cancelled=None):
        shared.cancel_operation(op["id"])
        partial.append(dest)
        return real_flatten(chain, disk, dest, progress, cancelled)

    monkeypatch.setattr(PinnedChain, "flatten", flatten)
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1-restored"})
    settle(controller, clock, passes=3)
    assert len(partial) == 1 and not partial[0].exists()
    assert_dropped(shared, controller, op, vm["id"], source["id"])
    assert shared.store.get_backup(INCREMENTAL)["status"] == "good"  # the backup is untouched


def test_a_copy_that_is_done_or_a_plain_create_is_not_cancellable(shared, controller, clock):
    stopped_vm(shared, controller, clock)
    _vm, plain = shared.create_vm({"name": "web3", "state": "stopped"})
    with pytest.raises(Conflict, match="create cannot be cancelled"):
        shared.cancel_operation(plain["id"])
    _clone, op = shared.clone_vm("web1", {"name": "web2"})
    shared.store.update_operation(op["id"], status="running",
                                  params={**op["params"], "filled": True})
    with pytest.raises(Conflict, match="copy is done") as refused:
        shared.cancel_operation(op["id"])
    assert refused.value.field == "id"


def test_convert_stops_when_cancelled_and_leaves_no_partial_file(tmp_path):
    source, dest = tmp_path / "big.qcow2", tmp_path / "copy.qcow2"
    images.create_blank(source, 64)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", "write -P 0x5 0 48M", str(source)],
                   check=True, capture_output=True)
    with pytest.raises(Failed, match="^cancelled$"):
        disk_copy.convert(source, dest, cancelled=lambda: True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.qcow2"]

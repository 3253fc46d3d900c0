"""The in-place restore handler: a stopped VM's disks replaced by a verified
chain, flattened, all or nothing; refused for a running VM, a VM with
snapshots and a broken chain, with the reason, its disks untouched."""
from __future__ import annotations

import itertools
import subprocess

import pytest

from appliance import backup_chain
from appliance.virt import images
from tests.unit.appliance.controller.backup_harness import back_up, events, running_web1
from tests.unit.appliance.controller.controller_harness import settle

MIB = 1 << 20
_op_ids = itertools.count(1)


def qemu_io(path, command: str) -> None:
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)], check=True,
                   capture_output=True)


@pytest.fixture
def chain(service, controller, clock, target):
    """web1 (a 32 MiB data disk) backed up full then incremental, each backup's
    data file given a pattern of its own (the fake's job writes empty disks);
    then stopped."""
    vm = running_web1(service, controller, clock, data_mib=32)
    backups = []
    for pattern in (1, 2):
        backup = back_up(service, controller)[1]
        qemu_io(backup_chain.chain_file(target, vm["id"], backup["id"], "data"),
                f"write -P {pattern} {pattern * MIB} 1M")
        backups.append(backup)
        clock.advance(60)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    return vm, backups


def restore(service, controller, vm, backup_id):
    op = service.store.add_operation(f"restore-{next(_op_ids)}", service.store.get_vm_by_id(vm["id"]), "restore",
                                     {"backup": backup_id})
    controller.operations.dispatch()
    return service.store.get_operation(op["id"])


def test_the_chain_replaces_the_disks_flattened(service, controller, config, chain):
    vm, (full, inc) = chain
    data = config.vm_dir(vm["id"]) / "disk-data.qcow2"
    op = restore(service, controller, vm, inc["id"])
    assert op["status"] == "succeeded", op["error"]
    checked = images.check(data)  # standalone: no backing file
    assert checked["format"] == "qcow2"
    assert checked["virtual_size"] == 32 * MIB  # grown back to the spec's size
    qemu_io(data, f"read -P 1 {MIB} 1M")
    qemu_io(data, f"read -P 2 {2 * MIB} 1M")
    assert images.qcow2_backing(config.vm_dir(vm["id"]) / "root.qcow2") == (None, None)
    # the fake copies each disk at its live size, as libvirt does: root the image's (1 MiB)
    assert op["bytes_total"] == (1 + 32) * MIB and op["bytes_done"] == op["bytes_total"]
    assert not list(config.vm_dir(vm["id"]).glob(".*.restore"))
    assert f"from backup {inc['id']}" in events(service, "restored")[0]
    # an older point of the chain
    assert restore(service, controller, vm, full["id"])["status"] == "succeeded"
    qemu_io(data, f"read -P 0 {2 * MIB} 1M")


def test_a_running_vm_is_refused(service, controller, clock, chain):
    vm, (_full, inc) = chain
    service.set_state("web1", "running")
    settle(controller, clock, passes=1)
    op = restore(service, controller, vm, inc["id"])
    assert op["status"] == "failed" and "stop it" in op["error"]


def test_a_vm_with_snapshots_is_refused(service, controller, store, chain):
    vm, (_full, inc) = chain
    store.db.table("snapshots").insert({"id": "s1", "vm_id": vm["id"], "name": "before",
                                        "state": "ready", "created": 1.0})
    op = restore(service, controller, vm, inc["id"])
    assert op["status"] == "failed" and "snapshot(s)" in op["error"]


def test_a_vm_with_snapshots_is_refused_at_the_request_and_nothing_is_queued(
        service, store, chain):
    from appliance.errors import Conflict

    vm, (_full, inc) = chain
    store.db.table("snapshots").insert({"id": "s1", "vm_id": vm["id"], "name": "before",
                                        "state": "ready", "created": 1.0})
    before = store.operations_of_vm(vm["id"])
    with pytest.raises(Conflict, match=r"1 snapshot\(s\) \(before\).*delete them first") as no:
        service.restore_backup(inc["id"], {})
    assert no.value.field == "snapshots"
    assert store.operations_of_vm(vm["id"]) == before


def test_a_broken_chain_is_refused_and_the_disks_stay(service, controller, config, target, chain):
    vm, (full, inc) = chain
    data = config.vm_dir(vm["id"]) / "disk-data.qcow2"
    before = data.read_bytes()
    (backup_chain.backup_folder(target, vm["id"], full["id"]) / "manifest.json").unlink()
    op = restore(service, controller, vm, inc["id"])
    assert op["status"] == "failed"
    assert op["error"] == f"the backup chain is broken: {full['id']}: missing (or its manifest.json is)"
    assert data.read_bytes() == before
    assert not list(config.vm_dir(vm["id"]).glob(".*.restore"))


def test_a_cancelled_restore_leaves_the_disks_untouched(service, controller, config, chain):
    vm, (_full, inc) = chain
    data = config.vm_dir(vm["id"]) / "disk-data.qcow2"
    before = data.read_bytes()
    op = service.store.add_operation(f"restore-{next(_op_ids)}",
                                     service.store.get_vm_by_id(vm["id"]), "restore",
                                     {"backup": inc["id"], "cancel": True})
    controller.operations.dispatch()
    op = service.store.get_operation(op["id"])
    assert op["status"] == "cancelled" and op["error"] == "cancelled"
    assert data.read_bytes() == before
    assert not list(config.vm_dir(vm["id"]).glob(".*.restore"))


def test_a_file_swapped_in_the_target_after_the_check_is_not_what_qemu_reads(
        service, controller, config, chain, target, tmp_path, monkeypatch):
    """The race an NFS writer of a target can run: while the chain is checked
    (qemu-img check takes minutes on a real chain), the incremental's file is
    replaced by one whose backing file is a host file (another VM's disk), and
    then by a symlink to it. The restore must read the files it checked: the
    secret's data never reaches the restored disk."""
    vm, (_full, inc) = chain
    secret = tmp_path / "other-vm.raw"
    secret.write_bytes(b"\x5a" * (4 * MIB))
    planted = tmp_path / "planted.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-u", "-b", str(secret),
                    "-F", "raw", str(planted), "32M"], check=True)
    top = backup_chain.chain_file(target, vm["id"], inc["id"], "data")
    real_run, checks = subprocess.run, []

    def run_and_swap(args, *rest, **kwargs):
        done = real_run(args, *rest, **kwargs)
        if args[:2] == ["qemu-img", "check"]:
            checks.append(args)
            if len(checks) == 4:  # the last file of the chain checked: swap, then link
                top.unlink()
                top.symlink_to(planted)
        return done

    monkeypatch.setattr(subprocess, "run", run_and_swap)
    op = restore(service, controller, vm, inc["id"])
    monkeypatch.setattr(subprocess, "run", real_run)
    assert len(checks) == 4 and top.is_symlink()
    assert op["status"] == "succeeded", op["error"]
    data = config.vm_dir(vm["id"]) / "disk-data.qcow2"
    qemu_io(data, "read -P 0 0 1M")  # not the secret's 0x5a
    qemu_io(data, f"read -P 2 {2 * MIB} 1M")  # the checked incremental's own data


def test_a_disk_larger_in_the_backup_than_its_spec_is_refused_in_place(
        service, controller, config, chain, target):
    """The same grown qcow2 restored in place: refused, the VM's disks untouched."""
    vm, (_full, inc) = chain
    top = backup_chain.chain_file(target, vm["id"], inc["id"], "data")
    subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", str(top), "16G"], check=True)
    data = config.vm_dir(vm["id"]) / "disk-data.qcow2"
    op = restore(service, controller, vm, inc["id"])
    assert op["status"] == "failed" and "larger than" in op["error"], op["error"]
    assert images.check(data)["virtual_size"] == 32 * MIB
    assert not list(config.vm_dir(vm["id"]).glob(".*.restore"))

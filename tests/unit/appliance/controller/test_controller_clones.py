"""Clones (service/restores.py, controller/sources.py): a new VM whose disks are
full standalone copies of its source's, made by the create handler before the
domain is defined. The hosts are in memory (FakeDriver); the disk files are
real qcow2 files made and read by the real qemu-img (a few MiB, milliseconds)."""
from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from tests.unit.appliance.controller.controller_harness import settle

from appliance.errors import Conflict, Invalid
from appliance.virt import images


@pytest.fixture
def shared(service, controller, clock):
    """Both hosts see the appliance's folders: the VM files are real files here."""
    for host in ("local", "b"):
        service.store.update_host(host, storage="shared")
    return service


def qemu_io(path: Path, command: str, fmt: str = "qcow2") -> str:
    out = subprocess.run(["qemu-io", "-f", fmt, "-c", command, str(path)],
                         capture_output=True, text=True, check=True)
    return out.stdout


def write_pattern(path: Path, pattern: int, offset: int, length: int) -> None:
    qemu_io(path, f"write -P {pattern} {offset} {length}")


def reads_pattern(path: Path, pattern: int, offset: int, length: int) -> bool:
    out = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P {pattern} {offset} {length}",
                          str(path)], capture_output=True, text=True)
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


def stopped_vm(service, controller, clock, name="web1", **spec):
    vm, _op = service.create_vm({"name": name, "state": "stopped", **spec})
    settle(controller, clock, passes=1)
    return service.store.get_vm_by_id(vm["id"])


def root_of(controller, vm_id) -> Path:
    return controller.ctx.config.vm_dir(vm_id) / "root.qcow2"


def op_of(service, op):
    return service.store.get_operation(op["id"])


def backing(path: Path):
    return images.qcow2_backing(path)[0]


def test_a_clone_of_a_stopped_vm_is_a_full_standalone_copy_with_a_new_identity(
        shared, controller, clock):
    source = stopped_vm(shared, controller, clock, disks=[{"name": "data", "size": "8M"}])
    write_pattern(root_of(controller, source["id"]), 0xAB, 0, 65536)
    data = controller.ctx.config.vm_dir(source["id"]) / "disk-data.qcow2"
    write_pattern(data, 0xCD, 4 << 20, 1 << 20)
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    settle(controller, clock, passes=2)
    done = op_of(shared, op)
    assert done["status"] == "succeeded", done["error"]
    assert done["params"]["source"] == {"clone": source["id"], "snapshot": None}
    new = shared.store.get_vm_by_id(clone["id"])
    assert new["id"] != source["id"] and new["mac"] != source["mac"]
    root = root_of(controller, new["id"])
    assert backing(root) is None  # it does not depend on the base image
    assert reads_pattern(root, 0xAB, 0, 65536)
    new_data = controller.ctx.config.vm_dir(new["id"]) / "disk-data.qcow2"
    assert backing(new_data) is None and reads_pattern(new_data, 0xCD, 4 << 20, 1 << 20)
    assert done["bytes_total"] > 0 and done["bytes_done"] == done["bytes_total"]
    seed = controller.ctx.config.vm_dir(new["id"]) / "cidata.iso"
    assert new["id"].encode() in seed.read_bytes()  # its own cloud-init instance id
    events = [e["message"] for e in shared.list_events("web1")]
    assert "cloned into web2" in events
    assert "VM created as a clone of web1, desired state stopped" in [
        e["message"] for e in shared.list_events("web2")]


def test_a_clone_never_takes_the_source_fixed_ip_or_its_host_ports(shared, controller, clock):
    stopped_vm(shared, controller, clock, network={
        "type": "user", "port_forwards": [{"host_port": 18022, "guest_port": 22}]})
    clone, _op = shared.clone_vm("web1", {"name": "web2"})
    assert clone["spec"]["network"].get("port_forwards", []) == []


def test_a_clone_from_a_snapshot_copies_what_the_snapshot_holds(
        shared, controller, clock, monkeypatch):
    source = stopped_vm(shared, controller, clock)
    root = root_of(controller, source["id"])
    write_pattern(root, 0x11, 0, 65536)
    subprocess.run(["qemu-img", "snapshot", "--image-opts", "-c", "before",
                    f"driver=qcow2,file.filename={root}"], check=True)
    write_pattern(root, 0x22, 0, 65536)  # after the snapshot
    monkeypatch.setattr(shared, "get_snapshot", lambda vm, name: {"name": name, "state": "ready"},
                        raising=False)  # part A's; the snapshot is in the file itself here
    clone, op = shared.clone_vm("web1", {"name": "web2", "from_snapshot": "before"})
    settle(controller, clock, passes=2)
    assert op_of(shared, op)["status"] == "succeeded", op_of(shared, op)["error"]
    copy = root_of(controller, clone["id"])
    assert reads_pattern(copy, 0x11, 0, 65536) and backing(copy) is None
    assert "snapshots" not in images.info(copy, "qcow2")  # a clone carries none of its source's
    assert "snapshots" in images.info(root, "qcow2")


def test_the_copy_holds_the_source_so_its_operations_wait(shared, controller, clock, monkeypatch):
    from appliance.virt import disk_copy

    source = stopped_vm(shared, controller, clock)
    seen = []
    real_convert = disk_copy.convert

    def convert(*args, **kwargs):
        seen.append(source["id"] in controller.ctx.busy)
        shared.set_state("web1", "running")  # asked while the copy runs
        controller.operations.dispatch()  # the loop passes: the source is busy, its start waits
        seen.append(shared.store.get_vm_by_id(source["id"])["observed_state"])
        return real_convert(*args, **kwargs)

    monkeypatch.setattr(disk_copy, "convert", convert)
    _clone, op = shared.clone_vm("web1", {"name": "web2"})
    settle(controller, clock, passes=1)
    assert op_of(shared, op)["status"] == "succeeded"
    assert seen == [True, "stopped"]
    settle(controller, clock, passes=2)
    assert shared.store.get_vm_by_id(source["id"])["observed_state"] == "running"


def test_a_running_vm_is_copied_by_a_backup_job_without_a_checkpoint(
        shared, controller, cloud, clock, monkeypatch):
    from appliance.virt.fake import FakeGuest

    source = stopped_vm(shared, controller, clock)
    write_pattern(root_of(controller, source["id"]), 0x5A, 512 << 10, 65536)
    shared.set_state("web1", "running")
    settle(controller, clock, passes=2)
    asked = []

    def backup_begin(self, files, incremental, checkpoint):  # the push job, as libvirt writes it
        asked.append((sorted(files), incremental, checkpoint))
        live = root_of(controller, self.uuid)
        subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(live),
                        str(files["root"])], check=True)
        subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(live),
                        str(files["root"])], check=True)  # libvirt names the live disk

    monkeypatch.setattr(FakeGuest, "backup_begin", backup_begin, raising=False)
    monkeypatch.setattr(FakeGuest, "backup_finished", lambda self: True, raising=False)
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    settle(controller, clock, passes=2)
    assert op_of(shared, op)["status"] == "succeeded", op_of(shared, op)["error"]
    assert asked == [(["root"], None, None)]
    copy = root_of(controller, clone["id"])
    assert backing(copy) is None and reads_pattern(copy, 0x5A, 512 << 10, 65536)
    assert shared.store.get_vm_by_id(source["id"])["observed_state"] == "running"


def test_a_disk_naming_a_file_it_was_not_given_is_not_copied(shared, controller, clock, tmp_path):
    source = stopped_vm(shared, controller, clock)
    secret = tmp_path / "host-file.qcow2"
    images.create_blank(secret, 1)
    root = root_of(controller, source["id"])
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b", str(secret),
                    str(root)], check=True)  # a header pointing elsewhere
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    settle(controller, clock, passes=2)
    done = op_of(shared, op)
    assert done["status"] == "failed"
    assert "backing file the appliance did not give it" in done["error"]
    assert not root_of(controller, clone["id"]).exists()


def test_a_clone_onto_a_host_with_storage_of_its_own_is_uploaded(
        shared, controller, cloud, clock):
    from tests.unit.appliance.controller.controller_harness import URI_B

    source = stopped_vm(shared, controller, clock, host="local")
    shared.store.update_host("b", storage="san1")
    clone, op = shared.clone_vm("web1", {"name": "web2", "host": "b"})
    settle(controller, clock, passes=2)
    assert op_of(shared, op)["status"] == "succeeded", op_of(shared, op)["error"]
    assert "root.qcow2" in cloud.host(URI_B).volumes[clone["id"]]
    staging = controller.ctx.config.vm_dir(clone["id"]) / ".incoming"
    assert not staging.exists()
    assert source["host"] == "local"


def test_a_running_vm_on_a_host_with_storage_of_its_own_is_refused_with_the_reason(
        service, controller, clock):
    service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    with pytest.raises(Conflict, match="storage is its own.*stop it first"):
        service.clone_vm("web1", {"name": "web2"})
    assert not service.store.vm_exists("web2")


def test_a_clone_is_refused_as_a_create_is(shared, controller, clock):
    stopped_vm(shared, controller, clock)
    with pytest.raises(Conflict, match="exists"):
        shared.clone_vm("web1", {"name": "web1"})
    with pytest.raises(Invalid) as bad:
        shared.clone_vm("web1", {"name": "web2", "path": "/etc"})
    assert bad.value.field == "path"
    with pytest.raises(Invalid) as bad:
        shared.clone_vm("web1", {"name": "Web_2"})
    assert bad.value.field == "name"
    shared.update_project("default", {"quota": {"vms": 1}})
    with pytest.raises(Conflict, match="quota"):
        shared.clone_vm("web1", {"name": "web2"})
    assert not shared.store.vm_exists("web2")


def test_a_live_copy_that_fails_is_aborted_and_leaves_nothing(
        shared, controller, cloud, clock, monkeypatch):
    from appliance.virt.driver import DriverError
    from appliance.virt.fake import FakeGuest

    source = stopped_vm(shared, controller, clock)
    shared.set_state("web1", "running")
    settle(controller, clock, passes=2)
    aborted = []

    def job_failed(self):
        raise DriverError("job failed", "the backup job failed: No space left on device")

    monkeypatch.setattr(FakeGuest, "backup_finished", job_failed)
    monkeypatch.setattr(FakeGuest, "abort_job", lambda self: aborted.append(self.uuid))
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    settle(controller, clock, passes=2)
    done = op_of(shared, op)
    assert done["status"] == "failed" and "No space left on device" in done["error"]
    assert aborted == [source["id"]]
    folder = controller.ctx.config.vm_dir(clone["id"])
    assert not any(p.name.endswith((".live", ".qcow2")) for p in folder.iterdir())
    assert source["id"] not in controller.ctx.busy  # the source is free again


def test_a_create_run_again_after_its_copy_does_not_copy_again(
        shared, controller, clock, monkeypatch):
    from appliance.virt import disk_copy

    stopped_vm(shared, controller, clock)
    clone, op = shared.clone_vm("web1", {"name": "web2"})
    settle(controller, clock, passes=2)
    done = op_of(shared, op)
    assert done["status"] == "succeeded" and done["params"]["filled"] is True

    def no_second_copy(*args, **kwargs):
        raise AssertionError("copied again")

    monkeypatch.setattr(disk_copy, "convert", no_second_copy)
    create = controller.operations.registry["create"]  # as after a crash: executed once more
    create(done, shared.store.get_vm_by_id(clone["id"]))
    assert backing(root_of(controller, clone["id"])) is None  # the copy kept, not re-overlaid

"""Restore a backup into a new VM, or in place (service/restores.py,
controller/sources.py). The chain on the target is made here as the backup
handler makes it (appliance/backup_chain.py's layout: a full, an incremental
whose backing file is ../PARENT/FILE, manifests), with the real qemu-img; the
hosts are in memory (FakeDriver)."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from tests.unit.appliance.controller.controller_harness import settle

from appliance import backup_chain
from appliance.errors import Conflict
from appliance.virt import images

FULL = "20261130T010000Z-aaaaaa"
INCREMENTAL = "20261130T020000Z-bbbbbb"


def qemu_io(path: Path, command: str) -> subprocess.CompletedProcess:
    return subprocess.run(["qemu-io", "-f", "qcow2", "-c", command, str(path)],
                          capture_output=True, text=True)


def reads_pattern(path: Path, pattern: int, offset: int, length: int) -> bool:
    out = qemu_io(path, f"read -P {pattern} {offset} {length}")
    return out.returncode == 0 and "Pattern verification failed" not in out.stdout


@pytest.fixture
def shared(service, controller, clock):
    for host in ("local", "b"):
        service.store.update_host(host, storage="shared")
    return service


@pytest.fixture
def target(tmp_path, shared, clock):
    path = tmp_path / "nas"
    path.mkdir()
    shared.store.db.table("backup_targets").insert({"name": "nas", "path": str(path),
                                                   "created": clock()})
    return path


def backed_up_vm(service, controller, clock, target: Path) -> dict:
    """web1 (stopped, a data disk) with a full backup and an incremental on
    `target`: the full holds 0x11 at 0 of both disks, the incremental 0x22 at 512 KiB
    of the root and 0x33 at 4 MiB of the data disk."""
    vm, _op = service.create_vm({"name": "web1", "state": "stopped",
                                 "disks": [{"name": "data", "size": "8M"}]})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    live = controller.ctx.config.vm_dir(row["id"])
    sizes = {"root": images.info(live / "root.qcow2", "qcow2")["virtual-size"], "data": 8 << 20}
    for backup_id, parent in ((FULL, None), (INCREMENTAL, FULL)):
        folder = backup_chain.backup_folder(target, row["id"], backup_id)
        folder.mkdir(parents=True)
        disks = []
        for name in ("root", "data"):
            file = backup_chain.disk_file(name)
            dest = folder / file
            if parent is None:
                source = live / ("root.qcow2" if name == "root" else "disk-data.qcow2")
                subprocess.run(["qemu-img", "convert", "-f", "qcow2", "-O", "qcow2", str(source),
                                str(dest)], check=True)
                assert qemu_io(dest, "write -P 0x11 0 64k").returncode == 0
            else:
                subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                                backup_chain.parent_reference(parent, file), str(dest)],
                               check=True, cwd=folder)
                offset = "512k" if name == "root" else "4M"
                pattern = "0x22" if name == "root" else "0x33"
                assert qemu_io(dest, f"write -P {pattern} {offset} 64k").returncode == 0
            disks.append({"name": name, "file": file, "virtual_size": sizes[name],
                          "bytes": dest.stat().st_size})
        manifest = {"format": backup_chain.MANIFEST_FORMAT, "id": backup_id,
                    "vm": {"id": row["id"], "name": "web1", "project": "default",
                           "spec": row["spec"]},
                    "kind": "incremental" if parent else "full", "parent": parent, "chain": FULL,
                    "checkpoint": backup_id, "created": clock(), "finished": clock(),
                    "quiesced": False, "disks": disks}
        backup_chain.write_manifest(folder, manifest)
        service.store.db.table("backups").insert({
            "id": backup_id, "vm_id": row["id"], "vm_name": "web1", "project": "default",
            "target": "nas", "kind": manifest["kind"], "parent": parent, "chain": FULL,
            "checkpoint": backup_id, "status": "good", "disks": json.dumps(disks),
            "size": sum(d["bytes"] for d in disks), "quiesced": 0, "scheduled": 0,
            "operation": None, "error": None, "created": clock(), "finished": clock()})
    return row


def test_a_chain_restored_into_a_new_vm_is_one_standalone_copy_of_its_last_point(
        shared, controller, clock, target):
    source = backed_up_vm(shared, controller, clock, target)
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1-restored"})
    assert vm["name"] == "web1-restored" and vm["id"] != source["id"]
    settle(controller, clock, passes=2)
    done = shared.store.get_operation(op["id"])
    assert done["status"] == "succeeded", done["error"]
    assert done["params"]["source"] == {"backup": INCREMENTAL}
    assert done["bytes_total"] == (8 << 20) + images.info(
        target / "vm-appliance" / source["id"] / FULL / "root.qcow2", "qcow2")["virtual-size"]
    assert done["bytes_done"] == done["bytes_total"]
    folder = controller.ctx.config.vm_dir(vm["id"])
    root, data = folder / "root.qcow2", folder / "disk-data.qcow2"
    assert images.qcow2_backing(root)[0] is None and images.qcow2_backing(data)[0] is None
    assert reads_pattern(root, 0x11, 0, 65536) and reads_pattern(root, 0x22, 512 << 10, 65536)
    assert reads_pattern(data, 0x11, 0, 65536) and reads_pattern(data, 0x33, 4 << 20, 65536)
    row = shared.store.get_vm_by_id(vm["id"])
    assert row["mac"] != source["mac"] and row["spec"]["disks"] == source["spec"]["disks"]
    assert f"VM created from backup {INCREMENTAL} of web1, desired state stopped" in [
        e["message"] for e in shared.list_events("web1-restored")]


def test_any_point_of_the_chain_restores(shared, controller, clock, target):
    backed_up_vm(shared, controller, clock, target)
    vm, op = shared.restore_backup(FULL, {"name": "web1-full"})
    settle(controller, clock, passes=2)
    assert shared.store.get_operation(op["id"])["status"] == "succeeded"
    root = controller.ctx.config.vm_dir(vm["id"]) / "root.qcow2"
    assert reads_pattern(root, 0x11, 0, 65536) and not reads_pattern(root, 0x22, 512 << 10, 65536)


def test_a_broken_chain_is_refused_with_the_reason_and_nothing_is_created(
        shared, controller, clock, target):
    source = backed_up_vm(shared, controller, clock, target)
    shutil.rmtree(target / "vm-appliance" / source["id"] / FULL)
    with pytest.raises(Conflict, match=f"broken: {FULL}: missing") as refused:
        shared.restore_backup(INCREMENTAL, {"name": "web1-restored"})
    assert refused.value.field == "backup"
    assert not shared.store.vm_exists("web1-restored")


def test_a_chain_broken_after_the_request_fails_the_create_with_the_reason(
        shared, controller, clock, target):
    source = backed_up_vm(shared, controller, clock, target)
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1-restored"})
    incremental = target / "vm-appliance" / source["id"] / INCREMENTAL / "disk-data.qcow2"
    subprocess.run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", "qcow2", "-b",
                    "/etc/hostname", str(incremental)], check=True)  # a header turned hostile
    settle(controller, clock, passes=2)
    done = shared.store.get_operation(op["id"])
    assert done["status"] == "failed"
    assert "does not apply on ../" in done["error"]
    assert not (controller.ctx.config.vm_dir(vm["id"]) / "root.qcow2").exists()


def test_in_place_restore_needs_the_vm_stopped_and_unlocked(shared, controller, clock, target):
    source = backed_up_vm(shared, controller, clock, target)
    vm, op = shared.restore_backup(INCREMENTAL, {})
    assert vm is None and op["kind"] == "restore" and op["vm_id"] == source["id"]
    assert op["params"] == {"backup": INCREMENTAL}
    with pytest.raises(Conflict, match="restore under way"):
        shared.restore_backup(INCREMENTAL, {})
    shared.store.update_operation(op["id"], status="succeeded")
    shared.set_state("web1", "running")
    with pytest.raises(Conflict, match="must be stopped") as refused:
        shared.restore_backup(INCREMENTAL, {})
    assert refused.value.field == "state"


def test_a_deleted_vm_backup_restores_into_a_new_vm_only(shared, controller, clock, target):
    backed_up_vm(shared, controller, clock, target)
    shared.delete_vm("web1")
    settle(controller, clock, passes=2)
    assert not shared.store.vm_exists("web1")
    with pytest.raises(Conflict, match="no longer exists: restore it into a new VM"):
        shared.restore_backup(INCREMENTAL, {})
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1"})
    settle(controller, clock, passes=2)
    assert shared.store.get_operation(op["id"])["status"] == "succeeded"


def test_a_restore_onto_a_host_with_storage_of_its_own_is_uploaded_there(
        shared, controller, cloud, clock, target):
    from tests.unit.appliance.controller.controller_harness import URI_B

    backed_up_vm(shared, controller, clock, target)
    shared.store.update_host("b", storage="san1")
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1-b", "host": "b"})
    settle(controller, clock, passes=2)
    assert shared.store.get_operation(op["id"])["status"] == "succeeded"
    assert {"root.qcow2", "disk-data.qcow2"} <= cloud.host(URI_B).volumes[vm["id"]]
    assert not (controller.ctx.config.vm_dir(vm["id"]) / ".incoming").exists()
    assert shared.store.get_vm_by_id(vm["id"])["host"] == "b"


def test_a_disk_larger_in_the_backup_than_its_spec_is_refused(shared, controller, clock, target):
    """A writer of the target grows the data disk's qcow2 (16 GiB where the
    manifest's spec, which the quota counted, says 8 MiB): restored as is, the
    VM would get a disk the quota never counted (and that a migration, which
    makes the spec's sizes on the other host, could not hold)."""
    source = backed_up_vm(shared, controller, clock, target)
    data = backup_chain.chain_file(target, source["id"], INCREMENTAL, "data")
    subprocess.run(["qemu-img", "resize", "-q", "-f", "qcow2", str(data), "16G"], check=True)
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1-restored"})
    settle(controller, clock, passes=2)
    done = shared.store.get_operation(op["id"])
    assert done["status"] == "failed" and "larger than" in done["error"], done["error"]
    assert not (controller.ctx.config.vm_dir(vm["id"]) / "disk-data.qcow2").exists() or \
        images.info(controller.ctx.config.vm_dir(vm["id"]) / "disk-data.qcow2",
                    "qcow2")["virtual-size"] == 8 << 20


# -- security (issue 14): a manifest lies on a target others may write ----------------------
MANIFEST_PATCHES = [{"op": "add", "xpath": "/domain/devices",
                     "xml": "<disk type='file' device='disk'><source file='/etc/shadow'/>"
                            "<target dev='vdz' bus='virtio'/></disk>"}]


def tamper(target, vm_id: str, backup_id: str, patches: list) -> None:
    folder = backup_chain.backup_folder(target, vm_id, backup_id)
    manifest = json.loads((folder / backup_chain.MANIFEST).read_text())
    manifest["vm"]["spec"]["xml_patches"] = patches
    (folder / backup_chain.MANIFEST).write_text(json.dumps(manifest))


def test_a_restore_does_not_take_xml_patches_from_a_manifest(shared, controller, clock, target):
    """Finding: a restore into a new VM took the manifest's spec as it was, so whoever
    can write the target (a share) wrote xml_patches that the admin's restore then
    gave QEMU, as root (here: /etc/shadow as a disk). A manifest's patches are kept
    only when they are the patches the source VM has in the store."""
    source = backed_up_vm(shared, controller, clock, target)
    tamper(target, source["id"], INCREMENTAL, MANIFEST_PATCHES)
    vm, op = shared.restore_backup(INCREMENTAL, {"name": "web1-restored"})  # an admin's
    assert vm["spec"]["xml_patches"] == []
    settle(controller, clock, passes=2)
    assert shared.store.get_operation(op["id"])["status"] == "succeeded"
    assert "/etc/shadow" not in (shared.store.get_vm_by_id(vm["id"])["domain_xml"] or "")
    assert any("xml_patches" in e["message"] and "not restored" in e["message"]
               for e in shared.list_events("web1-restored"))
    # the patches the source has (an admin's, in the store) are restored with it
    shared.update_vm("web1", {"xml_patches": [
        {"op": "add", "xpath": "/domain/os", "xml": "<smbios mode='host'/>"}]})
    kept = shared.get_vm("web1")["spec"]["xml_patches"]
    tamper(target, source["id"], INCREMENTAL, kept)
    vm, _ = shared.restore_backup(INCREMENTAL, {"name": "web1-again"})
    assert vm["spec"]["xml_patches"] == kept

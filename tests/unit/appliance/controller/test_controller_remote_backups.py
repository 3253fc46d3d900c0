"""Backups and in-place restores of a VM on a host with storage of its own
(controller/remote_backups.py), on the fake hypervisor: the job writes
`.backup-ID-*.qcow2` into the VM's pool on the host, the controller downloads
them into the target, and the host's copies go after a good, a failed, a
cancelled and an interrupted backup; an in-place restore stages the flattened
disks here and uploads them all."""
from __future__ import annotations

import os

from appliance import backup_chain
from appliance.virt import images
from tests.unit.appliance.controller.backup_harness import HOSTS, back_up, cancelled_mid_job, events, interrupted_backup
from tests.unit.appliance.controller.controller_harness import settle
from tests.unit.appliance.controller.test_controller_restore_in_place import restore

BACKUP_STORAGE = "own-disk"  # every host keeps its disks on its own storage (conftest's target)


def fake_host(cloud, row):
    return cloud.host(HOSTS[row["host"]])


def host_copies(cloud, row) -> list[str]:
    return sorted(n for n in fake_host(cloud, row).volumes[row["id"]] if n.startswith(".backup-"))


def test_full_then_incremental_are_downloaded_and_the_hosts_copies_removed(
        service, controller, cloud, clock, config, vm, target):
    assert fake_host(cloud, vm).volumes[vm["id"]] >= {"root.qcow2", "disk-data.qcow2"}
    op, full = back_up(service, controller)
    assert op["status"] == "succeeded", op["error"]
    assert full["kind"] == "full" and full["status"] == "good"
    calls = fake_host(cloud, vm).calls
    assert f"download {vm['id']} .backup-{full['id']}-root.qcow2" in calls
    assert f"download {vm['id']} .backup-{full['id']}-disk-data.qcow2" in calls
    assert host_copies(cloud, vm) == []
    assert not list(config.vm_dir(vm["id"]).glob(".backup-*"))
    folder = target / "vm-appliance" / vm["id"] / full["id"]
    assert images.check(folder / "root.qcow2")["format"] == "qcow2"  # the job's file, whole
    assert op["bytes_done"] == full["size"] > 0
    # the VM's own volumes are untouched
    assert {"root.qcow2", "disk-data.qcow2"} <= fake_host(cloud, vm).volumes[vm["id"]]

    clock.advance(60)
    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded", op["error"]
    assert inc["kind"] == "incremental" and inc["parent"] == full["id"]
    inc_folder = target / "vm-appliance" / vm["id"] / inc["id"]
    assert images.qcow2_backing(inc_folder / "disk-data.qcow2") == (
        f"../{full['id']}/disk-data.qcow2", "qcow2")
    chain = backup_chain.verify_chain(target, vm["id"], inc["id"])
    assert [m["id"] for m in chain] == [full["id"], inc["id"]]
    assert host_copies(cloud, vm) == []


def test_a_missing_file_on_the_host_fails_the_backup_and_leaves_nothing(
        service, controller, cloud, vm, target, monkeypatch):
    driver = controller.ctx.links.connected(vm["host"]).driver
    real = driver.download_volume
    monkeypatch.setattr(driver, "download_volume", lambda plan, name, dest: (
        False if "disk-data" in name else real(plan, name, dest)))
    op, backup = back_up(service, controller)
    assert op["status"] == "failed" and "is missing on host" in op["error"]
    assert backup["status"] == "failed"
    assert os.listdir(target / "vm-appliance" / vm["id"]) == []
    assert host_copies(cloud, vm) == []


def test_cancel_mid_job_removes_the_hosts_copies(service, controller, cloud, clock, vm, target):
    op, seen = cancelled_mid_job(service, controller, cloud, clock, lambda _: host_copies(cloud, vm))
    assert op["status"] == "cancelled"
    assert len(seen[0]) == 2  # the job was writing on the host
    assert host_copies(cloud, vm) == []
    assert os.listdir(target / "vm-appliance" / vm["id"]) == []
    cloud.hold_backups = False
    assert back_up(service, controller)[1]["status"] == "good"


def test_a_crash_mid_backup_removes_the_hosts_copies_at_start(service, controller, cloud, store,
                                                              clock, vm, target):
    op, interrupted = interrupted_backup(service, store, clock, vm)
    left = f".backup-{interrupted}-root.qcow2"
    fake_host(cloud, vm).volumes[vm["id"]].add(left)
    # an older crash's copy, which the re-run removes before its job
    older = ".backup-20260101T000000Z-abcdef-root.qcow2"
    fake_host(cloud, vm).volumes[vm["id"]].add(older)

    controller.adopt_on_start()
    assert store.get_backup(interrupted)["status"] == "failed"
    assert host_copies(cloud, vm) == [older]
    controller.operations.dispatch()
    op = store.get_operation(op["id"])
    assert op["status"] == "succeeded", op["error"]
    assert host_copies(cloud, vm) == []
    assert service.get_backup(op["params"]["backup"])["status"] == "good"


def test_an_in_place_restore_stages_every_disk_then_uploads_them(service, controller, cloud,
                                                                 clock, config, vm, target):
    _op, full = back_up(service, controller)
    clock.advance(60)
    _op, inc = back_up(service, controller)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    host = fake_host(cloud, vm)
    before = len(host.calls)
    op = restore(service, controller, vm, inc["id"])
    assert op["status"] == "succeeded", op["error"]
    uploads = [c for c in host.calls[before:] if c.startswith("upload")]
    assert uploads == [f"upload {vm['id']} root.qcow2", f"upload {vm['id']} disk-data.qcow2"]
    staged = config.vm_dir(vm["id"]) / "uploaded.qcow2"
    for name in ("root.qcow2", "disk-data.qcow2"):
        staged.write_bytes(host.uploads[f"{vm['id']}/{name}"])
        assert images.qcow2_backing(staged) == (None, None)  # flattened: standalone
    assert images.check(staged)["virtual_size"] == 16 << 20
    assert not list(config.vm_dir(vm["id"]).glob(".*.restore"))
    assert f"from backup {inc['id']}" in events(service, "restored")[0]


def test_a_failed_staging_uploads_nothing(service, controller, cloud, clock, config, vm, target):
    _op, full = back_up(service, controller)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    (target / "vm-appliance" / vm["id"] / full["id"] / "disk-data.qcow2").write_bytes(b"junk")
    host = fake_host(cloud, vm)
    before = len(host.calls)
    op = restore(service, controller, vm, full["id"])
    assert op["status"] == "failed"
    assert not [c for c in host.calls[before:] if c.startswith("upload")]
    assert not list(config.vm_dir(vm["id"]).glob(".*.restore"))


def test_a_link_planted_in_the_partial_folder_is_not_written_through(
        service, controller, cloud, clock, vm, target, tmp_path):
    """A target may be writable by others (an NFS share). The downloads go into the
    partial folder the handler made and pinned, as new files: a symbolic link
    planted there while the job runs, named as a disk's file and pointing at
    another VM's disk, is replaced, never followed (the download used to open
    the path for writing, with O_TRUNC, as root)."""
    victim = tmp_path / "other-vm-root.qcow2"
    victim.write_bytes(b"another VM's disk")
    cloud.hold_backups = True
    op = service.start_backup("web1")
    planted = []

    def plant_mid_job() -> None:
        current = service.store.get_operation(op["id"])
        partials = list((target / "vm-appliance" / vm["id"]).glob("*.partial"))
        if current["status"] == "running" and partials and not planted:
            for name in ("root.qcow2", "disk-data.qcow2"):
                (partials[0] / name).unlink(missing_ok=True)
                os.symlink(victim, partials[0] / name)
                planted.append(name)
            cloud.hold_backups = False

    clock.on_sleep.append(plant_mid_job)
    controller.operations.dispatch()
    op = service.store.get_operation(op["id"])
    assert planted
    assert victim.read_bytes() == b"another VM's disk"
    assert op["status"] == "succeeded", op["error"]
    folder = target / "vm-appliance" / vm["id"] / op["params"]["backup"]
    for name in planted:
        assert not (folder / name).is_symlink()
        assert images.check(folder / name)["format"] == "qcow2"

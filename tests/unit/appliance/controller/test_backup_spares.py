"""The next incremental's files made ahead, right after a good backup
(appliance/backup_spares.py), on the fake hypervisor with real files: taken by
the next backup when they still fit, made afresh when not, and removed when
nobody will take them. The fake's job refuses a target of another size than
its disk, as QEMU does."""
from __future__ import annotations

import os

from appliance import backup_chain, backup_spares
from appliance.virt import fake_backups, images
from tests.unit.appliance.controller.backup_harness import back_up

FILES = ("disk-data.qcow2", "root.qcow2")


def spares(target, vm) -> list[str]:
    return sorted(n for n in os.listdir(target / backup_chain.TREE / vm["id"]) if ".next" in n)


def made_targets(monkeypatch) -> list:
    """The parent of each backup that made its files at backup time (qemu-img into
    its .partial folder, not ahead into a .next one), recorded."""
    calls: list = []
    real = backup_chain.create_targets

    def record(dir_fd, sizes, parent_id):
        if os.readlink(f"/proc/self/fd/{dir_fd}").endswith(".partial"):
            calls.append(parent_id)
        real(dir_fd, sizes, parent_id)

    monkeypatch.setattr(backup_chain, "create_targets", record)
    return calls


def test_after_a_good_backup_the_next_incrementals_files_are_made_and_taken(
        service, controller, vm, target, monkeypatch):
    _op, full = back_up(service, controller)
    spare = backup_spares.spare_folder(target, vm["id"], full["id"])
    assert sorted(os.listdir(spare)) == list(FILES)
    for name in FILES:  # what an incremental on the full needs, of the disks' sizes
        assert images.qcow2_backing(spare / name) == (f"../{full['id']}/{name}", "qcow2")
        assert images.qcow2_virtual_size(spare / name) == images.qcow2_virtual_size(
            target / backup_chain.TREE / vm["id"] / full["id"] / name)
    inodes = {name: os.stat(spare / name).st_ino for name in FILES}
    made = made_targets(monkeypatch)

    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded", op["error"]
    assert inc["kind"] == "incremental" and made == []  # no qemu-img on the backup's way
    folder = target / backup_chain.TREE / vm["id"] / inc["id"]
    assert {name: os.stat(folder / name).st_ino for name in FILES} == inodes
    assert backup_chain.verify_chain(target, vm["id"], inc["id"])[-1]["id"] == inc["id"]
    assert spares(target, vm) == [f"{inc['id']}.next"]  # the next one's, on the incremental


def test_a_spare_that_no_longer_fits_is_removed_and_the_files_made_afresh(
        service, controller, vm, target, monkeypatch):
    """A disk grown since (another size), another backing file, a symlink or a
    stranger file in the folder: the spare is not used (QEMU would refuse the
    wrong size; a symlink is never followed) and the backup is good all the same."""
    outside = target.parent / "host-file"
    outside.write_bytes(b"host data")
    for spoil in ("size", "backing", "symlink", "stranger"):
        _op, base = back_up(service, controller, {"full": True})
        spare = backup_spares.spare_folder(target, vm["id"], base["id"])
        data = spare / "disk-data.qcow2"
        if spoil == "size":
            data.unlink()
            fake_backups._write_qcow2(data, f"../{base['id']}/disk-data.qcow2",
                                      2 * fake_backups.FAKE_DISK_BYTES)
        elif spoil == "backing":
            data.unlink()
            fake_backups._write_qcow2(data, "/etc/passwd", images.qcow2_virtual_size(
                target / backup_chain.TREE / vm["id"] / base["id"] / "disk-data.qcow2"))
        elif spoil == "symlink":
            data.unlink()
            data.symlink_to(outside)
        else:
            (spare / "extra").write_bytes(b"")
        made = made_targets(monkeypatch)
        op, inc = back_up(service, controller)
        assert op["status"] == "succeeded", (spoil, op["error"])
        assert inc["kind"] == "incremental" and made == [base["id"]], spoil
        folder = target / backup_chain.TREE / vm["id"] / inc["id"]
        assert sorted(os.listdir(folder)) == sorted(["manifest.json", *FILES]), spoil
        assert images.qcow2_backing(folder / "disk-data.qcow2") == (
            f"../{base['id']}/disk-data.qcow2", "qcow2"), spoil
        assert outside.read_bytes() == b"host data"
        assert spares(target, vm) == [f"{inc['id']}.next"], spoil
        monkeypatch.undo()


def test_spares_go_with_their_backup_and_when_no_incremental_can_follow(
        service, controller, store, vm, target):
    service.update_vm("web1", {"backup": {"keep_last": 10, "full_every": 1}})
    controller.operations.dispatch()
    _op, full = back_up(service, controller)
    assert spares(target, vm) == [f"{full['id']}.next"]
    _op, inc = back_up(service, controller)  # the chain is full_every long: a full comes next
    assert inc["kind"] == "incremental" and spares(target, vm) == []

    _op, full2 = back_up(service, controller)
    assert full2["kind"] == "full" and spares(target, vm) == [f"{full2['id']}.next"]
    service.delete_backup(full2["id"])  # deleted (or pruned): its spare with it
    assert spares(target, vm) == []


def test_a_full_backup_instead_removes_the_unused_spare(service, controller, vm, target):
    back_up(service, controller)
    _op, second = back_up(service, controller, {"full": True})
    assert second["kind"] == "full"
    assert spares(target, vm) == [f"{second['id']}.next"]


def test_a_failed_spare_does_not_fail_the_backup(service, controller, vm, target, monkeypatch):
    def broken(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(backup_spares, "make_spare", broken)
    op, full = back_up(service, controller)
    assert op["status"] == "succeeded" and full["status"] == "good"
    assert spares(target, vm) == []
    monkeypatch.undo()
    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded" and inc["kind"] == "incremental"



def test_a_vm_folder_planted_as_a_symlink_is_not_followed(tmp_path):
    """A target's writer replaces the VM's folder with a symlink to a host folder that
    has a spare's name in it: nothing there is removed, taken or made."""
    outside = tmp_path / "host"
    victim = outside / "20261130T000000Z-abcdef.next"
    victim.mkdir(parents=True)
    (victim / "root.qcow2").write_bytes(b"host data")
    target = tmp_path / "nas"
    (target / backup_chain.TREE).mkdir(parents=True)
    (target / backup_chain.TREE / "vm1").symlink_to(outside)
    backup_spares.remove_spares(target, "vm1")
    dest = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert not backup_spares.take_spare(target, "vm1", "20261130T000000Z-abcdef", dest,
                                            {"root.qcow2": 1 << 20})
    finally:
        os.close(dest)
    backup_spares.prepare_next(target, "vm1", "20261130T000001Z-abcdef", {"root.qcow2": 1 << 20},
                               True)
    assert sorted(os.listdir(outside)) == ["20261130T000000Z-abcdef.next"]
    assert (victim / "root.qcow2").read_bytes() == b"host data"


def _backup_folder(tmp_path, backup_id: str):
    target = tmp_path / "nas"
    target.mkdir()
    folder = backup_chain.make_vm_folder(target, "vm1") / backup_id
    folder.mkdir()
    return target, folder


def test_a_delete_while_the_spare_is_renamed_does_not_fail(tmp_path, monkeypatch):
    """The API's delete of a backup runs while the controller's follow-up makes the
    next files beside it: the .next-making folder renamed to .next between the
    delete's look and its removal is no failure of the delete (it was an HTTP 500)."""
    backup_id = "20261130T000000Z-abcdef"
    target, folder = _backup_folder(tmp_path, backup_id)
    making = folder.parent / (backup_id + backup_chain.SPARE_MAKING)
    making.mkdir()
    (making / "root.qcow2").write_bytes(b"")
    real = backup_chain._real_dir

    def renamed_meanwhile(path):
        found = real(path)
        if path == making and found:
            os.rename(making, folder.parent / (backup_id + backup_chain.SPARE))
        return found

    monkeypatch.setattr(backup_chain, "_real_dir", renamed_meanwhile)
    backup_chain.remove_backup(target, "vm1", backup_id)
    assert not folder.exists() and not making.exists()


def test_a_backup_deleted_while_its_spare_is_made_keeps_no_spare(tmp_path, monkeypatch):
    backup_id = "20261130T000000Z-abcdef"
    target, folder = _backup_folder(tmp_path, backup_id)
    real = backup_chain.create_targets

    def deleted_meanwhile(dir_fd, sizes, parent_id):
        real(dir_fd, sizes, parent_id)
        backup_chain.remove_backup(target, "vm1", backup_id)  # the API's delete, now

    monkeypatch.setattr(backup_chain, "create_targets", deleted_meanwhile)
    backup_spares.prepare_next(target, "vm1", backup_id, {"root.qcow2": 1 << 20}, True)
    assert os.listdir(folder.parent) == []

"""The backup handler on the fake hypervisor, with real files: the handler
makes the job's qcow2 files (an incremental's backed by its parent's files)
and the fake's job checks them as QEMU would (there, of the disk's size), so
the files, manifest, rename and the chain check run for real. Full then incremental, the fallbacks to a full one, a stopped VM,
cancel, retention, and the clean-up after a crash."""
from __future__ import annotations

import json
import os
import subprocess

import pytest

from appliance import backup_chain
from appliance.controller import backups
from appliance.virt import fake_backups, images
from tests.unit.appliance.controller.backup_harness import HOSTS, back_up, cancelled_mid_job, events, interrupted_backup
from tests.unit.appliance.controller.controller_harness import settle


def dom_of(cloud, row):
    return cloud.host(HOSTS[row["host"]]).domains[row["id"]]


def test_full_then_incremental_of_a_running_vm(service, controller, cloud, vm, target):
    op, full = back_up(service, controller)
    assert op["status"] == "succeeded", op["error"]
    assert full["kind"] == "full" and full["status"] == "good" and full["parent"] is None
    assert full["chain"] == full["id"] and full["depends_on"] == []
    assert [d["name"] for d in full["disks"]] == ["root", "data"]
    assert full["size"] == sum(d["bytes"] for d in full["disks"]) > 0
    assert op["bytes_done"] == full["size"]
    folder = target / "vm-appliance" / vm["id"] / full["id"]
    assert full["path"] == str(folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["format"] == "vm-appliance-backup/1" and manifest["vm"]["name"] == "web1"
    assert manifest["vm"]["spec"]["disks"] == vm["spec"]["disks"]
    assert images.qcow2_backing(folder / "root.qcow2") == (None, None)

    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded", op["error"]
    assert inc["kind"] == "incremental" and inc["parent"] == full["id"]
    assert inc["chain"] == full["id"] and inc["depends_on"] == [full["id"]]
    inc_folder = target / "vm-appliance" / vm["id"] / inc["id"]
    # backed by the parent's file, by relative path
    assert images.qcow2_backing(inc_folder / "disk-data.qcow2") == (
        f"../{full['id']}/disk-data.qcow2", "qcow2")
    chain = backup_chain.verify_chain(target, vm["id"], inc["id"])
    assert [m["id"] for m in chain] == [full["id"], inc["id"]]
    assert not list((target / "vm-appliance" / vm["id"]).glob("*.partial"))
    # the domain keeps only the newest checkpoint; the VM was not paused for it
    assert dom_of(cloud, vm).checkpoints == [inc["id"]]
    assert not [c for c in cloud.host(HOSTS[vm["host"]]).calls if c.startswith("suspend")]
    assert [b["id"] for b in service.list_backups("web1")] == [inc["id"], full["id"]]


def test_an_incrementals_files_are_made_backed_by_its_parents_before_the_job(
        service, controller, cloud, vm, target, monkeypatch):
    """libvirt's REUSE_EXTERNAL: the appliance makes the job's files, so QEMU
    creates none (~100 ms of an incremental's backupBegin) and no rebase
    follows the job. While the job runs, the files are there, of the disks'
    sizes, an incremental's backed by its parent's."""
    _op, full = back_up(service, controller)
    seen: dict[str, tuple] = {}
    original = fake_backups.FakeBackupMethods.backup_finished

    def look_while_running(self):
        for partial in (target / backup_chain.TREE / vm["id"]).glob("*.partial"):
            for file in partial.glob("*.qcow2"):
                seen[file.name] = images.qcow2_backing(file)
        return original(self)

    monkeypatch.setattr(fake_backups.FakeBackupMethods, "backup_finished", look_while_running)
    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded", op["error"]
    assert seen == {name: (f"../{full['id']}/{name}", "qcow2")
                    for name in ("root.qcow2", "disk-data.qcow2")}
    assert not [c for c in cloud.host(HOSTS[vm["host"]]).calls if "rebase" in c]


def test_a_checkpoint_libvirt_lost_is_redefined_from_the_bitmaps(service, controller, cloud, vm):
    _op, full = back_up(service, controller)
    dom_of(cloud, vm).checkpoints.clear()  # a migration or move: the records stay behind
    _op, inc = back_up(service, controller)
    assert inc["kind"] == "incremental" and inc["parent"] == full["id"]


def test_lost_bitmaps_make_a_full_backup_and_the_event_says_why(service, controller, cloud, vm):
    back_up(service, controller)
    dom = dom_of(cloud, vm)
    dom.checkpoints.clear()
    dom.bitmaps.clear()  # QEMU killed: the bitmaps were never stored
    op, second = back_up(service, controller)
    assert op["status"] == "succeeded"
    assert second["kind"] == "full" and second["parent"] is None and second["chain"] == second["id"]
    assert "bitmaps are not in the disks" in events(service, "backup-full-instead")[0]
    folder = backup_chain.backup_folder(service.get_backup_target("nas")["path"], vm["id"],
                                        second["id"])
    manifest = backup_chain.read_manifest(folder)
    assert manifest["kind"] == "full" and manifest["parent"] is None
    # the files made for the incremental were made again, with no backing file
    assert images.qcow2_backing(folder / "root.qcow2") == (None, None)
    assert images.qcow2_backing(folder / "disk-data.qcow2") == (None, None)


def test_full_every_starts_a_new_chain(service, controller, clock, vm):
    service.update_vm("web1", {"backup": {"keep_last": 10, "full_every": 1}})
    controller.operations.dispatch()
    kinds = []
    for _ in range(4):
        kinds.append(back_up(service, controller)[1]["kind"])
        clock.advance(60)
    assert kinds == ["full", "incremental", "full", "incremental"]
    assert "full_every 1" in events(service, "backup-started")[2]


def test_asked_full_and_changed_disks_are_full(service, controller, vm):
    back_up(service, controller)
    assert back_up(service, controller, {"full": True})[1]["kind"] == "full"


def test_a_stopped_vm_is_started_paused_and_destroyed_after(service, controller, cloud, clock, vm):
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    assert service.store.get_vm_by_id(vm["id"])["observed_state"] == "stopped"
    calls = cloud.host(HOSTS[vm["host"]]).calls
    before = len(calls)
    op, backup = back_up(service, controller)
    assert op["status"] == "succeeded" and backup["status"] == "good"
    mine = [c.split()[0] for c in calls[before:] if vm["id"] in c]
    assert mine.index("start-paused") < mine.index("backup-begin") < mine.index("destroy")
    assert "start" not in mine  # never booted: its CPUs stayed paused
    assert dom_of(cloud, vm).state == "stopped"
    settle(controller, clock, passes=1)
    assert service.store.get_vm_by_id(vm["id"])["observed_state"] == "stopped"


def test_cancel_aborts_the_job_and_removes_the_partial_folder(service, controller, cloud, clock,
                                                              vm, target):
    def look(current: dict) -> dict:
        assert list((target / "vm-appliance" / vm["id"]).glob("*.partial"))
        return current

    op, seen = cancelled_mid_job(service, controller, cloud, clock, look)
    assert seen and op["status"] == "cancelled"
    assert seen[0]["bytes_total"] == 100 and seen[0]["bytes_done"] == 50  # the job's progress
    backup = service.get_backup(op["params"]["backup"])
    assert backup["status"] == "failed" and backup["error"] == "cancelled"
    assert os.listdir(target / "vm-appliance" / vm["id"]) == []
    assert dom_of(cloud, vm).job is None
    cloud.hold_backups = False
    assert back_up(service, controller)[1]["status"] == "good"  # the next one works


def test_retention_prunes_scheduled_backups_after_a_good_one(service, controller, store, clock,
                                                             vm, target):
    service.update_vm("web1", {"backup": {"keep_last": 1, "full_every": 6}})
    controller.operations.dispatch()
    ids = []
    for _ in range(2):
        op = store.add_operation(f"sched-{len(ids)}", store.get_vm_by_id(vm["id"]), "backup",
                                 {"target": "nas", "full": True, "scheduled": True})
        controller.operations.dispatch()
        ids.append(store.get_operation(op["id"])["params"]["backup"])
        clock.advance(3600)
    manual = back_up(service, controller, {"full": True})[1]
    left = [b["id"] for b in service.list_backups("web1")]
    assert left == [manual["id"], ids[1]]  # keep_last 1 of the scheduled; manual ones are kept
    assert not (target / "vm-appliance" / vm["id"] / ids[0]).exists()
    assert f"backup {ids[0]} removed by the retention policy" in events(service, "backup-pruned")


def test_a_crash_mid_backup_fails_it_cleanly_and_the_operation_runs_again(service, controller,
                                                                         cloud, store, clock,
                                                                         vm, target):
    # What a SIGKILL of the appliance mid-job leaves (the real one: tests/integration/
    # test_backups.py): the operation running, the record running, a partial folder,
    # and libvirtd's job still going.
    op, interrupted = interrupted_backup(service, store, clock, vm)
    partial = backup_chain.make_vm_folder(target, vm["id"]) / f"{interrupted}.partial"
    partial.mkdir()
    (partial / "root.qcow2").write_bytes(b"half")
    dom_of(cloud, vm).job = "backup"

    controller.adopt_on_start()
    failed = store.get_backup(interrupted)
    assert failed["status"] == "failed" and "interrupted" in failed["error"]
    assert not partial.exists()
    controller.operations.dispatch()  # the operation runs again: libvirt's job aborted, a new backup
    op = store.get_operation(op["id"])
    assert op["status"] == "succeeded", op["error"]
    fresh = service.get_backup(op["params"]["backup"])
    assert fresh["id"] != interrupted and fresh["status"] == "good"
    assert [b["status"] for b in service.list_backups("web1")] == ["good", "failed"]
    assert f"backup {interrupted} was interrupted" in events(service, "backup-restarted")[0]
    # the backup, and the files of the next incremental on it, made ahead (backup_spares)
    assert sorted(os.listdir(target / "vm-appliance" / vm["id"])) == [fresh["id"],
                                                                       f"{fresh['id']}.next"]


def test_a_backup_published_before_the_crash_is_recorded_good(service, controller, store, vm,
                                                             target):
    _op, backup = back_up(service, controller)
    store.update_backup(backup["id"], status="running")  # died between the rename and the record
    controller.adopt_on_start()
    assert store.get_backup(backup["id"])["status"] == "good"
    assert (target / "vm-appliance" / vm["id"] / backup["id"] / "manifest.json").exists()


def test_a_planted_symlink_in_the_target_is_refused(service, controller, vm, target, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (target / "vm-appliance").symlink_to(elsewhere)
    op, backup = back_up(service, controller)
    assert op["status"] == "failed" and "not a folder" in op["error"]
    assert backup["status"] == "failed"
    assert list(elsewhere.iterdir()) == []


def test_after_a_live_migration_the_chain_goes_on_incrementally(service, controller, cloud,
                                                                clock, vm):
    _op, full = back_up(service, controller)
    other = next(name for name in HOSTS if name != vm["host"])
    op = service.migrate_vm("web1", other)
    controller.operations.dispatch()
    assert service.store.get_operation(op["id"])["status"] == "succeeded"
    moved = service.store.get_vm_by_id(vm["id"])
    assert moved["host"] == other and dom_of(cloud, moved).checkpoints == []  # left behind
    clock.advance(60)
    _op, inc = back_up(service, controller)
    assert inc["kind"] == "incremental" and inc["parent"] == full["id"]
    assert dom_of(cloud, moved).checkpoints == [inc["id"]]


def test_a_backup_cancelled_while_the_appliance_was_down_does_not_start_again(
        service, controller, cloud, store, clock, vm, target):
    op = service.start_backup("web1")
    store.claim_operation(op["id"], clock())  # running when the appliance died...
    service.cancel_operation(op["id"])  # ...and cancelled before it came back
    dom_of(cloud, vm).job = "backup"  # libvirtd's job outlived the appliance
    controller.adopt_on_start()
    controller.operations.dispatch()
    assert store.get_operation(op["id"])["status"] == "cancelled"
    assert service.list_backups("web1") == []
    assert dom_of(cloud, vm).job is None  # the orphaned job was aborted


@pytest.mark.parametrize("bad", [{"bytes": "lots"}, {"virtual_size": 1e400}, {"bytes": -1},
                                 {"virtual_size": True}, {"bytes": [1]}])
def test_a_hostile_manifest_found_at_restart_does_not_stop_the_appliance(
        service, controller, store, vm, target, bad):
    """A writer of the target rewrites the manifest of a backup the appliance
    died recording: its sizes are not numbers. The start goes on, the backup
    is not recorded good from it, its folder goes."""
    _op, backup = back_up(service, controller)
    store.update_backup(backup["id"], status="running")
    folder = backup_chain.backup_folder(target, vm["id"], backup["id"])
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["disks"][0].update(bad)
    (folder / "manifest.json").write_text(json.dumps(manifest))
    controller.adopt_on_start()
    recorded = store.get_backup(backup["id"])
    assert recorded["status"] == "failed"
    assert not folder.exists()


def test_a_tree_swapped_in_the_target_during_the_job_is_not_written_through(
        service, controller, cloud, clock, vm, target, tmp_path, monkeypatch):
    """A writer of the target learns the running backup's id (GET /v1/backups)
    and, while libvirt's job runs, renames the appliance's folder away and
    plants one of its own where the incremental's file is a symlink to another
    VM's disk. The appliance's own steps after the job (the rebase of the
    header, the sizes, the manifest) must not follow it: the victim's header is
    untouched and the backup fails with the reason."""
    _op, full = back_up(service, controller)
    clock.advance(60)
    victim = tmp_path / "other-vm-root.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(victim), "16M"], check=True)
    before = victim.read_bytes()[:4096]
    original = fake_backups.FakeBackupMethods.backup_finished

    def finished_after_a_swap(self):
        tree = target / backup_chain.TREE
        if tree.exists() and not (target / "moved").exists():
            running = service.store.list_backups(statuses=["running"])[0]["id"]
            os.rename(tree, target / "moved")
            planted = tree / vm["id"] / f"{running}.partial"
            planted.mkdir(parents=True)
            (planted / "root.qcow2").symlink_to(victim)
            (planted / "disk-data.qcow2").symlink_to(victim)
        return original(self)

    monkeypatch.setattr(fake_backups.FakeBackupMethods, "backup_finished", finished_after_a_swap)
    op, inc = back_up(service, controller)
    assert victim.read_bytes()[:4096] == before
    assert op["status"] == "failed" and "changed under the backup" in op["error"]
    assert inc["status"] == "failed"


def test_the_housekeeping_runs_after_the_operation_succeeded(service, controller, store,
                                                              cloud, vm, monkeypatch):
    """The caller waits for the backup, not for its housekeeping: the older checkpoints are
    dropped once the operation is recorded succeeded, while the VM is still claimed (no
    other operation of it starts meanwhile)."""
    back_up(service, controller)
    seen = []
    real_drop = backups.drop_checkpoints

    def drop(guest, keep=None):
        newest = store.list_operations(vm_name="web1", limit=1)[0]
        seen.append((newest["kind"], newest["status"], vm["id"] in controller.ctx.busy))
        real_drop(guest, keep)

    monkeypatch.setattr(backups, "drop_checkpoints", drop)
    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded" and seen == [("backup", "succeeded", True)]
    assert dom_of(cloud, vm).checkpoints == [inc["id"]]
    assert vm["id"] not in controller.ctx.busy


def test_housekeeping_cut_short_is_done_by_the_next_backup(service, controller, store, clock,
                                                          cloud, vm, target, monkeypatch):
    """A stop of the appliance between a backup's success and its housekeeping leaves an
    older checkpoint and a backup the retention drops: the next backup removes both."""
    service.update_vm("web1", {"backup": {"keep_last": 1, "full_every": 6}})
    controller.operations.dispatch()
    # the follow-up is lost, as in a stop of the appliance after the success
    monkeypatch.setattr(backups.BackupRun, "_housekeeping", lambda self, guest: None)
    ids = []
    for _ in range(2):
        op = store.add_operation(f"sched-{len(ids)}", store.get_vm_by_id(vm["id"]), "backup",
                                 {"target": "nas", "scheduled": True})
        controller.operations.dispatch()
        assert store.get_operation(op["id"])["status"] == "succeeded"
        ids.append(store.get_operation(op["id"])["params"]["backup"])
        clock.advance(3600)
    assert dom_of(cloud, vm).checkpoints == ids
    assert len(service.list_backups("web1")) == 2
    monkeypatch.undo()
    op = store.add_operation("sched-2", store.get_vm_by_id(vm["id"]), "backup",
                             {"target": "nas", "full": True, "scheduled": True})
    controller.operations.dispatch()
    last = store.get_operation(op["id"])["params"]["backup"]
    assert dom_of(cloud, vm).checkpoints == [last]
    assert [b["id"] for b in service.list_backups("web1")] == [last]  # keep_last 1
    assert not (target / "vm-appliance" / vm["id"] / ids[0]).exists()


def test_a_stopped_vm_has_its_housekeeping_before_it_is_destroyed(service, controller, cloud,
                                                                   clock, vm):
    """libvirt deletes a checkpoint's bitmaps on an active domain only: a VM started
    paused for its backup has its older checkpoints dropped before the destroy."""
    back_up(service, controller)
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    calls = cloud.host(HOSTS[vm["host"]]).calls
    before = len(calls)
    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded" and inc["kind"] == "incremental"
    mine = [c.split()[0] for c in calls[before:] if vm["id"] in c]
    assert mine.index("backup-begin") < mine.index("checkpoint-delete") < mine.index("destroy")
    assert dom_of(cloud, vm).state == "stopped" and dom_of(cloud, vm).checkpoints == [inc["id"]]


def test_a_running_vm_is_observed_after_its_backup_is_recorded_a_stopped_one_before(
        service, controller, store, clock, vm, monkeypatch):
    """A backup leaves a running VM's domain as it was: the caller is answered before the
    VM is observed again (its addresses are a guest agent's answer). A stopped VM was
    started paused and destroyed again: observed first, as after any operation."""
    seen = []
    real = controller.operations.observer.observe_after

    def observe_after(vm_id):
        newest = store.list_operations(vm_name="web1", limit=1)[0]
        seen.append((newest["kind"], newest["status"], vm_id in controller.ctx.busy))
        real(vm_id)

    monkeypatch.setattr(controller.operations.observer, "observe_after", observe_after)
    op, _full = back_up(service, controller)
    assert op["status"] == "succeeded" and seen == [("backup", "succeeded", True)]
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=1)
    seen.clear()
    op, _inc = back_up(service, controller)
    assert op["status"] == "succeeded" and seen == [("backup", "running", True)]
    assert store.get_vm_by_id(vm["id"])["observed_state"] == "stopped"


def test_an_incrementals_short_job_is_not_asked_for_its_progress(service, controller, cloud,
                                                                  clock, store, vm, monkeypatch):
    """libvirt answers a progress query once its own work on the job is done, so asking an
    incremental's short job (~50 ms) only delayed the poll that sees its end: its progress,
    and a cancel, are looked at every PROGRESS_SECONDS from the job's start. A full's
    progress is recorded at its first poll (its total: how much the job copies)."""
    asked = []
    guest_type = type(controller.ctx.links.get(vm["host"]).lookup(vm["id"]))
    real = guest_type.job_progress

    def job_progress(self):
        asked.append(clock.now)
        return real(self)

    monkeypatch.setattr(guest_type, "job_progress", job_progress)
    polls = []

    def release_after(count):
        def hook():
            polls.append(clock.now)
            if len(polls) >= count:
                cloud.hold_backups = False
        return hook

    cloud.guest_agents.add(vm["id"])  # frozen at once: the sleeps below are the job's polls
    cloud.hold_backups = True
    clock.on_sleep[:] = [release_after(3)]  # the job ends within 30 ms
    op, full = back_up(service, controller)
    assert op["status"] == "succeeded" and full["kind"] == "full" and len(asked) == 1
    assert store.get_operation(op["id"])["bytes_total"] == 100

    cloud.hold_backups, polls[:], asked[:] = True, [], []
    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded" and inc["kind"] == "incremental"
    assert len(polls) == 3 and asked == []

    clock.on_sleep[:] = [release_after(50)]  # ~0.5 s of polls: asked from 0.2 s on
    cloud.hold_backups, polls[:] = True, []
    op, inc = back_up(service, controller)
    assert op["status"] == "succeeded" and inc["kind"] == "incremental"
    assert len(asked) >= 2 and min(asked) - polls[0] >= 0.19
    assert store.get_operation(op["id"])["bytes_total"] == 100

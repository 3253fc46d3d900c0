"""The controller's backup schedule (appliance/controller/backup_schedule.py): a
VM whose effective policy's slot passed with no backup started since gets one
backup operation; one catch-up after downtime; a slot before the policy is not
missed; the project's policy for VMs without one."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from appliance.controller.backup_schedule import BackupScheduler
from appliance.model.states import OpKind, OpStatus
from appliance.store import Store
from tests.unit.appliance.controller.controller_harness import FakeClock

DAILY = {"schedule": "daily 02:00", "target": "nas", "keep_daily": 7}
MONDAY_10H = datetime(2026, 11, 30, 10, 0, tzinfo=UTC)


@pytest.fixture
def clock() -> FakeClock:
    clock = FakeClock()
    clock.now = MONDAY_10H.timestamp()
    return clock


@pytest.fixture
def timed_store(config, store, clock) -> Store:
    """The store on the test's clock: operations are created at its time."""
    return Store(config.db_path, clock=clock)


@pytest.fixture
def scheduler(timed_store, clock) -> BackupScheduler:
    return BackupScheduler(timed_store, clock)


@pytest.fixture(autouse=True)
def nas(service, tmp_path):
    """The one backup target: a policy without a target backs up into it."""
    (tmp_path / "nas").mkdir(mode=0o700)
    service.add_backup_target({"name": "nas", "path": str(tmp_path / "nas")})


def make_vm(service, name: str, backup: dict | None = None) -> str:
    body = {"name": name, "state": "stopped"}
    if backup is not None:
        body["backup"] = backup
    vm, _op = service.create_vm(body)
    return vm["id"]


def backup_ops(store: Store, vm_id: str) -> list[dict]:
    return store.operations_of_vm(vm_id, None, [OpKind.BACKUP], limit=100)


def at(clock: FakeClock, when: datetime) -> float:
    clock.now = when.timestamp()
    return clock.now


def finish(store: Store, vm_id: str) -> None:
    for op in backup_ops(store, vm_id):
        store.update_operation(op["id"], status=OpStatus.SUCCEEDED.value)


def test_a_slot_before_the_policy_was_seen_is_not_a_missed_run(service, scheduler, timed_store,
                                                               clock):
    vm = make_vm(service, "web1", DAILY)
    assert scheduler.run(clock()) == []  # 02:00 today passed before the schedule existed
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=15, minutes=59))) == []
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=16))) == [vm]  # Tue 02:00
    op, = backup_ops(timed_store, vm)
    # What a backup asked for by hand makes, marked scheduled (retention prunes only those).
    assert op["params"] == {"target": "nas", "full": False, "scheduled": True, "by": "schedule",
                            "slot": (MONDAY_10H + timedelta(hours=16)).timestamp()}
    assert op["status"] == OpStatus.PENDING
    events = [e for e in timed_store.list_events(vm_id=vm) if e["kind"] == "backup-scheduled"]
    assert events and "daily 02:00" in events[0]["message"]
    # The next passes before the next slot queue nothing more.
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=17))) == []
    finish(timed_store, vm)
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=39))) == []
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=40))) == [vm]  # Wed 02:00


def test_after_downtime_one_catch_up_run(service, scheduler, timed_store, clock):
    vm = make_vm(service, "web1", {"schedule": "hourly", "keep_last": 3})
    scheduler.run(clock())
    # The controller was down five days: 120 slots passed; one backup now.
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(days=5, minutes=20))) == [vm]
    finish(timed_store, vm)
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(days=5, minutes=21))) == []
    assert len(backup_ops(timed_store, vm)) == 1
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(days=5, hours=1))) == [vm]


def test_an_open_backup_holds_the_next_slot_back(service, scheduler, timed_store, clock):
    vm = make_vm(service, "web1", {"schedule": "hourly", "keep_last": 3})
    scheduler.run(clock())
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=1))) == [vm]
    # Still running two slots later: no second one queued behind it.
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=3))) == []
    finish(timed_store, vm)
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=3, seconds=30))) == [vm]


def test_a_backup_started_by_hand_after_the_slot_counts(service, scheduler, timed_store, clock):
    vm = make_vm(service, "web1", DAILY)
    scheduler.run(clock())
    tuesday_3h = MONDAY_10H + timedelta(hours=17)
    timed_store.db.table("backups").insert({
        "id": "20261201T030000Z-aaaaaa", "vm_id": vm, "vm_name": "web1", "project": "default",
        "target": "nas", "kind": "full", "chain": "20261201T030000Z-aaaaaa", "status": "good",
        "scheduled": 0, "created": (tuesday_3h - timedelta(minutes=30)).timestamp()})
    assert scheduler.run(at(clock, tuesday_3h)) == []


def test_the_projects_policy_applies_to_vms_without_one(service, scheduler, timed_store, clock):
    service.create_project({"name": "web"})
    service.update_project("web", {"backup": {"schedule": "hourly", "keep_last": 2}})
    from appliance.access import Principal, Role, acting_as
    with acting_as(Principal(user="admin", role=Role.ADMIN, project="web", source="token")):
        inherits = make_vm(service, "a", None)
        # Its own policy wins whole: no schedule of its own, so no scheduled backups.
        manual_only = make_vm(service, "b", {"keep_last": 5})
        own = make_vm(service, "c", {"schedule": "daily 02:00", "keep_daily": 1})
    scheduler.run(clock())
    assert sorted(scheduler.run(at(clock, MONDAY_10H + timedelta(hours=1)))) == [inherits]
    assert backup_ops(timed_store, manual_only) == []
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=16, minutes=1))) == [own]
    # The project's policy removed: its VMs are no longer scheduled, and their record goes.
    service.update_project("web", {"backup": None})
    finish(timed_store, inherits)
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=20))) == []
    assert inherits not in timed_store.backup_schedules()


def test_a_changed_schedule_starts_afresh(service, scheduler, timed_store, clock):
    vm = make_vm(service, "web1", DAILY)
    scheduler.run(clock())
    since = timed_store.backup_schedules()[vm]["since"]
    # A change of retention keeps the record; a change of schedule renews it.
    service.update_vm("web1", {"backup": {**DAILY, "keep_daily": 9}})
    scheduler.run(at(clock, MONDAY_10H + timedelta(minutes=1)))
    assert timed_store.backup_schedules()[vm]["since"] == since
    service.update_vm("web1", {"backup": {**DAILY, "schedule": "daily 09:00"}})
    # 09:00 today passed before the change: not a missed run.
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(minutes=2))) == []
    assert timed_store.backup_schedules()[vm]["since"] == clock()
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=23))) == [vm]


def test_without_a_target_to_use_the_run_fails_with_the_reason_once(service, scheduler,
                                                                   timed_store, clock, tmp_path):
    (tmp_path / "usb").mkdir(mode=0o700)
    service.add_backup_target({"name": "usb", "path": str(tmp_path / "usb")})
    vm = make_vm(service, "web1", {"schedule": "hourly", "keep_last": 1})  # names no target
    scheduler.run(clock())
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=1))) == [vm]
    op, = backup_ops(timed_store, vm)
    assert op["status"] == OpStatus.FAILED and "there are 2" in op["error"]
    assert op["params"]["target"] is None
    failed = [e for e in timed_store.list_events(vm_id=vm) if e["kind"] == "operation-failed"]
    assert failed and "name a backup target" in failed[0]["message"]
    assert "backup: name a backup target" in timed_store.get_vm_by_id(vm)["last_error"]
    # Counted as this slot's run: not tried again every pass, but at the next slot.
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=1, minutes=30))) == []
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=2))) == [vm]


def test_a_vm_being_deleted_is_not_backed_up(service, scheduler, timed_store, clock):
    vm = make_vm(service, "web1", {"schedule": "hourly", "keep_last": 1})
    scheduler.run(clock())
    service.delete_vm("web1")
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=2))) == []
    assert backup_ops(timed_store, vm) == []


def test_a_policy_change_needs_no_restart(service):
    make_vm(service, "web1")
    service.store.update_vm(service.store.get_vm("web1")["id"], observed_state="running")
    vm, _ = service.update_vm("web1", {"backup": DAILY})
    assert vm["spec"]["backup"]["schedule"] == "daily 02:00"
    assert not service.store.get_vm("web1")["restart_required"]


def test_the_loop_runs_it_every_thirty_seconds(timed_store, clock, monkeypatch):
    scheduler = BackupScheduler(timed_store, clock)
    runs: list[float] = []
    monkeypatch.setattr(scheduler, "run", runs.append)
    for _ in range(7):
        scheduler.tick()
        clock.advance(10)
    assert len(runs) == 3  # at 0, 30 and 60 s


def test_a_policy_naming_a_target_that_is_gone_fails_the_run_with_the_reason(service, scheduler,
                                                                            timed_store, clock):
    vm = make_vm(service, "web1", {"schedule": "hourly", "target": "usb", "keep_last": 1})
    scheduler.run(clock())
    assert scheduler.run(at(clock, MONDAY_10H + timedelta(hours=1))) == [vm]
    op, = backup_ops(timed_store, vm)
    assert op["status"] == OpStatus.FAILED and "usb" in op["error"]

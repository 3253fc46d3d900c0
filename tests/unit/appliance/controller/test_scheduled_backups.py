"""Scheduled backups through the whole controller on the fake hypervisor: the
loop's schedule queues, the backup handler (part B) runs what it queued, and
retention (backup_retention) prunes the older scheduled chains."""
from __future__ import annotations

from tests.unit.appliance.controller.controller_harness import settle

HOUR = 3600.0


def to_next_hour(clock) -> None:
    """Just past the next full hour (the hourly slot)."""
    clock.now = (clock.now // HOUR + 1) * HOUR + 5


def test_an_hourly_schedule_backs_up_each_hour_and_keeps_the_last_two(service, controller,
                                                                       store, clock, vm, target):
    # full_every 1: full, incremental, full, incremental: chains of two.
    service.update_vm("web1", {"backup": {"schedule": "hourly", "keep_last": 2, "full_every": 1}})
    settle(controller, clock, passes=2, step=31)  # the schedule seen: no backup for a past slot
    assert service.list_backups("web1") == []
    made = []
    for _ in range(4):
        to_next_hour(clock)
        settle(controller, clock, passes=3, step=31)  # queued, then run by the handler
        backups = service.list_backups("web1")
        assert backups and backups[0]["status"] == "good", backups
        assert backups[0]["scheduled"]
        made.append(backups[0])
        # one backup per slot, however many passes
        assert len([b for b in backups if b["id"] == made[-1]["id"]]) == 1
    assert [b["kind"] for b in made] == ["full", "incremental", "full", "incremental"]
    # keep_last 2: the newest chain (full + its incremental); the older chain pruned whole.
    left = {b["id"] for b in service.list_backups("web1")}
    assert left == {made[2]["id"], made[3]["id"]}
    assert not (target / "vm-appliance" / vm["id"] / made[0]["id"]).exists()
    ops = [op for op in service.list_operations("web1") if op["kind"] == "backup"]
    assert len(ops) == 4 and all(op["params"]["scheduled"] for op in ops)


def test_after_the_controller_was_down_a_day_one_catch_up_backup(service, controller, clock,
                                                                 vm, target):
    service.update_vm("web1", {"backup": {"schedule": "daily 02:00", "keep_daily": 7}})
    settle(controller, clock, passes=1, step=31)
    clock.now += 3 * 86400  # three slots missed
    settle(controller, clock, passes=4, step=31)
    backups = service.list_backups("web1")
    assert len(backups) == 1 and backups[0]["status"] == "good"
    settle(controller, clock, passes=10, step=31)  # five more minutes: still the one
    ops = [op for op in service.list_operations("web1") if op["kind"] == "backup"]
    assert len(ops) == 1 and len(service.list_backups("web1")) == 1

"""Retention (appliance/backup_retention.py): Proxmox's prune-backups rules, the
appliance's candidates (scheduled and good only; failed always go) and chain closure."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from appliance.backup_retention import prune

T0 = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)  # a Monday
NOW = (T0 + timedelta(hours=1)).timestamp()


def backup(backup_id: str, when: datetime, *, parent: str | None = None, status: str = "good",
           scheduled: int = 1) -> dict[str, Any]:
    return {"id": backup_id, "created": when.timestamp(), "status": status,
            "scheduled": scheduled, "parent": parent, "chain": parent or backup_id,
            "kind": "incremental" if parent else "full"}


def fulls(*times: datetime) -> list[dict[str, Any]]:
    return [backup(f"b{i:03d}", when) for i, when in enumerate(times)]


def kept(backups: list[dict[str, Any]], policy: dict[str, Any], now: float = NOW) -> list[str]:
    doomed = set(prune(backups, policy, now))
    return sorted(b["id"] for b in backups if b["id"] not in doomed)


def test_keep_last_keeps_the_newest_n():
    backups = fulls(*(T0 - timedelta(hours=h) for h in range(5)))
    assert kept(backups, {"keep_last": 2}) == ["b000", "b001"]


def test_keep_daily_keeps_the_newest_of_each_of_the_last_n_days():
    # Two backups a day, at 01:00 and 13:00, for five days.
    times = [T0.replace(hour=hour) - timedelta(days=d) for d in range(5) for hour in (1, 13)]
    backups = fulls(*times)
    # The newest of each of the last three days: the 13:00 ones.
    assert kept(backups, {"keep_daily": 3}) == ["b001", "b003", "b005"]


def test_an_option_skips_periods_an_earlier_one_kept_and_counts_only_new_ones():
    # Proxmox: keep-last 2 then keep-daily 2. Today 22:00 and 21:00 are kept by keep-last;
    # keep-daily then skips today (already kept) and keeps the newest of the two days before.
    times = [T0.replace(hour=22), T0.replace(hour=21), T0.replace(hour=20),
             T0.replace(hour=22) - timedelta(days=1), T0.replace(hour=10) - timedelta(days=1),
             T0.replace(hour=22) - timedelta(days=2), T0.replace(hour=22) - timedelta(days=3)]
    backups = fulls(*times)
    assert kept(backups, {"keep_last": 2, "keep_daily": 2}) == ["b000", "b001", "b003", "b005"]


def test_a_second_backup_of_a_period_kept_is_not_seen_by_coarser_options():
    # keep-weekly 1 keeps this week's newest (Wed 2 Dec) and marks the week's other one
    # (Mon 30 Nov) for removal: keep-monthly must not then take it as November's backup
    # (weeks straddle months), it goes on to October.
    times = [datetime(2026, 12, 2, tzinfo=UTC), datetime(2026, 11, 30, tzinfo=UTC),
             datetime(2026, 10, 15, tzinfo=UTC)]
    now = datetime(2026, 12, 3, tzinfo=UTC).timestamp()
    assert kept(fulls(*times), {"keep_weekly": 1, "keep_monthly": 2}, now) == ["b000", "b002"]


def test_weeks_are_iso_weeks_across_a_year_end():
    # 2026-12-31 (Thursday) and 2027-01-03 (Sunday) are in the same ISO week 2026-W53;
    # 2027-01-04 (Monday) starts week 2027-W01.
    times = [datetime(2027, 1, 4, 1, tzinfo=UTC), datetime(2027, 1, 3, 1, tzinfo=UTC),
             datetime(2026, 12, 31, 1, tzinfo=UTC), datetime(2026, 12, 27, 1, tzinfo=UTC)]
    backups = fulls(*times)
    now = datetime(2027, 1, 5, tzinfo=UTC).timestamp()
    assert kept(backups, {"keep_weekly": 3}, now) == ["b000", "b001", "b003"]


def test_keep_hourly_and_keep_monthly():
    times = [T0.replace(minute=50), T0.replace(minute=10), T0 - timedelta(hours=1),
             datetime(2026, 10, 15, tzinfo=UTC), datetime(2026, 10, 1, tzinfo=UTC),
             datetime(2026, 9, 3, tzinfo=UTC), datetime(2026, 8, 3, tzinfo=UTC)]
    backups = fulls(*times)
    assert kept(backups, {"keep_hourly": 2}) == ["b000", "b002"]
    # keep-monthly 2: November's newest, then October's newest.
    assert kept(backups, {"keep_monthly": 2}) == ["b000", "b003"]


def test_periods_are_utc_days():
    # 23:30 and 00:30 UTC are different days (whatever the machine's time zone).
    times = [datetime(2026, 11, 30, 0, 30, tzinfo=UTC), datetime(2026, 11, 29, 23, 30, tzinfo=UTC)]
    assert kept(fulls(*times), {"keep_daily": 2}) == ["b000", "b001"]


def test_no_option_above_zero_keeps_everything_as_proxmox_does():
    backups = fulls(*(T0 - timedelta(days=d) for d in range(4)))
    assert prune(backups, {"keep_last": 0, "keep_daily": None}, NOW) == []


def test_only_scheduled_good_backups_are_candidates_and_failed_ones_always_go():
    backups = [
        backup("a", T0 - timedelta(hours=4)),
        backup("manual", T0 - timedelta(hours=3), scheduled=0),
        backup("running", T0 - timedelta(hours=2), status="running"),
        backup("failed", T0 - timedelta(hours=1), status="failed"),
        backup("b", T0),
    ]
    # keep_last 1 keeps b: a goes; the manual and the running one are neither pruned nor
    # counted (else a manual backup would push a scheduled one out); the failed one goes.
    assert kept(backups, {"keep_last": 1}) == ["b", "manual", "running"]
    assert prune(backups, {"keep_last": 5}, NOW) == ["failed"]


def test_a_kept_incremental_keeps_its_chain_up_to_the_full():
    backups = [
        backup("f1", T0 - timedelta(days=3)),
        backup("i1", T0 - timedelta(days=2), parent="f1"),
        backup("i2", T0 - timedelta(days=1), parent="i1"),
        backup("f2", T0 - timedelta(hours=5)),
        backup("i3", T0, parent="f2"),
    ]
    # keep_last 1 keeps i3, which needs f2; the older chain goes whole, children first.
    assert prune(backups, {"keep_last": 1}, NOW) == ["i2", "i1", "f1"]
    # keep_daily 2: i3 (today) and i2 (yesterday): i2 holds its whole chain.
    assert prune(backups, {"keep_daily": 2}, NOW) == []


def test_a_manual_incremental_keeps_the_scheduled_backups_it_depends_on():
    backups = [
        backup("f1", T0 - timedelta(days=3)),
        backup("i1", T0 - timedelta(days=2), parent="f1"),
        backup("manual", T0 - timedelta(days=1), parent="i1", scheduled=0),
        backup("f2", T0),
    ]
    assert prune(backups, {"keep_last": 1}, NOW) == []
    # A running incremental holds its parent the same way.
    backups[2]["status"] = "running"
    assert prune(backups, {"keep_last": 1}, NOW) == []


def test_deleted_first_are_the_dependents():
    backups = [backup("f", T0 - timedelta(days=9)), backup("i", T0 - timedelta(days=8), parent="f"),
               backup("g", T0)]
    assert prune(backups, {"keep_last": 1}, NOW) == ["i", "f"]


def test_backups_after_now_are_kept_and_not_counted():
    backups = fulls(T0 + timedelta(days=1), T0, T0 - timedelta(hours=1))
    assert kept(backups, {"keep_last": 1}) == ["b000", "b001"]


def test_a_parent_cycle_or_a_missing_parent_does_not_hang_or_fail():
    backups = [backup("x", T0, parent="y"), backup("y", T0 - timedelta(hours=1), parent="x"),
               backup("z", T0 - timedelta(hours=2), parent="gone")]
    assert prune(backups, {"keep_last": 1}, NOW) == ["z"]


def test_a_policy_object_is_read_like_its_dict():
    class Policy:
        keep_last = 1
        keep_daily = None

    backups = fulls(T0, T0 - timedelta(hours=1))
    assert prune(backups, Policy(), NOW) == ["b001"]


def test_equal_times_are_ordered_by_id():
    backups = [backup("20261130T230000Z-aaaaaa", T0), backup("20261130T230000Z-bbbbbb", T0)]
    assert prune(backups, {"keep_last": 1}, NOW) == ["20261130T230000Z-aaaaaa"]

"""Backup schedules (appliance/backup_schedule.py): parsing, the last slot at or
before an instant (UTC), the interval."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from appliance.backup_schedule import PATTERN, interval_of, parse
from appliance.errors import Invalid


def at(*args: int) -> float:
    return datetime(*args, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(("text", "now", "slot"), [
    ("hourly", at(2026, 11, 30, 10, 59, 59), at(2026, 11, 30, 10)),
    ("hourly", at(2026, 11, 30, 10), at(2026, 11, 30, 10)),  # a slot is its own last slot
    ("daily 02:00", at(2026, 11, 30, 1, 59), at(2026, 11, 29, 2)),
    ("daily 02:00", at(2026, 11, 30, 2, 0), at(2026, 11, 30, 2)),
    ("daily 23:45", at(2026, 1, 1, 0, 10), at(2025, 12, 31, 23, 45)),
    # 30 Nov 2026 is a Monday.
    ("weekly mon 03:00", at(2026, 11, 30, 2), at(2026, 11, 23, 3)),
    ("weekly mon 03:00", at(2026, 11, 30, 4), at(2026, 11, 30, 3)),
    ("weekly sun 23:00", at(2026, 11, 30, 4), at(2026, 11, 29, 23)),
    ("weekly wed 00:00", at(2026, 11, 30, 4), at(2026, 11, 25)),
    ("monthly 1 00:30", at(2026, 12, 1, 0, 29), at(2026, 11, 1, 0, 30)),
    ("monthly 15 12:00", at(2026, 1, 10), at(2025, 12, 15, 12)),
    # Day 31 in a shorter month: its last day.
    ("monthly 31 06:00", at(2026, 2, 28, 7), at(2026, 2, 28, 6)),
    ("monthly 31 06:00", at(2026, 2, 28, 5), at(2026, 1, 31, 6)),
    ("monthly 31 06:00", at(2026, 4, 30, 7), at(2026, 4, 30, 6)),
])
def test_last_slot(text, now, slot):
    assert parse(text).last_slot(now) == slot


def test_last_slot_ignores_the_machines_time_zone(monkeypatch):
    import time
    monkeypatch.setenv("TZ", "America/New_York")
    time.tzset()
    try:
        assert parse("daily 02:00").last_slot(at(2026, 11, 30, 3)) == at(2026, 11, 30, 2)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_intervals():
    assert [interval_of(t) for t in ("hourly", "daily 00:00", "weekly sun 00:00",
                                     "monthly 1 00:00")] == [3600, 86400, 7 * 86400, 31 * 86400]


@pytest.mark.parametrize("text", [
    "", "Hourly", "hourly ", "daily", "daily 2:00", "daily 24:00", "daily 12:60", "daily 12:00:00",
    "weekly 12:00", "weekly Mon 12:00", "weekly monday 12:00", "monthly 0 12:00",
    "monthly 32 12:00", "monthly 01 12:00", "every 5 minutes", "*/5 * * * *", "daily\n02:00",
    "hourly" * 10, None, 3600, ["hourly"],
])
def test_refused(text):
    with pytest.raises(Invalid) as err:
        parse(text)
    assert err.value.field == "schedule" and "hourly, daily HH:MM" in err.value.reason


def test_the_openapi_pattern_accepts_what_the_parser_does():
    import re
    for text in ("hourly", "daily 00:00", "weekly sun 23:59", "monthly 31 12:00", "monthly 9 01:00"):
        parse(text)
        assert re.fullmatch(PATTERN, text)
    for text in ("daily 24:00", "monthly 32 00:00", "weekly Sun 00:00", "hourly x"):
        assert not re.fullmatch(PATTERN, text)

"""Backup schedules: "hourly" | "daily HH:MM" | "weekly DAY HH:MM" |
"monthly D HH:MM", in UTC. Pure: a schedule's slots (the instants a backup is
due) and its interval; the controller's loop (controller/backup_schedule.py)
decides from them whether a VM's backup is due.

Why not cron syntax: four shapes cover what backups need (Proxmox's and
Incus's common ones), read aloud as they are written, and leave no way to ask
for a backup every minute. A monthly slot on a day the month lacks (31, in
April) falls on the month's last day.
"""
from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from appliance.errors import Invalid

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
SHAPES = "hourly, daily HH:MM, weekly DAY HH:MM (DAY: mon..sun) or monthly D HH:MM (D: 1..31), UTC"
MAX_SCHEDULE = 32  # characters: the longest valid one is "monthly 31 23:59"
HOUR = 3600
DAY = 24 * HOUR
# The longest gap between two slots of each kind: what "overdue" is measured in.
INTERVALS = {"hourly": HOUR, "daily": DAY, "weekly": 7 * DAY, "monthly": 31 * DAY}

_TIME = r"(?P<hour>[01]\d|2[0-3]):(?P<minute>[0-5]\d)"
_SHAPES = {
    "hourly": re.compile(r"hourly"),
    "daily": re.compile(rf"daily {_TIME}"),
    "weekly": re.compile(rf"weekly (?P<day>{'|'.join(DAYS)}) {_TIME}"),
    "monthly": re.compile(rf"monthly (?P<mday>[1-9]|[12]\d|3[01]) {_TIME}"),
}

# The same, as one JSON Schema pattern (the OpenAPI document's).
PATTERN = re.sub(r"\(\?P<\w+>", "(?:",
                 "^(" + "|".join(shape.pattern for shape in _SHAPES.values()) + ")$")


@dataclass(frozen=True)
class Schedule:
    kind: str  # hourly, daily, weekly, monthly
    hour: int = 0
    minute: int = 0
    weekday: int = 0  # 0 = Monday (weekly)
    mday: int = 1  # day of the month (monthly)

    @property
    def interval(self) -> int:
        """Seconds between slots (monthly: the longest month's)."""
        return INTERVALS[self.kind]

    def last_slot(self, now: float) -> float:
        """The latest slot at or before `now` (epoch seconds)."""
        at = datetime.fromtimestamp(now, UTC)
        if self.kind == "hourly":
            slot = at.replace(minute=0, second=0, microsecond=0)
        elif self.kind == "daily":
            slot = self._at(at)
            if slot > at:
                slot -= timedelta(days=1)
        elif self.kind == "weekly":
            slot = self._at(at) - timedelta(days=(at.weekday() - self.weekday) % 7)
            if slot > at:
                slot -= timedelta(days=7)
        else:
            slot = self._in_month(at.year, at.month)
            if slot > at:
                year, month = (at.year, at.month - 1) if at.month > 1 else (at.year - 1, 12)
                slot = self._in_month(year, month)
        return slot.timestamp()

    def _at(self, day: datetime) -> datetime:
        return day.replace(hour=self.hour, minute=self.minute, second=0, microsecond=0)

    def _in_month(self, year: int, month: int) -> datetime:
        mday = min(self.mday, calendar.monthrange(year, month)[1])
        return datetime(year, month, mday, self.hour, self.minute, tzinfo=UTC)


def parse(text: object, field: str = "schedule") -> Schedule:
    """The schedule written in `text`, or Invalid naming the field."""
    if not isinstance(text, str) or len(text) > MAX_SCHEDULE:
        raise Invalid(f"must be {SHAPES}", field)
    kind = text.split(" ", 1)[0]
    match = _SHAPES[kind].fullmatch(text) if kind in _SHAPES else None
    if match is None:
        raise Invalid(f"must be {SHAPES}", field)
    found = match.groupdict()
    return Schedule(
        kind=kind,
        hour=int(found.get("hour") or 0),
        minute=int(found.get("minute") or 0),
        weekday=DAYS.index(found["day"]) if found.get("day") else 0,
        mday=int(found.get("mday") or 1),
    )


def interval_of(text: str) -> int:
    """Seconds between the slots of a (valid) schedule."""
    return parse(text).interval

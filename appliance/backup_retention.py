"""Which of a VM's backups a retention policy lets go: Proxmox's `prune-backups`
(keep-last, keep-hourly, keep-daily, keep-weekly, keep-monthly), then chain
closure. Pure: the caller deletes what `prune` names.

Proxmox's rules (PVE::Storage::prune_mark_backup_group, and the same in
proxmox-backup's prune.rs), followed here:
- the backups are walked newest first, once per option, in the order
  last, hourly, daily, weekly (ISO weeks), monthly;
- an option keeps the newest backup of each of its N most recent periods
  (hour, day, ...) that hold a backup not already settled; a period that
  already holds a backup kept by an earlier option is skipped, it does not use
  up one of the N; a further backup of a period this option already kept is
  marked for removal, so a later (coarser) option does not look at it;
- what no option kept is removed; with no option above 0 everything is kept.
Periods are UTC (the schedules are UTC too); Proxmox uses the host's local time.

The appliance's own rules on top:
- only backups the schedule made (`scheduled`) and that are `good` are
  candidates: a manual backup and a running one are never touched, nor counted;
- a failed backup is always removable (nothing of it is kept on the target);
- chain closure: a backup a kept one (candidate or not) depends on, through
  `parent` up to its full, is kept, whatever the options said;
- a backup created after `now` (a clock stepped back) is kept and not counted.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from appliance.model.states import BackupStatus

# The options in the order Proxmox applies them, each with the period it keeps one backup of.
_PERIODS: tuple[tuple[str, Callable[[datetime], tuple[int, ...]]], ...] = (
    ("keep_hourly", lambda t: (t.year, t.month, t.day, t.hour)),
    ("keep_daily", lambda t: (t.year, t.month, t.day)),
    ("keep_weekly", lambda t: tuple(t.isocalendar())[:2]),  # ISO year and week: Monday first
    ("keep_monthly", lambda t: (t.year, t.month)),
)
KEEP_OPTIONS = ("keep_last", *(name for name, _ in _PERIODS))


def _option(policy: Any, name: str) -> int:
    value = policy.get(name) if isinstance(policy, Mapping) else getattr(policy, name, None)
    return int(value or 0)


def _mark(newest_first: list[dict[str, Any]], marks: dict[str, bool], keep: int,
          period: Callable[[dict[str, Any]], Any]) -> None:
    """One option's pass (Proxmox's $prune_mark): True = keep, False = remove."""
    if keep <= 0:
        return
    already = {period(b) for b in newest_first if marks.get(b["id"]) is True}
    newly: set[Any] = set()
    for backup in newest_first:
        key = period(backup)
        if backup["id"] in marks or key in already:
            continue
        if key in newly:
            marks[backup["id"]] = False
            continue
        if len(newly) >= keep:
            break
        newly.add(key)
        marks[backup["id"]] = True


def _in(period: Callable[[datetime], tuple[int, ...]]) -> Callable[[dict[str, Any]], Any]:
    """The period a backup was made in (by its start, as Proxmox counts)."""
    return lambda backup: period(datetime.fromtimestamp(float(backup["created"]), UTC))


def _kept_by_options(candidates: list[dict[str, Any]], policy: Any) -> set[str]:
    if not any(_option(policy, name) > 0 for name in KEEP_OPTIONS):
        return {b["id"] for b in candidates}
    # Newest first; equal times in id order (ids are sortable by time) so the result is stable.
    newest_first = sorted(candidates, key=lambda b: (float(b["created"]), b["id"]), reverse=True)
    marks: dict[str, bool] = {}
    _mark(newest_first, marks, _option(policy, "keep_last"), lambda b: b["id"])
    for name, period in _PERIODS:
        _mark(newest_first, marks, _option(policy, name), _in(period))
    return {backup_id for backup_id, keep in marks.items() if keep}


def _with_ancestors(kept: Iterable[str], by_id: Mapping[str, dict[str, Any]]) -> set[str]:
    closed: set[str] = set()
    for backup_id in kept:
        current: str | None = backup_id
        while current and current not in closed:  # `closed` also ends a (corrupt) parent cycle
            closed.add(current)
            row = by_id.get(current)
            current = row.get("parent") if row else None
    return closed


def prune(backups: list[dict[str, Any]], policy: Any, now: float) -> list[str]:
    """The ids of the backups to delete, newest first: a backup is always deleted
    before the ones it depends on, so that a run cut short leaves no kept backup
    without its parent. `backups` are one VM's rows (id, created, status,
    scheduled, parent); `policy` a BackupPolicy or its dict."""
    by_id = {b["id"]: b for b in backups}
    failed = {b["id"] for b in backups if b.get("status") == BackupStatus.FAILED}
    candidates = [
        b for b in backups
        if b.get("status") == BackupStatus.GOOD and b.get("scheduled")
        and float(b["created"]) <= now
    ]
    candidate_ids = {b["id"] for b in candidates}
    kept = _kept_by_options(candidates, policy)
    # Everything not a candidate and not failed stays (manual, running, from the future).
    kept |= {b["id"] for b in backups if b["id"] not in candidate_ids and b["id"] not in failed}
    # A failed backup holds no data: nothing can depend on it, so nothing keeps it.
    kept = _with_ancestors(kept, by_id) - failed
    doomed = [b for b in backups if b["id"] not in kept]
    doomed.sort(key=lambda b: (float(b["created"]), b["id"]), reverse=True)
    return [b["id"] for b in doomed]

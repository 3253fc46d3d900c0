"""Scheduled backups: every SCHEDULE_SECONDS the controller looks at the VMs whose
effective backup policy (their own, else their project's) has a schedule, and
queues a backup operation for each whose last slot has passed with no backup
started since.

- A slot before the controller first saw the VM with that schedule (the policy
  was set, or changed, after it) is not a missed run: `backup_schedules.since`.
- After downtime only the latest slot is looked at, so a VM gets ONE catch-up
  backup however many slots passed; the record keeps the slot queued
  (`backup_schedules.queued`), and the next is due at the next slot.
- A backup started by hand after the slot counts too, and a backup operation
  still open (a long one running across a slot) holds the next one back.
- The operation is what a backup asked for by hand makes (service/backups.py),
  with "scheduled": true, into the target a manual one would use (the policy's,
  else the only one); the handler writes the backups row and, after a good
  backup, runs retention (appliance/backup_retention.py), which prunes only
  scheduled backups. No target to use: the operation is recorded failed with
  the reason, so that the user sees it (and the overdue alert fires in time).
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from appliance import backup_schedule
from appliance.errors import Invalid, NotFound
from appliance.model.states import OpKind, OpStatus
from appliance.service.backups import default_target
from appliance.store import Row, Store

log = logging.getLogger("appliance.controller")

SCHEDULE_SECONDS = 30.0


class BackupScheduler:
    def __init__(self, store: Store, clock: Callable[[], float],
                 nudge: Callable[[], None] = lambda: None):
        self.store = store
        self.clock = clock
        self.nudge = nudge
        self._next = 0.0

    def tick(self) -> None:
        """From the loop: a pass every SCHEDULE_SECONDS."""
        now = self.clock()
        if now >= self._next:
            self._next = now + SCHEDULE_SECONDS
            try:
                self.run(now)
            except Exception:  # noqa: BLE001 - the loop's other work must go on
                log.exception("backup schedule")

    def run(self, now: float) -> list[str]:
        """One pass; the ids of the VMs a backup was queued for."""
        scheduled = self.store.scheduled_vms()
        counted_from = self._record_schedules(scheduled, now)
        started = self.store.last_backup_started()
        queued = []
        for vm in scheduled:
            text = vm["policy"]["schedule"]
            try:
                slot = backup_schedule.parse(text).last_slot(now)
            except Invalid:  # stored policies are validated; a bad one must not stop the rest
                log.warning("VM %s: backup schedule %r not understood", vm["name"], text)
                continue
            if slot <= counted_from[vm["id"]] or started.get(vm["id"], float("-inf")) >= slot:
                continue
            if self._queue(vm, text, slot):
                queued.append(vm["id"])
        if queued:
            self.nudge()
        return queued

    def _record_schedules(self, scheduled: list[Row], now: float) -> dict[str, float]:
        """VM id -> the instant after which a slot is due: when its current schedule
        was first seen, or the slot last queued for it, whichever is later (the
        record, not the operation's time, says a slot was queued: one catch-up
        whatever the clocks). The records of VMs no longer scheduled are dropped
        (a schedule set again starts afresh)."""
        records = self.store.backup_schedules()
        counted_from: dict[str, float] = {}
        with self.store.transaction():
            for vm in scheduled:
                record = records.get(vm["id"])
                text = vm["policy"]["schedule"]
                if record is None or record["schedule"] != text:
                    self.store.set_backup_schedule(vm["id"], text, now)
                    counted_from[vm["id"]] = now
                else:
                    queued = record["queued"]
                    counted_from[vm["id"]] = float(
                        record["since"] if queued is None else max(record["since"], queued))
            self.store.drop_backup_schedules(set(records) - set(counted_from))
        return counted_from

    def _queue(self, vm: Row, text: str, slot: float) -> bool:
        with self.store.transaction():
            row = self.store.get_vm_by_id(vm["id"])
            if row is None or row["desired_state"] == "deleted":
                return False
            if row["observed_state"] in ("suspended", "shelved"):
                return False  # its disks wait with its saved memory, or nowhere defined
            if self.store.open_operation(vm["id"], OpKind.BACKUP) is not None:
                return False
            try:  # as a backup asked for by hand: the policy's target, else the only one
                target: str | None = default_target(self.store, row, None)
                refused = None
            except (Invalid, NotFound) as err:
                target, refused = None, err.reason
            params: dict[str, Any] = {"target": target, "full": False, "scheduled": True,
                                      "by": "schedule", "slot": slot}
            op = self.store.add_operation(str(uuid.uuid4()), row, OpKind.BACKUP, params)
            self.store.mark_backup_queued(row["id"], slot)
            self.store.add_event("backup-scheduled",
                                 f"backup of {row['name']} queued by its schedule ({text})",
                                 row, op["id"])
            if refused is not None:
                # Failed at once, as the operation runner records a failure: the run is
                # counted (no retry every pass) and the user sees why in its error.
                self.store.update_vm(row["id"], bump=False, last_error=f"backup: {refused}")
                self.store.add_event("operation-failed", f"backup failed: {refused}", row, op["id"])
                self.store.update_operation(op["id"], status=OpStatus.FAILED.value, error=refused,
                                            finished=self.clock())
        return True

"""Scheduled backups: every SCHEDULE_SECONDS the controller looks at the VMs whose
effective backup policy (their own, else their project's) has a schedule, and
queues a backup operation for each whose last slot has passed with no backup
started since.

- A slot before the controller first saw the VM with that schedule (the policy
  was set, or changed, after it) is not a missed run: `backup_schedules.since`.
- After downtime only the latest slot is looked at, so a VM gets ONE catch-up
  backup however many slots passed; its operation's creation then counts as
  the start of a backup since that slot, and the next is due at the next slot.
- A backup started by hand after the slot counts too, and a backup operation
  still open (a long one running across a slot) holds the next one back.
- The operation is what the handler of part B runs (OpKind.BACKUP with params
  {"target": the policy's or null, "scheduled": true}); the handler writes the
  backups row and, after a good backup, runs retention (appliance/backup_retention.py).
"""
from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from appliance import backup_schedule
from appliance.errors import Invalid
from appliance.model.states import OpKind
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
        since = self._record_schedules(scheduled, now)
        started = self.store.last_backup_started()
        queued = []
        for vm in scheduled:
            text = vm["policy"]["schedule"]
            try:
                slot = backup_schedule.parse(text).last_slot(now)
            except Invalid:  # stored policies are validated; a bad one must not stop the rest
                log.warning("VM %s: backup schedule %r not understood", vm["name"], text)
                continue
            if slot <= since[vm["id"]] or started.get(vm["id"], float("-inf")) >= slot:
                continue
            if self._queue(vm, text, slot):
                queued.append(vm["id"])
        if queued:
            self.nudge()
        return queued

    def _record_schedules(self, scheduled: list[Row], now: float) -> dict[str, float]:
        """VM id -> since when its current schedule has been seen; the records of
        VMs no longer scheduled are dropped (a schedule set again starts afresh)."""
        records = self.store.backup_schedules()
        since: dict[str, float] = {}
        with self.store.transaction():
            for vm in scheduled:
                record = records.get(vm["id"])
                text = vm["policy"]["schedule"]
                if record is None or record["schedule"] != text:
                    self.store.set_backup_schedule(vm["id"], text, now)
                    since[vm["id"]] = now
                else:
                    since[vm["id"]] = float(record["since"])
            self.store.drop_backup_schedules(set(records) - set(since))
        return since

    def _queue(self, vm: Row, text: str, slot: float) -> bool:
        with self.store.transaction():
            row = self.store.get_vm_by_id(vm["id"])
            if row is None or row["desired_state"] == "deleted":
                return False
            if self.store.open_operation(vm["id"], OpKind.BACKUP) is not None:
                return False
            params: dict[str, Any] = {"target": vm["policy"].get("target"), "scheduled": True,
                                      "by": "schedule", "slot": slot}
            op = self.store.add_operation(str(uuid.uuid4()), row, OpKind.BACKUP, params)
            self.store.add_event("backup-scheduled",
                                 f"backup of {row['name']} queued by its schedule ({text})",
                                 row, op["id"])
        return True

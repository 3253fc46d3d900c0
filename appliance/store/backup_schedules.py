"""What the backup schedule (controller/backup_schedule.py) and the exporter read
about backups: the VMs with a scheduled policy, when each last had a backup
started, its last good backup; and the schedule records (`backup_schedules`:
since when the controller has seen a VM's schedule)."""
from __future__ import annotations

import json
from collections.abc import Iterable

from appliance.model.states import BackupStatus, OpKind
from appliance.store.base import Row, StoreBase, marks

# A VM whose own policy has a schedule, or that has no policy and whose project's has.
# Two parts, so that neither reads every VM's spec (twice a minute: O(VMs) of the
# controller's idle time, issue 17): the VMs with a schedule of their own through a
# partial index (schema v19; the query names its WHERE term exactly), and those of
# the projects whose policy has one through the (project, name) index.
OWN_SCHEDULE = "json_extract(spec, '$.backup.schedule') IS NOT NULL"
_SCHEDULED_VMS = (  # CROSS JOIN: SQLite reads projects first
    "SELECT id, name, project, json_extract(spec, '$.backup') AS own, NULL FROM vms "  # noqa: S608 - constants
    f"WHERE {OWN_SCHEDULE} AND desired_state != 'deleted' "
    "UNION ALL "
    "SELECT v.id, v.name, v.project, NULL, p.backup FROM projects p CROSS JOIN vms v "
    "ON v.project = p.name WHERE json_extract(p.backup, '$.schedule') IS NOT NULL "
    "AND json_extract(v.spec, '$.backup') IS NULL AND v.desired_state != 'deleted'"
)


class BackupScheduleRecords(StoreBase):
    def scheduled_vms(self) -> list[Row]:
        """{id, name, project, policy}: every VM (not being deleted) whose effective
        backup policy (its own, else its project's) has a schedule; one query."""
        rows = []
        for row in self.db.execute(_SCHEDULED_VMS).fetchall():
            vm_id, name, project, own, project_policy = row
            policy = json.loads(own) if own is not None else json.loads(project_policy)
            rows.append({"id": vm_id, "name": name, "project": project, "policy": policy})
        return rows

    def last_backup_started(self) -> dict[str, float]:
        """VM id -> when its newest backup started: a backup row's or a backup
        operation's creation (a backup asked for by hand after a slot counts for
        that slot)."""
        sql = (
            "SELECT vm_id, max(created) FROM (SELECT vm_id, created FROM backups "
            "UNION ALL SELECT vm_id, created FROM operations WHERE kind = ?) GROUP BY vm_id"
        )
        return {str(vm_id): float(when)
                for vm_id, when in self.db.execute(sql, [str(OpKind.BACKUP)])}

    def last_good_backups(self) -> list[Row]:
        """Each VM's newest good backup, by the VM's current name (a deleted VM's
        backups are listed, not measured): {vm_id, vm_name, project, created,
        finished, size}."""
        sql = (
            "SELECT b.vm_id, v.name, v.project, b.created, b.finished, b.size FROM backups b "
            "JOIN vms v ON v.id = b.vm_id WHERE b.status = ? AND b.created = "
            "(SELECT max(created) FROM backups WHERE vm_id = b.vm_id AND status = ?) "
            "GROUP BY b.vm_id"
        )
        good = str(BackupStatus.GOOD)
        columns = ("vm_id", "vm_name", "project", "created", "finished", "size")
        return [dict(zip(columns, row, strict=True))
                for row in self.db.execute(sql, [good, good]).fetchall()]

    # -- the controller's schedule records ------------------------------------------------
    def backup_schedules(self) -> dict[str, Row]:
        """VM id -> {vm_id, schedule, since, queued}."""
        return {row["vm_id"]: row for row in self._rows("backup_schedules", "")}

    def set_backup_schedule(self, vm_id: str, schedule: str, since: float) -> None:
        """A schedule seen for the first time (or changed): no slot of it queued yet."""
        self.db.execute(
            "INSERT INTO backup_schedules (vm_id, schedule, since, queued) VALUES (?, ?, ?, NULL) "
            "ON CONFLICT (vm_id) DO UPDATE SET schedule = excluded.schedule, "
            "since = excluded.since, queued = NULL",
            [vm_id, schedule, since],
        )

    def mark_backup_queued(self, vm_id: str, slot: float) -> None:
        self.db.execute("UPDATE backup_schedules SET queued = ? WHERE vm_id = ?", [slot, vm_id])

    def drop_backup_schedules(self, vm_ids: Iterable[str]) -> None:
        ids = list(vm_ids)
        if ids:
            self.db.execute(
                f"DELETE FROM backup_schedules WHERE vm_id IN ({marks(ids)})", ids  # noqa: S608 - ? marks only
            )

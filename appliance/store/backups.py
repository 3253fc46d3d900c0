"""The backup records: targets (directories backups are written to) and
backups (one row per backup, written before its job starts; it outlives its VM)."""

from __future__ import annotations

import json
from typing import Any

from appliance.errors import NotFound
from appliance.model.states import BackupStatus
from appliance.store.base import Row, StoreBase, marks


def _decode_backup(row: Row) -> Row:
    row = dict(row)
    row["disks"] = json.loads(row["disks"]) if row.get("disks") else []
    row["quiesced"] = bool(row.get("quiesced"))
    row["scheduled"] = bool(row.get("scheduled"))
    return row


class BackupRecords(StoreBase):
    # -- targets --------------------------------------------------------------------------
    def list_backup_targets(self) -> list[Row]:
        return self._rows("backup_targets", "", order_by="name")

    def get_backup_target(self, name: str) -> Row:
        rows = self._rows("backup_targets", "name = ?", [name])
        if not rows:
            raise NotFound(f"no backup target {name!r}", "target")
        return rows[0]

    def backup_target_exists(self, name: str) -> bool:
        return bool(self._rows("backup_targets", "name = ?", [name], select="name"))

    def insert_backup_target(self, row: Row) -> None:
        self.db.table("backup_targets").insert(row)

    def delete_backup_target(self, name: str) -> None:
        self.db.execute("DELETE FROM backup_targets WHERE name = ?", [name])

    # -- backups --------------------------------------------------------------------------
    def insert_backup(self, row: Row) -> None:
        row = dict(row)
        row["disks"] = json.dumps(row.get("disks") or [])
        row["quiesced"] = int(bool(row.get("quiesced")))
        row["scheduled"] = int(bool(row.get("scheduled")))
        self.db.table("backups").insert(row)

    def update_backup(self, backup_id: str, **fields: Any) -> None:
        if "disks" in fields:
            fields["disks"] = json.dumps(fields["disks"])
        for flag in ("quiesced", "scheduled"):
            if flag in fields:
                fields[flag] = int(bool(fields[flag]))
        self._update("backups", "id", backup_id, fields)

    def get_backup(self, backup_id: str) -> Row:
        rows = self._rows("backups", "id = ?", [backup_id])
        if not rows:
            raise NotFound(f"no backup {backup_id!r}", "backup")
        return _decode_backup(rows[0])

    def find_backup(self, backup_id: str) -> Row | None:
        rows = self._rows("backups", "id = ?", [backup_id])
        return _decode_backup(rows[0]) if rows else None

    def list_backups(
        self,
        project: str | None = None,
        vm_name: str | None = None,
        vm_id: str | None = None,
        target: str | None = None,
        statuses: list[str] | None = None,
        limit: int = 5000,
    ) -> list[Row]:
        """Backups, newest first, filtered by whatever is named."""
        where: list[str] = []
        params: list[object] = []
        for column, value in (("project", project), ("vm_name", vm_name), ("vm_id", vm_id),
                              ("target", target)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if statuses is not None:
            where.append(f"status IN ({marks(statuses)})")
            params.extend(statuses)
        rows = self._rows("backups", " AND ".join(where), params,
                          order_by="created DESC, rowid DESC", limit=limit)
        return [_decode_backup(r) for r in rows]

    def latest_good_backup(self, vm_id: str, target: str) -> Row | None:
        """The newest good backup of a VM in a target: the next incremental's parent."""
        rows = self.list_backups(vm_id=vm_id, target=target, statuses=[BackupStatus.GOOD],
                                 limit=1)
        return rows[0] if rows else None

    def chain_length(self, chain: str) -> int:
        """How many good backups a chain has (its full included)."""
        found = self.db.execute("SELECT count(*) FROM backups WHERE chain = ? AND status = ?",
                                [chain, BackupStatus.GOOD]).fetchone()
        return int(found[0])

    def dependents(self, backup_id: str) -> list[Row]:
        """Backups (not failed) whose parent is this one."""
        rows = self._rows("backups", "parent = ? AND status != ?", [backup_id, BackupStatus.FAILED])
        return [_decode_backup(r) for r in rows]

    def backups_in_target(self, target: str) -> int:
        found = self.db.execute("SELECT count(*) FROM backups WHERE target = ?",
                                [target]).fetchone()
        return int(found[0])

    def delete_backup_row(self, backup_id: str) -> None:
        self.db.execute("DELETE FROM backups WHERE id = ?", [backup_id])

    def delete_backups_in_target(self, target: str) -> int:
        cursor = self.db.execute("DELETE FROM backups WHERE target = ?", [target])
        return int(cursor.rowcount)

    def snapshot_count(self, vm_id: str) -> int:
        """How many snapshots a VM has (they live in its disks: an in-place restore
        would drop them)."""
        found = self.db.execute("SELECT count(*) FROM snapshots WHERE vm_id = ?",
                                [vm_id]).fetchone()
        return int(found[0])

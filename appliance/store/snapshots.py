"""The snapshot records: one row per snapshot of a VM, libvirt's XML of it kept
for a redefine on a host whose libvirt lacks it (schema _v7_backups)."""

from __future__ import annotations

from typing import Any

from appliance.model import SnapshotState
from appliance.store.base import Row, StoreBase


class SnapshotRecords(StoreBase):
    def insert_snapshot(self, row: Row) -> None:
        self.db.table("snapshots").insert(row)

    def get_snapshot(self, vm_id: str, name: str) -> Row | None:
        rows = self._rows("snapshots", "vm_id = ? AND name = ?", [vm_id, name])
        return rows[0] if rows else None

    def list_snapshots(self, vm_id: str, with_xml: bool = False) -> list[Row]:
        """A VM's snapshots, oldest first (so a parent comes before its children);
        libvirt's XML of each (a few kB, the domain inside) only when asked."""
        select = "*" if with_xml else ", ".join(
            sorted(c for c in self.columns("snapshots") if c != "xml"))
        return self._rows("snapshots", "vm_id = ?", [vm_id], order_by="created, rowid",
                          select=select)

    def count_snapshots(self, vm_id: str) -> int:
        found = self.db.execute("SELECT COUNT(*) FROM snapshots WHERE vm_id = ?", [vm_id])
        return int(found.fetchone()[0])

    def has_ready_snapshots(self, vm_id: str) -> bool:
        found = self.db.execute(
            "SELECT 1 FROM snapshots WHERE vm_id = ? AND state IN (?, ?) LIMIT 1",
            [vm_id, SnapshotState.READY, SnapshotState.DELETING],
        )
        return found.fetchone() is not None

    def update_snapshot(self, snapshot_id: str, **fields: Any) -> None:
        self._update("snapshots", "id", snapshot_id, fields)

    def set_current_snapshot(self, vm_id: str, name: str | None) -> None:
        """Mark one snapshot (or, None, none) as the VM's current one, as libvirt does."""
        with self.transaction() as db:
            db.execute("UPDATE snapshots SET current = (name IS ?) WHERE vm_id = ?", [name, vm_id])

    def reparent_snapshots(self, vm_id: str, old_parent: str, new_parent: str | None) -> None:
        """After a delete: its children's parent is its own parent (libvirt's merge)."""
        self.db.execute(
            "UPDATE snapshots SET parent = ? WHERE vm_id = ? AND parent = ?",
            [new_parent, vm_id, old_parent],
        )

    def delete_snapshot(self, snapshot_id: str) -> None:
        self.db.execute("DELETE FROM snapshots WHERE id = ?", [snapshot_id])

"""The event records: what happened, to which VM, in order."""

from __future__ import annotations

from appliance.store.base import Row, StoreBase


class EventRecords(StoreBase):
    def add_event(
        self, kind: str, message: str, vm: Row | None = None, operation: str | None = None
    ) -> None:
        self.db.table("events").insert(
            {
                "time": self.clock(),
                "vm_id": vm["id"] if vm else None,
                "vm_name": vm["name"] if vm else None,
                "kind": kind,
                "message": message,
                "operation": operation,
            }
        )

    def list_events(self, vm_id: str | None = None, since: int = 0, limit: int = 1000) -> list[Row]:
        """The newest `limit` events after `since` (of one VM), oldest first."""
        where = "id > ?"
        params: list[object] = [since]
        if vm_id is not None:
            where += " AND vm_id = ?"
            params.append(vm_id)
        newest = self._rows("events", where, params, order_by="id DESC", limit=limit)
        return newest[::-1]

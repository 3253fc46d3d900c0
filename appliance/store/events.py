"""The event records: what happened, to which VM, in order."""

from __future__ import annotations

from appliance.store.base import Row, StoreBase


class EventRecords(StoreBase):
    def add_event(
        self,
        kind: str,
        message: str,
        vm: Row | None = None,
        operation: str | None = None,
        project: str | None = None,
    ) -> None:
        """An event of a VM is its project's; one of a server group names the
        group's `project`; one of neither (hosts, images) is the appliance's
        (project NULL), seen in every project."""
        if vm is not None:
            project = self.project_of_vm(vm) or project
        self.db.table("events").insert(
            {
                "time": self.clock(),
                "vm_id": vm["id"] if vm else None,
                "vm_name": vm["name"] if vm else None,
                "kind": kind,
                "message": message,
                "operation": operation,
                "project": project,
            }
        )

    def list_events(
        self,
        vm_id: str | None = None,
        since: int = 0,
        limit: int = 1000,
        project: str | None = None,
    ) -> list[Row]:
        """The newest `limit` events after `since` (of one VM; of one project and
        the appliance's own, if a project is named), oldest first."""
        where = "id > ?"
        params: list[object] = [since]
        if vm_id is not None:
            where += " AND vm_id = ?"
            params.append(vm_id)
        if project is not None:
            where += " AND (project = ? OR project IS NULL)"
            params.append(project)
        newest = self._rows("events", where, params, order_by="id DESC", limit=limit)
        return newest[::-1]

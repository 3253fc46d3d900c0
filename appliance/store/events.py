"""The event records: what happened, to which VM, by whom, in order.

Every event names who caused it (actor, the credential they used, and from
where: a client address, "mount", or "local" for the appliance itself), taken
from the caller of the request it happens in (appliance/access: caller()), so
no call site passes it and none can forget it. Audit events (a write request
and its outcome, appliance/access/audit.py) also carry `result`.
"""

from __future__ import annotations

from appliance.access.principal import ADMIN_EVENTS, Principal, caller
from appliance.store.base import Row, StoreBase


def credential_of(principal: Principal) -> str | None:
    """The credential that named the caller: a token's id (REST), a Unix uid (mount)."""
    if principal.token_id is not None:
        return f"token {principal.token_id}"
    if principal.uid is not None:
        return f"uid {principal.uid}"
    return None


class EventRecords(StoreBase):
    def add_event(
        self,
        kind: str,
        message: str,
        vm: Row | None = None,
        operation: str | None = None,
        project: str | None = None,
        result: str | None = None,
        by: Principal | None = None,
    ) -> None:
        """An event of a VM is its project's; one of a server group names the
        group's `project`; one of neither (hosts, images) is the appliance's
        (project NULL), seen in every project. `by`: who caused it (default: the
        caller of this request); `result`: an audit event's outcome."""
        who = caller() if by is None else by
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
                "actor": who.user,
                "source": who.source,
                "credential": credential_of(who),
                "result": result,
            }
        )

    def list_events(
        self,
        vm_id: str | None = None,
        since: int = 0,
        limit: int = 1000,
        project: str | None = None,
        actor: str | None = None,
        admin_events: bool = False,
    ) -> list[Row]:
        """The newest `limit` events after `since` (of one VM; of one project and
        the appliance's own, if a project is named, and with `admin_events` those
        of users, tokens and projects too (ADMIN_EVENTS); by one actor), oldest first."""
        where = "id > ?"
        params: list[object] = [since]
        if vm_id is not None:
            where += " AND vm_id = ?"
            params.append(vm_id)
        if project is not None:
            where += " AND (project IN (?, ?) OR project IS NULL)"
            params += [project, ADMIN_EVENTS if admin_events else project]
        if actor is not None:
            where += " AND actor = ?"
            params.append(actor)
        newest = self._rows("events", where, params, order_by="id DESC", limit=limit)
        return newest[::-1]

    def prune_events(self, keep: int) -> int:
        """Drop all but the newest `keep` events (ids only grow: one indexed DELETE);
        the number dropped."""
        cursor = self.db.execute(
            "DELETE FROM events WHERE id <= (SELECT max(id) FROM events) - ?", [int(keep)]
        )
        return int(cursor.rowcount)

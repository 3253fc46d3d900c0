"""The operation records: what was asked of a VM, and how it went."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from appliance.access.principal import DEFAULT_PROJECT
from appliance.errors import NotFound
from appliance.model import OPEN_OP_STATES, OpKind, OpStatus
from appliance.model.states import BOOTING
from appliance.store.base import Row, StoreBase, marks

_OPEN = [str(s) for s in OPEN_OP_STATES]


def _decode_op(row: Row) -> Row:
    row = dict(row)
    row["params"] = json.loads(row["params"] or "{}")
    return row


class OperationRecords(StoreBase):
    def _operations(
        self,
        where: str,
        params: list[object],
        limit: int | None,
        order_by: str = "created DESC, rowid DESC",
    ) -> list[Row]:
        return [
            _decode_op(r)
            for r in self._rows("operations", where, params, order_by=order_by, limit=limit)
        ]

    def insert_operation(self, row: Row) -> None:
        row = dict(row)
        row["params"] = json.dumps(row.get("params") or {})
        self.db.table("operations").insert(row)

    def add_operation(
        self, op_id: str, vm: Row, kind: OpKind | str, params: dict[str, Any] | None = None
    ) -> Row:
        """Record a pending operation on a VM (of the VM's project); return it as the
        service shows it."""
        op = {
            "id": op_id,
            "vm_id": vm["id"],
            "vm_name": vm["name"],
            "project": self.project_of_vm(vm) or DEFAULT_PROJECT,
            "kind": str(kind),
            "status": OpStatus.PENDING.value,
            "progress": 0,
            "bytes_done": None,  # a copy's progress (backup, restore, clone), when it has one
            "bytes_total": None,
            "params": params or {},
            "error": None,
            "created": self.clock(),
            "started": None,
            "finished": None,
        }
        self.insert_operation(op)
        return op

    def get_operation(self, op_id: str) -> Row:
        rows = self._operations("id = ?", [op_id], limit=None)
        if not rows:
            raise NotFound(f"no operation {op_id!r}", "id")
        return rows[0]

    def list_operations(
        self,
        vm_name: str | None = None,
        status: OpStatus | str | None = None,
        limit: int = 200,
        project: str | None = None,
    ) -> list[Row]:
        """Operations, newest first: all (of one project, if named), of one VM (by
        name), in one status."""
        where, params = [], []
        if project is not None:
            where.append("project = ?")
            params.append(project)
        if vm_name:
            where.append("vm_name = ?")
            params.append(vm_name)
        if status:
            where.append("status = ?")
            params.append(str(status))
        return self._operations(" AND ".join(where), list(params), limit)

    def operations_of_vm(
        self,
        vm_id: str,
        statuses: Iterable[OpStatus] | None = None,
        kinds: Iterable[OpKind] | None = None,
        limit: int = 200,
    ) -> list[Row]:
        """One VM's operations, newest first; only these statuses, these kinds."""
        where, params = "vm_id = ?", [vm_id]
        for column, values in (("status", statuses), ("kind", kinds)):
            if values is not None:
                chosen = [str(v) for v in values]
                where += f" AND {column} IN ({marks(chosen)})"
                params += chosen
        return self._operations(where, list(params), limit)

    def busy_operation(self, vm_id: str) -> Row | None:
        """The VM's newest operation still pending or running, if any."""
        ops = self.operations_of_vm(vm_id, OPEN_OP_STATES, limit=1)
        return ops[0] if ops else None

    def open_operation(self, vm_id: str, kind: OpKind) -> Row | None:
        """The VM's newest operation of this kind still pending or running, if any."""
        ops = self.operations_of_vm(vm_id, OPEN_OP_STATES, [kind], limit=1)
        return ops[0] if ops else None

    def booting(self, vm_id: str) -> bool:
        """Whether an open operation of the VM is marked booting: it claims its vCPUs
        and memory on its host whatever its states say (model/states.py BOOTING)."""
        sql = (f"SELECT 1 FROM operations WHERE vm_id = ? AND status IN ({marks(_OPEN)}) "  # noqa: S608 - marks only
               f"AND coalesce(json_extract(params, '$.{BOOTING}'), 0) LIMIT 1")
        return self.db.execute(sql, [vm_id, *_OPEN]).fetchone() is not None

    def mark_booting(self, op: Row) -> None:
        """Mark the operation booting (its `params` in the caller's dict too, so that a
        later rewrite of them keeps the mark), inside the caller's transaction."""
        if not op["params"].get(BOOTING):
            op["params"] = {**op["params"], BOOTING: True}
            self.update_operation(op["id"], params=op["params"])

    def vm_ids_with_open_operations(self) -> set[str]:
        """Ids of the VMs with a pending or running operation (one query, for a whole resync)."""
        sql = f"SELECT DISTINCT vm_id FROM operations WHERE status IN ({marks(_OPEN)})"  # noqa: S608 - marks only
        return {str(r[0]) for r in self.db.execute(sql, _OPEN)}

    def has_open_operations(self, vm_id: str) -> bool:
        return (
            self.db.execute(
                f"SELECT 1 FROM operations WHERE vm_id = ? AND status IN ({marks(_OPEN)}) LIMIT 1",  # noqa: S608 - marks only
                [vm_id, *_OPEN],
            ).fetchone()
            is not None
        )

    def has_pending(self, vm_id: str, kind: OpKind) -> bool:
        return (
            self.db.execute(
                "SELECT 1 FROM operations WHERE vm_id = ? AND kind = ? AND status = ? LIMIT 1",
                [vm_id, kind, OpStatus.PENDING],
            ).fetchone()
            is not None
        )

    def next_operations(self) -> list[Row]:
        """Unfinished operations, oldest first."""
        return self._operations(
            f"status IN ({marks(_OPEN)})", list(_OPEN), None, order_by="created, rowid"
        )

    def claim_operation(self, op_id: str, now: float) -> bool:
        """Mark an unfinished operation running; False if it finished (or was
        cancelled) since it was listed, so that it never runs twice."""
        cursor = self.db.execute(
            f"UPDATE operations SET status = ?, started = coalesce(started, ?) "  # noqa: S608 - marks only
            f"WHERE id = ? AND status IN ({marks(_OPEN)})",
            [OpStatus.RUNNING, now, op_id, *_OPEN],
        )
        return int(cursor.rowcount) == 1

    def update_operation(self, op_id: str, **fields: Any) -> None:
        if "params" in fields:
            fields["params"] = json.dumps(fields["params"])
        self._update("operations", "id", op_id, fields)

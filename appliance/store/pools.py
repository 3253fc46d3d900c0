"""The replica pool records (KubeVirt's VirtualMachinePool): one row per pool,
its template as JSON, and the questions asked about its members (VM rows whose
`pool` is the pool's id)."""

from __future__ import annotations

import json
from typing import Any

from appliance.errors import NotFound
from appliance.store.base import Row, StoreBase


def _decode_pool(row: Row) -> Row:
    row = dict(row)
    row["template"] = json.loads(row["template"])
    row["paused"] = bool(row.get("paused"))
    row["rollout"] = json.loads(row["rollout"]) if row.get("rollout") else None
    row["message"] = row.get("message") or ""
    return row


def _encode_pool(fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    if "template" in fields:
        fields["template"] = json.dumps(fields["template"], sort_keys=True)
    if "rollout" in fields and fields["rollout"] is not None:
        fields["rollout"] = json.dumps(fields["rollout"], sort_keys=True)
    if "paused" in fields:
        fields["paused"] = int(bool(fields["paused"]))
    return fields


class PoolRecords(StoreBase):
    def list_pools(self, project: str | None = None) -> list[Row]:
        """Every pool (of one project, if named), by name."""
        if project is None:
            return [_decode_pool(r) for r in self._rows("pools", "", order_by="name")]
        return [_decode_pool(r)
                for r in self._rows("pools", "project = ?", [project], order_by="name")]

    def get_pool(self, project: str, name: str) -> Row:
        rows = self._rows("pools", "project = ? AND name = ?", [project, name])
        if not rows:
            raise NotFound(f"no pool named {name!r}", "name")
        return _decode_pool(rows[0])

    def get_pool_by_id(self, pool_id: str) -> Row | None:
        rows = self._rows("pools", "id = ?", [pool_id])
        return _decode_pool(rows[0]) if rows else None

    def pool_exists(self, project: str, name: str) -> bool:
        found = self.db.execute(
            "SELECT 1 FROM pools WHERE project = ? AND name = ?", [project, name]).fetchone()
        return found is not None

    def count_pools(self, project: str) -> int:
        found = self.db.execute("SELECT count(*) FROM pools WHERE project = ?",
                                [project]).fetchone()
        return int(found[0])

    def insert_pool(self, row: Row) -> None:
        self.db.table("pools").insert(_encode_pool(row))

    def update_pool(self, pool_id: str, **fields: Any) -> None:
        fields["updated"] = self.clock()
        if self._update("pools", "id", pool_id, _encode_pool(fields)) == 0:
            raise NotFound(f"no pool with id {pool_id}", "name")

    def delete_pool(self, pool_id: str) -> None:
        self.db.execute("DELETE FROM pools WHERE id = ?", [pool_id])

    def pool_members(self, pool_id: str) -> list[Row]:
        """The pool's member VMs (without their domain XML), by ordinal; those being
        deleted too."""
        select = ", ".join(sorted(c for c in self.columns("vms") if c != "domain_xml"))
        rows = self._select(
            f"SELECT {select} FROM vms WHERE pool = ? ORDER BY pool_ordinal",  # noqa: S608 - columns are the table's own
            [pool_id])
        for row in rows:
            row["spec"] = json.loads(row["spec"])
            row["restart_required"] = bool(row.get("restart_required"))
        return rows

    def names_not_in_pool(self, project: str, prefix: str, pool_id: str) -> set[str]:
        """Names starting with prefix of the project's VMs that are not this pool's
        members (a stranger's name is never taken over by the pool)."""
        return {name for (name,) in self.db.execute(
            "SELECT name FROM vms WHERE project = ? AND substr(name, 1, ?) = ? "
            "AND (pool IS NULL OR pool != ?)", [project, len(prefix), prefix, pool_id])}

"""The records of what VMs run on and from: hosts, images, server groups."""

from __future__ import annotations

import json
from typing import Any

from appliance.errors import NotFound
from appliance.store.base import Row, StoreBase


def _decode_host(row: Row) -> Row:
    row = dict(row)
    row["info"] = json.loads(row["info"] or "{}")
    row["labels"] = json.loads(row["labels"] or "{}")
    return row


def _encode_host(fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    if "info" in fields and not isinstance(fields["info"], str):
        fields["info"] = json.dumps(fields["info"])
    if "labels" in fields and not isinstance(fields["labels"], str):
        fields["labels"] = json.dumps(fields["labels"], sort_keys=True)
    return fields


class HostRecords(StoreBase):
    def upsert_host(self, row: Row) -> None:
        with self.transaction() as db:
            db.table("hosts").upsert(_encode_host(row), pk="name")

    def list_hosts(self) -> list[Row]:
        """Every host, by name."""
        return [_decode_host(r) for r in self._rows("hosts", "", order_by="name")]

    def get_host(self, name: str) -> Row:
        rows = self._rows("hosts", "name = ?", [name])
        if not rows:
            raise NotFound(f"no host named {name!r}", "host")
        return _decode_host(rows[0])

    def host_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM hosts WHERE name = ?", [name]).fetchone() is not None

    def update_host(self, name: str, **fields: Any) -> None:
        self._update("hosts", "name", name, _encode_host(fields))

    def delete_host(self, name: str) -> None:
        self.db.execute("DELETE FROM hosts WHERE name = ?", [name])


class ImageRecords(StoreBase):
    def get_image(self, name: str) -> Row:
        rows = self._rows("images", "name = ?", [name])
        if not rows:
            raise NotFound(f"no image named {name!r}", "image")
        return rows[0]

    def image_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM images WHERE name = ?", [name]).fetchone() is not None

    def image_virtual_size(self, name: str) -> int:
        """The image's virtual size in bytes; 0 for an image the store does not know."""
        row = self.db.execute("SELECT virtual_size FROM images WHERE name = ?", [name]).fetchone()
        return int(row[0] or 0) if row else 0

    def list_images(self) -> list[Row]:
        return self._rows("images", "", order_by="name")

    def insert_image(self, row: Row) -> None:
        self.db.table("images").insert(row)

    def delete_image(self, name: str) -> None:
        self.db.execute("DELETE FROM images WHERE name = ?", [name])


def _group(row: Row) -> Row:
    """A group's row with its firewall rules as a list (issue 15; none: [])."""
    return {**row, "firewall": json.loads(row["firewall"]) if row.get("firewall") else []}


class GroupRecords(StoreBase):
    """Server groups belong to a project: (project, name) is the key, and a VM's
    spec names a group of its own project."""

    def list_groups(self, project: str) -> list[Row]:
        return [_group(r) for r in self._rows("groups", "project = ?", [project],
                                              order_by="name")]

    def get_group(self, project: str, name: str) -> Row:
        rows = self._rows("groups", "project = ? AND name = ?", [project, name])
        if not rows:
            raise NotFound(f"no server group named {name!r}", "group")
        return _group(rows[0])

    def set_group_firewall(self, project: str, name: str, rules: list[dict[str, Any]]) -> None:
        self.db.execute("UPDATE groups SET firewall = ? WHERE project = ? AND name = ?",
                        [json.dumps(rules) if rules else None, project, name])

    def group_exists(self, project: str, name: str) -> bool:
        found = self.db.execute(
            "SELECT 1 FROM groups WHERE project = ? AND name = ?", [project, name]
        ).fetchone()
        return found is not None

    def insert_group(self, row: Row) -> None:
        rules = row.get("firewall")
        self.db.table("groups").insert({**row, "firewall": json.dumps(rules) if rules else None})

    def delete_group(self, project: str, name: str) -> None:
        self.db.execute("DELETE FROM groups WHERE project = ? AND name = ?", [project, name])

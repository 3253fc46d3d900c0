"""The SSH key records (schema v16's `keys`): a user's OpenSSH public keys by name."""

from __future__ import annotations

from appliance.store.base import Row, StoreBase


class KeyRecords(StoreBase):
    def list_keys(self, user: str | None) -> list[Row]:
        """One user's keys by name; None: everyone's, by user and name."""
        if user is None:
            return self._rows("keys", "1 = 1", [], order_by="user, name")
        return self._rows("keys", "user = ?", [user], order_by="name")

    def find_key(self, user: str, name: str) -> Row | None:
        rows = self._rows("keys", "user = ? AND name = ?", [user, name], limit=1)
        return rows[0] if rows else None

    def count_keys(self, user: str) -> int:
        row = self.db.execute("SELECT count(*) FROM keys WHERE user = ?", [user]).fetchone()
        return int(row[0])

    def insert_key(self, row: Row) -> None:
        self.db.table("keys").insert(row)

    def delete_key(self, key_id: str) -> None:
        self.db.execute("DELETE FROM keys WHERE id = ?", [key_id])

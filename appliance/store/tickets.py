"""The console tickets' records (appliance/access/tickets.py has their rules).

A ticket is taken (read and deleted) in one statement, DELETE ... RETURNING:
two WebSockets presenting the same ticket at once cannot both get it, in one
worker or in two (SQLite serialises the writes).
"""

from __future__ import annotations

from appliance.store.base import Row, StoreBase


class TicketRecords(StoreBase):
    def insert_ticket(self, row: Row) -> None:
        self.db.table("tickets").insert(row)

    def live_tickets(self, token_id: str, now: float) -> int:
        """How many unexpired tickets this token holds."""
        found = self.db.execute(
            "SELECT count(*) FROM tickets WHERE token_id = ? AND expires > ?", [token_id, now]
        ).fetchone()
        return int(found[0])

    def take_ticket(self, ticket_hash: str) -> Row | None:
        """The ticket with this hash, removed: whatever it says, it is used now."""
        return next(iter(self._select(
            "DELETE FROM tickets WHERE hash = ? "
            "RETURNING token_id, vm_id, project, kind, created, expires",
            [ticket_hash],
        )), None)

    def prune_tickets(self, now: float) -> int:
        """Drop the expired tickets; the number dropped."""
        cursor = self.db.execute("DELETE FROM tickets WHERE expires <= ?", [now])
        return int(cursor.rowcount)

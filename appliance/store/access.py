"""The records of who may do what: projects, users, their tokens (hashed), and
the mount's map of Unix users and groups."""

from __future__ import annotations

import json
from typing import Any

from appliance.access.principal import ADMIN_EVENTS
from appliance.errors import NotFound
from appliance.store.base import Row, StoreBase


def _decode_user(row: Row) -> Row:
    row = dict(row)
    row["projects"] = json.loads(row["projects"])
    row["disabled"] = bool(row.get("disabled"))
    return row


def _decode_project(row: Row) -> Row:
    row = dict(row)
    row["quota"] = json.loads(row["quota"] or "{}")
    row["backup"] = json.loads(row["backup"]) if row.get("backup") else None
    return row


# A token's record with its user's role and projects.
_OWNER_SELECT = (
    "SELECT t.id, t.user, t.expires, t.revoked, t.last_used, u.role, u.projects, "
    "u.disabled FROM tokens t JOIN users u ON u.name = t.user WHERE ")


class AccessRecords(StoreBase):
    # -- projects -------------------------------------------------------------
    def list_projects(self) -> list[Row]:
        return [_decode_project(r) for r in self._rows("projects", "", order_by="name")]

    def get_project(self, name: str) -> Row:
        rows = self._rows("projects", "name = ?", [name])
        if not rows:
            raise NotFound(f"no project named {name!r}", "project")
        return _decode_project(rows[0])

    def project_exists(self, name: str) -> bool:
        found = self.db.execute("SELECT 1 FROM projects WHERE name = ?", [name]).fetchone()
        return found is not None

    def insert_project(self, row: Row) -> None:
        row = {**row, "quota": json.dumps(row.get("quota") or {}, sort_keys=True)}
        if row.get("backup") is not None:
            row["backup"] = json.dumps(row["backup"], sort_keys=True)
        self.db.table("projects").insert(row)

    def update_project(self, name: str, **fields: Any) -> None:
        if "quota" in fields:
            fields["quota"] = json.dumps(fields["quota"], sort_keys=True)
        if fields.get("backup") is not None:
            fields["backup"] = json.dumps(fields["backup"], sort_keys=True)
        if self._update("projects", "name", name, fields) == 0:
            raise NotFound(f"no project named {name!r}", "project")

    def delete_project(self, name: str) -> None:
        """The project, and its history handed to the admins (ADMIN_EVENTS): a project
        made later under the same name must not show its members the old one's events
        and operations."""
        self.db.execute("DELETE FROM projects WHERE name = ?", [name])
        for table in ("events", "operations"):
            self.db.execute(f"UPDATE {table} SET project = ? WHERE project = ?",  # noqa: S608 - a table name of ours
                            [ADMIN_EVENTS, name])

    def project_members(self, name: str, limit: int = 5) -> dict[str, list[str]]:
        """What still belongs to or names a project (at most `limit` of each, by
        name): its VMs, server groups, networks, the users in it, the mount's Unix
        identities mapped into it."""
        queries = {
            "VMs": "SELECT name FROM vms WHERE project = ? ORDER BY name LIMIT ?",
            "server groups": "SELECT name FROM groups WHERE project = ? ORDER BY name LIMIT ?",
            "networks": "SELECT name FROM networks WHERE project = ? ORDER BY name LIMIT ?",
            "users": "SELECT name FROM users WHERE EXISTS (SELECT 1 FROM json_each(users.projects) "
                     "p WHERE p.value = ?) ORDER BY name LIMIT ?",
            "Unix identities": "SELECT kind || ' ' || unix_name FROM unix_identities "
                               "WHERE project = ? ORDER BY kind, unix_name LIMIT ?",
        }
        return {what: [r[0] for r in self.db.execute(sql, [name, limit])]
                for what, sql in queries.items()}

    # -- users -------------------------------------------------------------------
    def list_users(self) -> list[Row]:
        return [_decode_user(r) for r in self._rows("users", "", order_by="name")]

    def get_user(self, name: str) -> Row:
        rows = self._rows("users", "name = ?", [name])
        if not rows:
            raise NotFound(f"no user named {name!r}", "user")
        return _decode_user(rows[0])

    def user_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM users WHERE name = ?", [name]).fetchone() is not None

    def user_count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM users").fetchone()[0])

    def insert_user(self, row: Row) -> None:
        self.db.table("users").insert({**row, "projects": json.dumps(list(row["projects"]))})

    def update_user(self, name: str, **fields: Any) -> None:
        if "projects" in fields:
            fields["projects"] = json.dumps(list(fields["projects"]))
        if self._update("users", "name", name, fields) == 0:
            raise NotFound(f"no user named {name!r}", "user")

    def delete_user(self, name: str) -> None:
        """The user, their tokens, SSH keys and the mount's map entries naming them (a user made
        later under the same name is someone else: the Unix user must be mapped to
        them anew). Their locks stay (the admins' to lift), named `NAME (removed)`,
        which no caller is, for the same reason."""
        self.db.execute("DELETE FROM tokens WHERE user = ?", [name])
        self.db.execute("DELETE FROM keys WHERE user = ?", [name])  # SSH keys: theirs too
        self.db.execute("DELETE FROM unix_identities WHERE kind = 'user' AND user = ?", [name])
        self.db.execute("DELETE FROM users WHERE name = ?", [name])
        self.db.execute("UPDATE vms SET locked_by = ? WHERE locked_by = ?",
                        [f"{name} (removed)", name])

    # -- tokens ------------------------------------------------------------------
    def token_owner(self, token_hash: str) -> Row | None:
        """The token with this hash and its user's role and projects, in one read
        (every authenticated request asks it)."""
        rows = self._select(_OWNER_SELECT + "t.hash = ?", [token_hash])
        return _decode_user(rows[0]) if rows else None

    def token_owner_by_id(self, token_id: str) -> Row | None:
        """The same, by the token's id (a console ticket names the token that asked)."""
        rows = self._select(_OWNER_SELECT + "t.id = ?", [token_id])
        return _decode_user(rows[0]) if rows else None

    def list_tokens(self, user: str | None = None) -> list[Row]:
        columns = "id, user, prefix, description, created, expires, last_used, revoked"
        if user is None:
            return self._rows("tokens", "", order_by="created", select=columns)
        return self._rows("tokens", "user = ?", [user], order_by="created", select=columns)

    def get_token(self, token_id: str) -> Row:
        rows = self._rows("tokens", "id = ?", [token_id])
        if not rows:
            raise NotFound(f"no token with id {token_id!r}", "token")
        return rows[0]

    def insert_token(self, row: Row) -> None:
        self.db.table("tokens").insert(row)

    def update_token(self, token_id: str, **fields: Any) -> None:
        if self._update("tokens", "id", token_id, fields) == 0:
            raise NotFound(f"no token with id {token_id!r}", "token")

    def delete_tokens(self, token_ids: list[str]) -> None:
        for token_id in token_ids:
            self.db.execute("DELETE FROM tokens WHERE id = ?", [token_id])

    def touch_token(self, token_id: str, when: float) -> None:
        """Record a use (outside any transaction the caller holds)."""
        self.db.execute("UPDATE tokens SET last_used = ? WHERE id = ?", [when, token_id])

    # -- the mount's Unix identities -----------------------------------------------
    def list_unix_identities(self) -> list[Row]:
        return self._rows("unix_identities", "", order_by="kind, unix_name")

    def set_unix_identity(self, row: Row) -> None:
        self.db.table("unix_identities").upsert(row, pk=("kind", "unix_name"))

    def delete_unix_identity(self, kind: str, unix_name: str) -> None:
        self.db.execute(
            "DELETE FROM unix_identities WHERE kind = ? AND unix_name = ?", [kind, unix_name]
        )

"""Users and their API tokens: who may call the appliance, with which role, in
which projects (the policy table decides the routes: appliance/access/policy.py).

Users are the admin's (policy: ADMIN). Tokens are their owner's: anyone with
a role that has OWN_TOKENS lists, makes and revokes their own; an admin,
anyone's. A token of someone else is "not found" to a non-admin, as a VM of
another project is, so that neither its id nor its owner is revealed.

A token is shown once, in the answer that made it; the store keeps its
SHA-256 (appliance/access/tokens.py), which no answer and no event carries.
The appliance always keeps an admin: the last enabled admin cannot be
removed, demoted or disabled (409, with the reason).
"""
from __future__ import annotations

import time
from typing import Any

from appliance.access import Role, caller
from appliance.access.principal import ADMIN_EVENTS
from appliance.access.tokens import new_token, shown_prefix, token_hash
from appliance.errors import Conflict, Forbidden, Invalid, NotFound
from appliance.model.access import TokenCreate, UserCreate, UserUpdate, parse_duration
from appliance.model.values import validate_name
from appliance.service.base import ServiceBase
from appliance.store import Row

MAX_USERS = 1000
MAX_ACTIVE_TOKENS = 50  # per user: unrevoked, unexpired
# Per user, the revoked and expired tokens whose records are kept (the newest):
# a user making and revoking tokens in a loop must not grow the table without
# bound. (The event log keeps that each was made and revoked.)
KEPT_INACTIVE_TOKENS = 100
# What a token's record shows; never its hash.
TOKEN_FIELDS = ("id", "user", "prefix", "description", "created", "expires", "last_used",
                "revoked")


def token_view(row: Row, now: float) -> dict[str, Any]:
    view = {field: row.get(field) for field in TOKEN_FIELDS}
    expired = row.get("expires") is not None and row["expires"] <= now
    view["state"] = "revoked" if row.get("revoked") else "expired" if expired else "active"
    return view


def user_view(row: Row) -> dict[str, Any]:
    return {"name": row["name"], "role": row["role"], "projects": list(row["projects"]),
            "created": row["created"], "disabled": bool(row["disabled"])}


class Access(ServiceBase):
    # -- who am I --------------------------------------------------------------------
    def whoami(self) -> dict[str, Any]:
        me = caller()
        return {"user": me.user, "role": me.role.value, "projects": list(me.projects),
                "project": me.project, "token_id": me.token_id}

    # -- users (the admin's) -------------------------------------------------------------
    def list_users(self) -> list[dict[str, Any]]:
        return [user_view(row) for row in self.store.list_users()]

    def get_user(self, name: str) -> dict[str, Any]:
        return user_view(self._user_row(name))

    def add_user(self, body: Any) -> dict[str, Any]:
        user = UserCreate.parse(body)
        with self.store.transaction():
            self._projects_exist(user["projects"])
            if self.store.user_exists(user["name"]):
                raise Conflict(f"a user named {user['name']!r} exists", "name")
            if self.store.user_count() >= MAX_USERS:
                raise Conflict(f"at most {MAX_USERS} users", "name")
            self.store.insert_user({**user, "created": self.clock(), "disabled": 0})
            self.store.add_event("user-added", f"user {user['name']} added "
                                 f"({user['role']} in {', '.join(user['projects'])})",
                                 project=ADMIN_EVENTS)
        return self.get_user(user["name"])

    def update_user(self, name: str, body: Any) -> dict[str, Any]:
        changes = UserUpdate.parse(body)
        with self.store.transaction():
            current = self._user_row(name)
            if "projects" in changes:
                self._projects_exist(changes["projects"])
            stays_admin = (changes.get("role", current["role"]) == Role.ADMIN
                           and not changes.get("disabled", current["disabled"]))
            if not stays_admin:
                field = "role" if changes.get("role", Role.ADMIN) != Role.ADMIN else "disabled"
                self._keep_an_admin(current, "demoted" if field == "role" else "disabled", field)
            if "disabled" in changes:
                changes["disabled"] = int(changes["disabled"])
            if changes:
                self.store.update_user(name, **changes)
                said = ", ".join(f"{key} {_shown(value)}" for key, value in changes.items())
                self.store.add_event("user-changed", f"user {name}: {said}",
                                     project=ADMIN_EVENTS)
        return self.get_user(name)

    def delete_user(self, name: str) -> None:
        with self.store.transaction():
            current = self._user_row(name)
            self._keep_an_admin(current, "removed", "name")
            self.store.delete_user(name)  # and their tokens
            self.store.add_event("user-deleted", f"user {name} removed, and their tokens",
                                 project=ADMIN_EVENTS)

    def _user_row(self, name: str) -> Row:
        try:
            return self.store.get_user(name)
        except NotFound:
            raise NotFound(f"no user named {name[:64]!r}", "name") from None

    def _projects_exist(self, projects: list[str]) -> None:
        for index, project in enumerate(projects):
            if not self.store.project_exists(project):
                raise NotFound(f"no project named {project!r}", f"projects[{index}]")

    def _keep_an_admin(self, user: Row, change: str, field: str) -> None:
        """Refuse to leave the appliance without an enabled admin."""
        if user["role"] != Role.ADMIN or user["disabled"]:
            return
        others = [u for u in self.store.list_users()
                  if u["role"] == Role.ADMIN and not u["disabled"] and u["name"] != user["name"]]
        if not others:
            raise Conflict(f"{user['name']} is the last admin and cannot be {change}: "
                           "make another user an admin first", field)

    # -- tokens (their owner's; an admin's for anyone) ---------------------------------------
    def list_tokens(self, user: str | None = None) -> list[dict[str, Any]]:
        """The caller's tokens; an admin's: everyone's, or one user's."""
        me = caller()
        if user is not None:
            validate_name(user, "user")
            if (not me.is_admin and user != me.user) or not self.store.user_exists(user):
                raise NotFound(f"no user named {user!r}", "user")
        elif not me.is_admin:
            user = me.user
        now = self.clock()
        return [token_view(row, now) for row in self.store.list_tokens(user)]

    def get_token(self, token_id: str) -> dict[str, Any]:
        return token_view(self._token_row(token_id), self.clock())

    def create_token(self, body: Any) -> dict[str, Any]:
        """The new token's record and, this once, the token itself."""
        asked = TokenCreate.parse(body)
        me = caller()
        owner = asked.get("user") or me.user
        if owner != me.user and not me.is_admin:
            raise Forbidden(f"{me.user} may make tokens for themselves only "
                            "(an admin makes other users' tokens)", "user")
        now = self.clock()
        token_id, token = new_token()
        expires = now + parse_duration(asked["expires"]) if asked.get("expires") else None
        description = asked.get("description", "")
        with self.store.transaction():
            self._check_outlives_not(me.token_id, expires)
            if not self.store.user_exists(owner):
                raise NotFound(f"no user named {owner!r}", "user")
            user = self.store.get_user(owner)
            if user["disabled"]:
                raise Conflict(f"user {owner} is disabled", "user")
            records = self.store.list_tokens(owner)  # oldest first
            active = [t for t in records if token_view(t, now)["state"] == "active"]
            if len(active) >= MAX_ACTIVE_TOKENS:
                raise Conflict(f"{owner} has {len(active)} active tokens, the most allowed: "
                               "revoke one first", "user")
            inactive = [t["id"] for t in records if t not in active]
            self.store.delete_tokens(inactive[: max(0, len(inactive) - KEPT_INACTIVE_TOKENS)])
            self.store.insert_token({
                "id": token_id, "user": owner, "hash": token_hash(token),
                "prefix": shown_prefix(token), "description": description, "created": now,
                "expires": expires, "last_used": None, "revoked": None})
            self.store.add_event("token-created", f"token {token_id} made for {owner}"
                                 + (f" ({description})" if description else ""),
                                 project=ADMIN_EVENTS)
        return {**self.get_token(token_id), "token": token}

    def _check_outlives_not(self, parent_id: str | None, expires: float | None) -> None:
        """A token made with an expiring token may not outlive it (Keystone's rule for
        derived tokens): else an hour's token, once leaked, mints a permanent one that
        revoking the first does not touch."""
        if parent_id is None:
            return
        try:
            parent = self.store.get_token(parent_id)["expires"]
        except NotFound:
            return
        if parent is not None and (expires is None or expires > parent):
            until = time.strftime("%Y-%m-%d %H:%M", time.gmtime(parent))
            raise Invalid(
                f"the token this request uses expires at {until} UTC; a token it makes may not "
                "outlive it (ask for a shorter --expires, or use a token that does not expire)",
                "expires")

    def revoke_token(self, token_id: str) -> None:
        """Idempotent: a revoked token stays revoked at its first revocation's time."""
        with self.store.transaction():
            row = self._token_row(token_id)
            if row["revoked"]:
                return
            self.store.update_token(token_id, revoked=self.clock())
            self.store.add_event("token-revoked", f"token {token_id} of {row['user']} revoked",
                                 project=ADMIN_EVENTS)

    def _token_row(self, token_id: str) -> Row:
        """The token, if it is the caller's (or the caller is an admin): else not found."""
        me = caller()
        try:
            row = self.store.get_token(token_id)
        except NotFound:
            row = None
        if row is None or (row["user"] != me.user and not me.is_admin):
            raise NotFound(f"no token with id {token_id[:64]!r}", "token_id")
        return row


def _shown(value: Any) -> str:
    if isinstance(value, list):
        return ",".join(value)
    return str(value).lower() if isinstance(value, bool) else str(value)

"""API tokens: made here, stored hashed, turned back into a principal per request.

A token is `vma_<id>_<secret>`: the id is its public handle (list, revoke),
the secret 256 random bits. The store keeps SHA-256 of the whole token, never
the token: a stolen database grants nothing. (A slow hash such as bcrypt is
for passwords people choose; a 256-bit random secret cannot be guessed from
its SHA-256, and the lookup stays one indexed read per request.) The token of
a home from before users (HOME/token, any text) is stored the same way,
hashed, as the first admin's (bootstrap below), so old homes keep working.
"""
from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from collections.abc import Callable
from typing import Protocol, TypeGuard

from appliance.access.principal import DEFAULT_PROJECT, Principal, Role
from appliance.store import Row, Store

TOKEN_PREFIX = "vma_"  # noqa: S105 - the shown start of every token, not a secret
# last_used is written at most this often per token: a write per request would
# serialise every GET on SQLite's write lock.
TOUCH_EVERY = 60.0
class Resolver(Protocol):
    """A presented token (and the client's address) to the principal it names, or None."""

    def __call__(self, token: str, source: str = "api") -> Principal | None: ...


# Token records a resolver keeps per thread while the store is unchanged (see resolver()),
# and the longest it keeps them even so: the bound on a revocation that SECURITY.md states.
CACHED_TOKENS = 64
REUSE_SECONDS = 1.0
# The longest a token may be sent (a longer Authorization header is refused unread).
MAX_TOKEN_CHARS = 200
FIRST_ADMIN = "admin"
LEGACY_TOKEN_ID = "home-token"  # noqa: S105 - the id (a public handle) of HOME/token


# The shape of new_token()'s tokens: vma_, 12 hex digits of id, _, 43 of secret.
_MADE_HERE = re.compile(rf"{TOKEN_PREFIX}[0-9a-f]{{12}}_[A-Za-z0-9_-]{{43}}")


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> tuple[str, str]:
    """(id, token): the id is shown in lists, the token once, at creation."""
    token_id = secrets.token_hex(6)
    return token_id, f"{TOKEN_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"


def shown_prefix(token: str) -> str:
    """The start of a token that lists show, to recognise it by: of one made here,
    `vma_`, its id and 4 characters of its 43-character secret; of any other (a
    home's token from before users: any text), at most 4 characters and a quarter
    of it, so that the list never gives away much of a secret."""
    if _MADE_HERE.fullmatch(token):
        return token[: len(TOKEN_PREFIX) + 12 + 4]
    return token[: min(4, len(token) // 4)]


def resolver(store: Store, clock: Callable[[], float] = time.time) -> Resolver:
    """A function from a presented token to its principal (None: no such token,
    revoked, expired, or its user disabled).

    Each thread keeps the token records it read while nothing was committed to
    the store since (store.read_stamp), for at most REUSE_SECONDS: a commit by
    this thread (a revocation through this same request path) empties it at
    once, any other commit (a revocation, a disabled user or a changed role, by
    another thread or process: `vmctl token revoke`) at once too (the stamp is the
    wal-index header; where there is none, within the change watcher's poll, 10 ms),
    and REUSE_SECONDS bounds the rest (a watcher starved of CPU).
    Expiry is checked on every use. `source`: the client's address, which the
    principal carries (the audit trail's "from where"). What it saves: the token's read (a join of
    two tables, one SQLite read lock) was a fifth of a GET /v1/vms/NAME in the
    worker. Only valid tokens are kept, at most CACHED_TOKENS per thread, by hash."""
    cache = threading.local()

    def owner(hashed: str) -> Row | None:
        stamp = store.read_stamp()  # before the read: a commit after it shows in the next stamp
        now = time.monotonic()
        records: dict[str, Row] | None = getattr(cache, "records", None)
        if stamp is None or records is None or cache.stamp != stamp or now >= cache.until:
            records = cache.records = {}
            cache.principals = {}
            cache.stamp, cache.until = stamp, now + REUSE_SECONDS
        row = records.get(hashed)
        if row is None:
            row = store.token_owner(hashed)
            if row is not None and stamp is not None and len(records) < CACHED_TOKENS:
                records[hashed] = row
        return row

    def resolve(token: str, source: str = "api") -> Principal | None:
        if not token or len(token) > MAX_TOKEN_CHARS:
            return None
        hashed = token_hash(token)
        row = owner(hashed)
        if not usable(row, store, clock()):
            return None
        # The principal made of a kept record, kept with it (for the same client address).
        principals: dict[tuple[str, str], Principal] = cache.principals
        principal = principals.get((hashed, source))
        if principal is None:
            principal = principal_from(row, source)
            if hashed in cache.records and len(principals) < CACHED_TOKENS:
                principals[hashed, source] = principal
        return principal

    return resolve


def principal_by_id(store: Store, token_id: str, clock: Callable[[], float] = time.time
                    ) -> Principal | None:
    """The principal a token names now, by the token's id (a console ticket's
    token, appliance/access/tickets.py): None as for resolver()."""
    return principal_of(store, store.token_owner_by_id(token_id), clock())


def principal_of(store: Store, row: Row | None, now: float) -> Principal | None:
    """The principal of a token's record (store.token_owner), if the token may be used now."""
    if not usable(row, store, now):
        return None
    return principal_from(row, "api")


def usable(row: Row | None, store: Store, now: float) -> TypeGuard[Row]:
    """Whether a token's record may be used now (and its use recorded, at most every
    TOUCH_EVERY seconds)."""
    if row is None or row["revoked"] or row["disabled"]:
        return False
    if row["expires"] is not None and row["expires"] <= now:
        return False
    if row["last_used"] is None or now - row["last_used"] >= TOUCH_EVERY:
        store.touch_token(row["id"], now)
    return True


def principal_from(row: Row, source: str) -> Principal:
    projects = tuple(row["projects"]) or (DEFAULT_PROJECT,)
    return Principal(user=row["user"], role=Role(row["role"]), projects=projects,
                     token_id=row["id"], source=source, project=projects[0])


def bootstrap(store: Store, home_token: str | None, clock: Callable[[], float] = time.time
              ) -> None:
    """The first start with users: the home's token becomes the first admin's.
    Runs once (a meta key says it ran), so a revoked home token stays revoked."""
    if store.get_meta("users_bootstrapped") or not home_token:
        return
    now = clock()
    with store.transaction():
        # The home token's owner must exist for the token to name it (its foreign key),
        # whatever other users a store made before this ran may hold.
        if not store.user_exists(FIRST_ADMIN):
            store.insert_user({"name": FIRST_ADMIN, "role": Role.ADMIN.value,
                               "projects": [DEFAULT_PROJECT], "created": now, "disabled": 0})
        if store.token_owner(token_hash(home_token)) is None:
            store.insert_token({
                "id": LEGACY_TOKEN_ID, "user": FIRST_ADMIN, "hash": token_hash(home_token),
                "prefix": shown_prefix(home_token), "description": "HOME/token",
                "created": now, "expires": None, "last_used": None, "revoked": None})
        store.set_meta("users_bootstrapped", "1")

"""Console tickets: what a browser puts in a WebSocket's URL instead of a token.

A browser cannot set the Authorization header of a WebSocket, and a token in
a URL lands in logs and histories; so, as Proxmox's vncticket and Nova's
console tokens, the page asks POST /v1/tickets with its token and opens
`/v1/vms/NAME/console?ticket=vmt_...` with the answer. A ticket is

- 256 random bits, stored as its SHA-256 only (as tokens, tokens.py);
- bound to the token that asked, the VM (by id: a VM renamed or deleted and
  made anew under the name is another VM) and the kind (console or vnc);
- valid `ttl` seconds (config ticket_ttl, 60 by default) and usable once:
  taken from the store in one DELETE ... RETURNING, so two upgrades racing
  with one ticket get it once between them, whatever worker each reached;
- worth what its token is worth when it is used: the principal is resolved
  anew from the token's id then, so a token revoked or expired, or its user
  disabled, in the meantime leaves its tickets useless, and a role changed in
  the meantime is the role the console gets;
- bounded: a token holds at most MAX_LIVE_PER_TOKEN unexpired tickets, and
  expired ones are dropped whenever one is made.
"""
from __future__ import annotations

import dataclasses
import re
import secrets
import time
from collections.abc import Callable

from appliance.access import tokens
from appliance.access.principal import Principal
from appliance.errors import Conflict
from appliance.store import Row, Store

TICKET_PREFIX = "vmt_"
MAX_LIVE_PER_TOKEN = 32
_SHAPE = re.compile(rf"{TICKET_PREFIX}[A-Za-z0-9_-]{{43}}")


@dataclasses.dataclass(frozen=True)
class Redeemed:
    """What a used ticket grants: who (as their token names them now, in the
    ticket's project), which VM, which console."""

    principal: Principal
    vm_id: str
    kind: str


def new_ticket() -> str:
    return TICKET_PREFIX + secrets.token_urlsafe(32)


def issue(store: Store, principal: Principal, vm: Row, kind: str, ttl: float, now: float
          ) -> tuple[str, float]:
    """(ticket, expiry time) for the caller's token; Conflict when that token
    holds MAX_LIVE_PER_TOKEN live tickets already."""
    if principal.token_id is None:
        raise Conflict("a ticket is made for an API token; this request used none", "token")
    ticket = new_ticket()
    expires = now + ttl
    with store.transaction():
        store.prune_tickets(now)
        if store.live_tickets(principal.token_id, now) >= MAX_LIVE_PER_TOKEN:
            raise Conflict(f"this token holds {MAX_LIVE_PER_TOKEN} unused tickets, the most "
                           f"allowed: use them or wait {ttl:g} s for them to expire", "ticket")
        store.insert_ticket({"hash": tokens.token_hash(ticket), "token_id": principal.token_id,
                             "vm_id": vm["id"], "project": vm["project"], "kind": kind,
                             "created": now, "expires": expires})
    return ticket, expires


def redeem(store: Store, ticket: str, clock: Callable[[], float] = time.time) -> Redeemed | None:
    """The grant of a ticket, which is used up by this call whatever the answer;
    None: no such ticket (or used before), expired, or its token no longer valid."""
    if not _SHAPE.fullmatch(ticket):
        return None
    row = store.take_ticket(tokens.token_hash(ticket))
    now = clock()
    if row is None or row["expires"] <= now:
        return None
    principal = tokens.principal_by_id(store, row["token_id"], clock)
    if principal is None or not principal.may_see(row["project"]):
        return None
    return Redeemed(principal.in_project(row["project"]), row["vm_id"], row["kind"])

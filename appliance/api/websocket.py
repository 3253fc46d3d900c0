"""The consoles' WebSockets, in the ASGI front (asgi.py): `/v1/vms/NAME/console`
(the serial console) and `/v1/vms/NAME/vnc` (RFB, for noVNC).

Every refusal comes before the upgrade, as an HTTP answer with the API's error
body (uvicorn's "websocket.http.response" extension; a server without it gets
a close code of 4000 + the status instead): a client that is refused never
holds an open WebSocket. In order:

- the path: only the two routes (after asgi.normal_path, as Falcon's router
  forgives slashes); anything else is 404;
- the worker's bound: at most MAX_SESSIONS WebSockets at once (503 beyond),
  and, once the caller is known, MAX_SESSIONS_PER_USER of them a user's (429);
- the query: `project`, `ticket`, `mode=ro|rw`, and for the console `history`
  (0..65536) and `force` (true|false); a bad value is 422;
- the caller: `Authorization: Bearer TOKEN` (resolved as every request's,
  auth.py; `?project=` as auth.py's in_project), else `?ticket=` (used up here,
  whatever follows: appliance/access/tickets.py); neither, or a bad one: 401;
- the policy (policy.WEBSOCKETS): the role may attach (403 else), and types
  only with policy.WEBSOCKET_INPUT and without mode=ro; force=true (which cuts
  off another holder of the console) takes WEBSOCKET_INPUT too (403 else);
- the VM (service.console_target, in the caller's project: 404, 409 when it
  is not running; a ticket's must be the VM it names), then the broker
  (appliance/consoles: its 404/409/500/503 are answered as they are).

Then the attach is recorded in the VM's events (who, read-write or
read-only), the upgrade accepted ("binary" as subprotocol when offered) and
the bytes relayed (websocket_relay.py), while the caller's token still allows
the session (`_still_allowed`, asked every few seconds: a revoked token, a
disabled user, a role that may no longer attach or type closes it, 1008).
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import re
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any, TypeVar
from urllib.parse import parse_qsl

from appliance import errors
from appliance.access import policy, tickets, tokens
from appliance.access.principal import Principal, acting_as
from appliance.api import websocket_relay
from appliance.api.asgi import header, normal_path
from appliance.api.auth import BEARER_HELP, bearer, in_project
from appliance.consoles import protocol
from appliance.model.access import ConsoleKind
from appliance.service import Service

log = logging.getLogger("vmctl.websocket")
T = TypeVar("T")
Scope = dict[str, Any]
Message = dict[str, Any]

ROUTE = re.compile(r"/v1/vms/([^/]+)/(console|vnc)")
MAX_SESSIONS = 64  # WebSockets per API worker
MAX_SESSIONS_PER_USER = 16  # of them, held by one user (a script on many VMs fits)
MAX_HISTORY = protocol.HISTORY_MAX
FALSE, TRUE = ("false", "0", "no", "off"), ("true", "1", "yes", "on")
DENIAL = "websocket.http.response"


class Refused(Exception):
    """A refusal before the upgrade: an HTTP status and the API's error body."""

    def __init__(self, status: int, error: str, reason: str, field: str | None = None):
        super().__init__(reason)
        self.status, self.error, self.reason, self.field = status, error, reason, field

    @classmethod
    def of(cls, err: errors.ApplianceError) -> Refused:
        return cls(int(err.http_status), type(err).__name__, err.reason, err.field)


def unauthorized(reason: str = BEARER_HELP + ", or ?ticket= from POST /v1/tickets") -> Refused:
    return Refused(401, "Unauthorized", reason)


@dataclasses.dataclass(frozen=True)
class Request:
    """An upgrade request, parsed; refused (422) where a value is wrong."""

    name: str
    kind: ConsoleKind
    template: str
    project: str | None = None
    ticket: str | None = None
    read_only: bool = False
    history: int = 0
    force: bool = False


def parse_request(path: str, query_string: bytes) -> Request:
    match = ROUTE.fullmatch(normal_path(path))
    if match is None:
        raise Refused(404, "NotFound", "no WebSocket at this path: /v1/vms/NAME/console "
                                       "and /v1/vms/NAME/vnc are the WebSockets")
    name, kind = match[1], ConsoleKind(match[2])
    query: dict[str, str] = {}
    for key, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if key in query:
            raise Refused(422, "Invalid", "given twice", key)
        query[key] = value
    mode = query.get("mode", "rw")
    if mode not in ("ro", "rw"):
        raise Refused(422, "Invalid", "must be ro or rw", "mode")
    history, force = 0, False
    if kind == ConsoleKind.CONSOLE:
        raw = query.get("history", "0")
        if not raw.isdigit() or int(raw) > MAX_HISTORY:
            raise Refused(422, "Invalid", f"must be a whole number from 0 to {MAX_HISTORY}",
                          "history")
        history = int(raw)
        flag = query.get("force", "false").lower()
        if flag not in FALSE + TRUE:
            raise Refused(422, "Invalid", "must be true or false", "force")
        force = flag in TRUE
    return Request(name=name, kind=kind, template=f"/v1/vms/{{name}}/{kind.value}",
                   project=query.get("project"), ticket=query.get("ticket"),
                   read_only=mode == "ro", history=history, force=force)


class WebSockets:
    """The consoles' WebSocket endpoint of one API worker (asgi.Front calls it)."""

    def __init__(self, service: Service, pool: Executor, broker: Any = None,
                 max_sessions: int = MAX_SESSIONS, max_per_user: int = MAX_SESSIONS_PER_USER,
                 recheck_every: float = websocket_relay.RECHECK_SECONDS):
        self.service = service
        self.store = service.store
        self.pool = pool
        self.resolve = tokens.resolver(self.store)
        self.broker = broker  # appliance.consoles.client, or a test's stand-in
        self.max_sessions = max_sessions
        self.sessions = 0  # touched only from the event loop: no lock
        self.max_per_user = max_per_user
        self.by_user: dict[str, int] = {}  # sessions of each user (the event loop's too)
        self.recheck_every = recheck_every

    def _client(self) -> Any:
        if self.broker is None:
            from appliance.consoles import client  # the broker's client (part of its package)

            self.broker = client
        return self.broker

    async def _in_thread(self, call: Callable[[], T]) -> T:
        """SQLite and the service block: they run in the front's pool."""
        return await asyncio.get_running_loop().run_in_executor(self.pool, call)

    async def __call__(self, scope: Scope, receive: Callable, send: Callable) -> None:
        first = await receive()
        if first["type"] != "websocket.connect":
            return
        if self.sessions >= self.max_sessions:
            await deny(scope, send, Refused(503, "Service Unavailable",
                                            f"{self.max_sessions} WebSockets are open in this "
                                            "worker, the most it holds; try again shortly"))
            return
        self.sessions += 1
        try:
            await self._session(scope, receive, send)
        finally:
            self.sessions -= 1

    async def _session(self, scope: Scope, receive: Callable, send: Callable) -> None:
        held: list[str] = []  # the user whose slot this session takes, once authorized
        try:
            await self._attach(scope, receive, send, held)
        finally:
            for user in held:
                self.by_user[user] -= 1
                if not self.by_user[user]:
                    del self.by_user[user]

    def _take_slot(self, user: str, held: list[str]) -> None:
        """One of the user's MAX_SESSIONS_PER_USER in this worker (429 beyond): one
        token, a viewer's even, must not hold every WebSocket the worker has."""
        if self.by_user.get(user, 0) >= self.max_per_user:
            raise Refused(429, "Too Many Requests",
                          f"{user[:64]} holds {self.max_per_user} console WebSockets in this "
                          "worker, the most one user may: close some first")
        self.by_user[user] = self.by_user.get(user, 0) + 1
        held.append(user)

    async def _attach(self, scope: Scope, receive: Callable, send: Callable,
                      held: list[str]) -> None:
        try:
            request = parse_request(scope.get("path", ""), scope.get("query_string", b""))
            source = (scope.get("client") or ("api",))[0]
            authorization = header(scope, b"authorization")
            principal, vm_id = await self._in_thread(lambda: self._authorize(
                request, authorization.decode("latin-1") if authorization else None, source))
            self._take_slot(principal.user, held)
            write = policy.allows(principal.role, policy.WEBSOCKET_INPUT) and not request.read_only
            backend = await self._open(request, vm_id, write)
        except Refused as refusal:
            await deny(scope, send, refusal)
            return
        except errors.ApplianceError as err:
            await deny(scope, send, Refused.of(err))
            return
        except OSError as err:  # the broker's socket handed over, and failing at once
            log.warning("console connection failed: %s", err)
            await deny(scope, send, Refused(503, "Service Unavailable",
                                            "the console connection failed; try again"))
            return
        except Exception:  # a bug or a store error: an answer, not a dropped connection
            # uvicorn would answer an exception with a 500 and close the socket in the same
            # step, before the answer is written: the client saw a bare EOF.
            log.exception("console WebSocket %s failed before the upgrade", scope.get("path"))
            await deny(scope, send, Refused(500, "Internal Server Error",
                                            "the appliance failed to open the console; its "
                                            "log has the details"))
            return
        try:
            await self._in_thread(lambda: self._record(principal, request, vm_id, write))
            subprotocol = "binary" if "binary" in scope.get("subprotocols", ()) else None
            await send({"type": "websocket.accept", "subprotocol": subprotocol})
            await websocket_relay.relay(
                receive, send, backend, request.kind, write,
                recheck=lambda: self._in_thread(
                    lambda: self._still_allowed(principal, request, write)),
                every=self.recheck_every)
        finally:
            backend.close()

    def _authorize(self, request: Request, authorization: str | None, source: str
                   ) -> tuple[Principal, str]:
        """In a pool thread: (the caller, the VM's id), or Refused / ApplianceError."""
        token = bearer(authorization)
        ticket_vm: str | None = None
        if token:
            principal = self.resolve(token)
            if principal is None:
                raise unauthorized()
            principal = in_project(principal, request.project, self.store.project_exists)
        elif request.ticket:
            granted = tickets.redeem(self.store, request.ticket)
            if granted is None:
                raise unauthorized("the ticket is not valid: unknown, used already, expired, "
                                   "or its token is revoked; ask POST /v1/tickets for another")
            if granted.kind != request.kind:
                raise unauthorized(f"the ticket is for {granted.kind}, not {request.kind.value}")
            principal, ticket_vm = granted.principal, granted.vm_id
            if request.project is not None and request.project != principal.project:
                raise errors.NotFound(f"no project named {request.project[:64]!r}", "project")
        else:
            raise unauthorized()
        principal = dataclasses.replace(principal, source=source)
        policy.check(principal, policy.WEBSOCKETS[request.template])
        if request.force and not policy.allows(principal.role, policy.WEBSOCKET_INPUT):
            # FORCE cuts off whoever holds the console (an admin's `virsh console`)
            raise errors.Forbidden(f"{principal.user} has the role {principal.role}, which "
                                   "may not take a console over (force needs one that may "
                                   "type into it)", "force")
        with acting_as(principal):  # 409 when stopped, or for vnc without a display
            target = self.service.console_target(request.name, request.kind.value)
        if ticket_vm is not None and target["vm_id"] != ticket_vm:
            raise errors.NotFound(f"the ticket is not for {request.name[:64]}", "ticket")
        return principal, str(target["vm_id"])

    def _still_allowed(self, principal: Principal, request: Request, write: bool
                       ) -> str | None:
        """In a pool thread: None while the caller's token may still hold this
        session as it was opened, else why not."""
        if principal.token_id is None:  # a caller no token names (the tests' single token)
            return None
        now = tokens.principal_by_id(self.store, principal.token_id)
        if now is None:
            return "the token was revoked or expired, or its user disabled"
        if not now.may_see(principal.project):
            return f"{now.user} is no longer in the project {principal.project}"
        if not policy.allows(now.role, policy.WEBSOCKETS[request.template]):
            return f"the role {now.role.value} may no longer attach"
        if write and not policy.allows(now.role, policy.WEBSOCKET_INPUT):
            return f"the role {now.role.value} may no longer type: attach again, read-only"
        return None

    async def _open(self, request: Request, vm_id: str, write: bool) -> websocket_relay.Backend:
        """The broker's connection, before the upgrade: its refusals are HTTP answers."""
        socket_path = self.service.config.console_socket
        client = self._client()
        if request.kind == ConsoleKind.CONSOLE:
            reader, writer = await client.open_console(
                socket_path, vm_id, write=write, force=request.force, history=request.history)
            return websocket_relay.Backend(reader, writer)
        sock = await client.open_vnc(socket_path, vm_id)
        try:
            sock.setblocking(False)
            reader, writer = await asyncio.open_connection(sock=sock)
        except BaseException:
            sock.close()
            raise
        return websocket_relay.Backend(reader, writer)

    def _record(self, principal: Principal, request: Request, vm_id: str, write: bool) -> None:
        """The attach, in the VM's events: who, from where, read-write or read-only."""
        what = "console" if request.kind == ConsoleKind.CONSOLE else "VNC console"
        mode = "read-write" if write else "read-only"
        vm = {"id": vm_id, "name": request.name, "project": principal.project}
        try:
            self.store.add_event(f"{request.kind.value}-attached",
                                 f"{what} attached {mode}", vm, by=principal)
        except Exception:  # the session goes on; the log says what was not recorded
            log.exception("could not record the attach of %s to %s", principal.user, vm_id)


async def deny(scope: Scope, send: Callable, refusal: Refused) -> None:
    """Refuse the upgrade with an HTTP answer (or, without the extension, a close code)."""
    if DENIAL not in scope.get("extensions", {}):
        # A close frame's reason is at most 123 bytes of UTF-8.
        reason = refusal.reason.encode()[:120].decode(errors="ignore")
        await send({"type": "websocket.close", "code": 4000 + refusal.status, "reason": reason})
        return
    body: Mapping[str, Any] = {"error": refusal.error, "reason": refusal.reason,
                               **({"field": refusal.field} if refusal.field else {})}
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"),
               (b"content-length", str(len(data)).encode())]
    if refusal.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    if refusal.status == 503:
        headers.append((b"retry-after", b"5"))
    await send({"type": "websocket.http.response.start", "status": refusal.status,
                "headers": headers})
    await send({"type": "websocket.http.response.body", "body": data})

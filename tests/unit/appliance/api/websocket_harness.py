"""The consoles' WebSocket endpoint (appliance/api/websocket.py) driven as uvicorn
drives it (ASGI messages), over a real service and store, with a stand-in for
the console broker: a socketpair whose far end the test reads and writes."""
from __future__ import annotations

import asyncio
import dataclasses
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from appliance.access import tokens
from appliance.access.principal import DEFAULT_PROJECT, Principal, Role, acting_as
from appliance.api.websocket import WebSockets
from appliance.service import Service

HOME_TOKEN = "home-token-of-the-websocket-tests-012345"  # noqa: S105 - a test's
GUEST_SAYS = b"guest output\r\n"
RFB_BANNER = b"RFB 003.008\n"
USERS = {"operator": (Role.OPERATOR, [DEFAULT_PROJECT]),
         "viewer": (Role.VIEWER, [DEFAULT_PROJECT]),
         "monitor": (Role.MONITOR, [DEFAULT_PROJECT]),
         "webop": (Role.OPERATOR, ["web"])}


class FakeBroker:
    """appliance.consoles.client's two openers; `peer` is the broker's end."""

    def __init__(self) -> None:
        self.opened: list[dict[str, Any]] = []
        self.peer: socket.socket | None = None
        self.refuse: Exception | None = None

    def _pair(self, greeting: bytes) -> socket.socket:
        ours, theirs = socket.socketpair()
        theirs.sendall(greeting)
        self.peer = theirs
        return ours

    async def open_console(self, socket_path, vm_id, *, write, force=False, history=0):
        if self.refuse is not None:
            raise self.refuse
        self.opened.append({"kind": "console", "vm_id": vm_id, "write": write, "force": force,
                            "history": history})
        return await asyncio.open_connection(sock=self._pair(GUEST_SAYS))

    async def open_vnc(self, socket_path, vm_id):
        if self.refuse is not None:
            raise self.refuse
        self.opened.append({"kind": "vnc", "vm_id": vm_id})
        return self._pair(RFB_BANNER)

    def received(self) -> bytes:
        """What reached the broker's end (the session is over: read to EOF)."""
        assert self.peer is not None
        self.peer.settimeout(2)
        chunks = []
        while chunk := self.peer.recv(65536):
            chunks.append(chunk)
        return b"".join(chunks)


@dataclasses.dataclass
class Outcome:
    sent: list[dict[str, Any]]

    @property
    def status(self) -> int | None:
        """The HTTP status of a refused upgrade; None when it was accepted."""
        for message in self.sent:
            if message["type"] == "websocket.http.response.start":
                return message["status"]
        return None

    @property
    def accepted(self) -> bool:
        return any(m["type"] == "websocket.accept" for m in self.sent)

    @property
    def frames(self) -> bytes:
        return b"".join(m.get("bytes") or b"" for m in self.sent if m["type"] == "websocket.send")

    def header(self, name: bytes) -> bytes | None:
        for message in self.sent:
            for key, value in message.get("headers", ()):
                if key == name:
                    return value
        return None

    @property
    def body(self) -> bytes:
        return b"".join(m["body"] for m in self.sent if m["type"] == "websocket.http.response.body")

    @property
    def close_code(self) -> int | None:
        codes = [m["code"] for m in self.sent if m["type"] == "websocket.close"]
        return codes[-1] if codes else None


@dataclasses.dataclass
class World:
    service: Service
    endpoint: WebSockets
    broker: FakeBroker
    tokens: dict[str, str]
    token_ids: dict[str, str]

    def upgrade(self, path: str, query: str = "", caller: str | None = None,
                messages: list[dict[str, Any]] | None = None, extensions: bool = True,
                subprotocols: tuple[str, ...] = (), linger: float = 0.2) -> Outcome:
        """One upgrade request; after the accept, `messages` from the client, then
        (after `linger` s of relaying) the client leaves."""
        headers = []
        if caller is not None:
            headers.append((b"authorization", f"Bearer {self.tokens[caller]}".encode()))
        scope = {"type": "websocket", "path": path, "query_string": query.encode(),
                 "headers": headers, "client": ("127.0.0.9", 4242),
                 "subprotocols": list(subprotocols),
                 "extensions": {"websocket.http.response": {}} if extensions else {}}
        sent: list[dict[str, Any]] = []

        async def scenario() -> None:
            inbox: asyncio.Queue = asyncio.Queue()
            inbox.put_nowait({"type": "websocket.connect"})

            async def receive():
                return await inbox.get()

            async def send(message):
                sent.append(message)
                if message["type"] == "websocket.accept":
                    for item in messages or []:
                        inbox.put_nowait({"type": "websocket.receive", **item})
                    asyncio.get_running_loop().call_later(
                        linger, inbox.put_nowait, {"type": "websocket.disconnect", "code": 1000})

            await asyncio.wait_for(self.endpoint(scope, receive, send), 10)

        asyncio.run(scenario())
        return Outcome(sent)

    def ticket(self, caller: str, vm: str = "web1", kind: str = "console",
               project: str = DEFAULT_PROJECT) -> str:
        principal = tokens.principal_by_id(self.service.store, self.token_ids[caller])
        assert principal is not None
        with acting_as(principal.in_project(project)):
            return self.service.create_ticket({"vm": vm, "kind": kind})["ticket"]


def running(service: Service, name: str, project: str = DEFAULT_PROJECT) -> None:
    """As the controller would record it: the VM runs (no guest does here)."""
    service.store.db.execute("UPDATE vms SET observed_state = 'running' WHERE name = ? AND "
                             "project = ?", [name, project])


def build(service: Service) -> World:
    store = service.store
    store.insert_project({"name": "web", "description": "", "quota": {}, "created": 0.0})
    service.create_vm({"name": "web1", "state": "stopped"})
    service.create_vm({"name": "web2", "state": "stopped"})
    service.create_vm({"name": "headless", "state": "stopped", "graphics": "none"})
    with acting_as(Principal(user="system", role=Role.ADMIN, project="web")):
        service.create_vm({"name": "www1", "state": "stopped"})
    for name in ("web1", "web2", "headless"):
        running(service, name)
    running(service, "www1", "web")
    tokens.bootstrap(store, HOME_TOKEN)
    made, ids = {"admin": HOME_TOKEN}, {"admin": tokens.LEGACY_TOKEN_ID}
    for name, (role, projects) in USERS.items():
        store.insert_user({"name": name, "role": role.value, "projects": projects,
                           "created": time.time(), "disabled": 0})
        token_id, token = tokens.new_token()
        store.insert_token({"id": token_id, "user": name, "hash": tokens.token_hash(token),
                            "prefix": tokens.shown_prefix(token), "description": "",
                            "created": time.time(), "expires": None, "last_used": None,
                            "revoked": None})
        made[name], ids[name] = token, token_id
    made["bad-token"] = "vma_000000000000_" + "x" * 43
    broker = FakeBroker()
    endpoint = WebSockets(service, ThreadPoolExecutor(2), broker=broker)
    return World(service, endpoint, broker, made, ids)

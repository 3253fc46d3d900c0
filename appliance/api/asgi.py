"""The API's front: an ASGI app (run by gunicorn's uvicorn worker) around the WSGI Falcon app.

Why (issue 9, finding 7): under gunicorn's gthread worker a connection holds a
thread while its request line and headers arrive, so 17 clients sending
partial headers stalled `/healthz`; requests that wait for their operation
(`?wait=`, up to max_wait) held threads the same way. Here:

- HTTP is parsed in an event loop (uvicorn): a connection that never
  finishes its headers costs a socket and a few KiB, no thread, and is
  closed after a deadline (appliance/api/http_deadline.py).
- Small bodies are read in the loop too, under a deadline, before the request
  is handed to a thread: a client trickling its JSON holds no thread either.
- The WSGI app runs in a bounded pool of `config.threads` threads per worker.
  Requests that may wait long (writes, which wait for their operation unless
  `wait=false`; `GET /v1/operations/ID?wait=N`) and streamed uploads may
  occupy at most LONG_SHARE of it; the rest is kept for quick requests, so
  health checks and reads never queue behind waits. A wait that finds the
  long share full is answered at once, as with `wait=false` (202 and the
  operation to poll, or the operation as it is now): the API's documented
  answer when a wait is cut short. An upload that finds it full gets 503 with
  Retry-After.
- The thread hands its whole answer back to the loop (the API builds every
  answer in memory; nothing streams out), so a client that does not read its
  answer holds no thread, and a request costs one hop into the pool and one
  back.

WebSockets (scope type "websocket": the consoles) go to websocket.py, which
refuses or accepts them in the loop and relays their bytes there; only its
store and service calls take a moment of the pool.
"""
from __future__ import annotations

import asyncio
import importlib
import io
import json
import os
import re
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, cast
from urllib.parse import parse_qsl, urlencode

# a2wsgi: the WSGI environ from an ASGI scope, and a body read from the loop.
from a2wsgi import asgi_typing
from a2wsgi.wsgi import Body, build_environ
from a2wsgi.wsgi_typing import Environ

from appliance import memtrim

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# Bodies up to this size are read in full by the event loop before a thread
# sees the request (every JSON body; larger ones are image uploads, streamed).
BUFFERED_BODY = 4 * 1024 * 1024
# A buffered body must arrive within this; a streamed one may pause this long between chunks.
BODY_DEADLINE = 30.0
# The part of the thread pool that long requests may hold; the rest answers quick ones.
LONG_SHARE = 0.75
# Falcon's false spellings (Request.get_param_as_bool): a write with one of these does not wait.
FALSE_VALUES = frozenset(("false", "False", "f", "no", "n", "0", "off"))
OPERATION_PATH = re.compile(r"/v1/operations/[^/]+")
WRITE_METHODS = frozenset(("POST", "PUT", "PATCH", "DELETE"))
READ_METHODS = frozenset(("GET", "HEAD"))


def normal_path(path: str) -> str:
    """The path as Falcon's router matches it: repeated and trailing slashes do not count."""
    return re.sub(r"/{2,}", "/", path).rstrip("/") or "/"


def may_wait(method: str, path: str, query: list[tuple[str, str]]) -> bool:
    """Whether the request may block its thread for up to max_wait."""
    waits = [value for name, value in query if name == "wait"]
    if method in WRITE_METHODS:
        return not waits or any(value not in FALSE_VALUES for value in waits)
    if method in ("GET", "HEAD") and OPERATION_PATH.fullmatch(normal_path(path)):
        return any(value not in ("", "0", "0.0") for value in waits)
    return False


def without_wait(method: str, query: list[tuple[str, str]]) -> bytes:
    """The query string of the same request that answers at once."""
    kept = [(name, value) for name, value in query if name not in ("wait", "timeout")]
    kept.append(("wait", "false" if method in WRITE_METHODS else "0"))
    return urlencode(kept).encode("ascii")


def header(scope: Scope, name: bytes) -> bytes | None:
    """A request header's value (ASGI gives names in lower case), or None."""
    for key, value in scope.get("headers", ()):
        if key == name:
            return value
    return None


def streamed_header(scope: Scope) -> bool:
    """Whether the request says its body comes with a transfer coding (chunked)."""
    return header(scope, b"transfer-encoding") is not None


async def _answer(send: Send, status: int, error: str, reason: str,
                  headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"error": error, "reason": reason}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


class TooLarge(Exception):
    pass


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None when the client went away."""
    chunks, size = [], 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise TooLarge
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def with_idle_deadline(receive: Receive, seconds: float) -> Receive:
    """A streamed upload that pauses longer than `seconds` ends there (its
    thread sees a short body and the upload fails) instead of holding the thread."""

    async def bounded() -> Message:
        try:
            return await asyncio.wait_for(receive(), seconds)
        except TimeoutError:
            return {"type": "http.disconnect"}

    return bounded


class Front:
    """ASGI app: admission in the event loop, the WSGI app in a bounded pool."""

    def __init__(self, wsgi_app: Callable, threads: int):
        self.app = wsgi_app
        self.threads = max(2, threads)
        self.pool = ThreadPoolExecutor(max_workers=self.threads, thread_name_prefix="api")
        self.long_limit = max(1, min(self.threads - 1, int(self.threads * LONG_SHARE)))
        self.long_in_flight = 0  # touched only from the event loop: no lock
        # The consoles' WebSockets (websocket.py), set by get_app for the API's app.
        self.websockets: Callable[[Scope, Receive, Send], Awaitable[None]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "websocket" and self.websockets is not None:
            await self.websockets(scope, receive, send)
        # A WebSocket with no handler (an app without consoles): the server refuses it (403).

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.pool.shutdown(wait=False, cancel_futures=True)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        method = scope["method"]
        query = parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True)
        length = header(scope, b"content-length")
        streamed = (length is None and streamed_header(scope)) or (
            length is not None and length.isdigit() and int(length) > BUFFERED_BODY)
        long = streamed or may_wait(method, scope["path"], query)
        if long and self.long_in_flight >= self.long_limit:
            if streamed:
                await _answer(send, 503, "Service Unavailable",
                              f"{self.long_limit} long requests are in progress; try again shortly",
                              [(b"retry-after", b"5")])
                return
            scope = {**scope, "query_string": without_wait(method, query)}
            long = False
        loop = asyncio.get_running_loop()
        body: Body | io.BytesIO
        if streamed:
            # a2wsgi types the ASGI messages as TypedDicts; this module passes them on as dicts
            body = Body(loop, cast(asgi_typing.Receive, with_idle_deadline(receive, BODY_DEADLINE)))
        elif method in READ_METHODS and length in (None, b"0") and not streamed_header(scope):
            # No body by HTTP's framing (neither length nor transfer coding): nothing to
            # wait for. wait_for's task and timer were ~7 % of the loop's samples per GET;
            # a reader that left meanwhile costs one read (a write still checks, below).
            body = io.BytesIO(b"")
        else:
            try:
                data = await asyncio.wait_for(read_body(receive, BUFFERED_BODY), BODY_DEADLINE)
            except TimeoutError:
                await _answer(send, 408, "Request Timeout",
                              f"the request body did not arrive within {BODY_DEADLINE:g} s")
                return
            except TooLarge:
                await _answer(send, 413, "Payload Too Large",
                              f"a body without Content-Length may be at most {BUFFERED_BODY} bytes")
                return
            if data is None:
                return  # the client left
            body = io.BytesIO(data)
        if long:
            self.long_in_flight += 1
        try:
            # build_environ reads the body only through read()/readline(): a BytesIO holds a
            # buffered one as well as a2wsgi's Body streams one.
            environ = build_environ(cast(asgi_typing.HTTPScope, scope), cast(Body, body))
            status, headers, chunks = await loop.run_in_executor(self.pool, self._run, environ)
        finally:
            if long:
                self.long_in_flight -= 1
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"".join(chunks)})

    def _run(self, environ: Environ) -> tuple[int, list[tuple[bytes, bytes]], list[bytes]]:
        """In a pool thread: the WSGI app's whole answer."""
        answer: dict[str, Any] = {}
        chunks: list[bytes] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info=None):
            if exc_info is not None and answer:
                raise exc_info[1].with_traceback(exc_info[2])
            answer["status"] = int(status.split(" ", 1)[0])
            answer["headers"] = [(name.lower().encode("latin-1"), value.encode("latin-1"))
                                 for name, value in headers]
            return chunks.append  # WSGI's write()

        iterable = self.app(environ, start_response)
        try:
            chunks.extend(iterable)
        finally:
            close = getattr(iterable, "close", None)
            if close is not None:
                close()
        return answer["status"], answer["headers"], chunks


def load(spec: str) -> Callable:
    module, _, name = spec.partition(":")
    return getattr(importlib.import_module(module), name)


def get_app(wsgi_factory: str = "appliance.api.app:get_app") -> Front:
    """gunicorn's entry point (uvicorn worker): the WSGI app from `wsgi_factory`,
    with the pool size from HOME/config.json's `threads`."""
    from appliance.config import Config

    config = Config.load(os.environ.get("VMAPP_HOME", ".appliance"))
    front = Front(load(wsgi_factory)(), config.threads)
    if wsgi_factory == API_APP:
        front.websockets = consoles(config, front)
        memtrim.start()  # what a large answer freed, given back (appliance/memtrim.py)
    return front


API_APP = "appliance.api.app:get_app"
# What get_app imports, besides the factory's module, when it serves the API.
API_MODULES = ("appliance.config", "appliance.notify", "appliance.store", "appliance.service",
               "appliance.api.websocket")
APP_URI = re.compile(r"appliance\.api\.asgi:get_app\('(([\w.]+):\w+)'\)")


def preload(app_uri: str) -> None:
    """Import, in gunicorn's master, the modules that get_app would import in
    each worker (appliance/api/gunicorn_conf.py says why). `app_uri` is the app
    argument gunicorn_args gives gunicorn; nothing is built or opened here."""
    match = APP_URI.fullmatch(app_uri)
    if match is None:
        return
    importlib.import_module(match.group(2))
    if match.group(1) == API_APP:
        for module in API_MODULES:
            importlib.import_module(module)


def consoles(config: Any, front: Front) -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    """The consoles' WebSockets, on a service of their own over the home's store."""
    from appliance.api.websocket import WebSockets
    from appliance.service import Service
    from appliance.store import Store

    return WebSockets(Service(Store(config.db_path), config), front.pool)

"""The metadata service's HTTP, deliberately small: one GET or HEAD per connection
(`Connection: close`), a request head of at most MAX_HEAD bytes read within
HEAD_TIMEOUT seconds, a path of printable ASCII looked up in a tree of documents
(never a file, never a shell), and nothing else read from the client.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from appliance.metadata.documents import MAX_PATH, TEXT, Dir, answer

log = logging.getLogger("appliance.metadata")
MAX_HEAD = 8192
HEAD_TIMEOUT = 5.0
ANSWER_TIMEOUT = 15.0  # identifying the VM and building its documents
WRITE_TIMEOUT = 10.0
MAX_CONNECTIONS = 64  # per listener, at once; further ones get 503 straight away
# per source address, at once: one guest holding every connection (each open for up to
# HEAD_TIMEOUT + ANSWER_TIMEOUT + WRITE_TIMEOUT) would leave the others 503 only
MAX_PER_SOURCE = 16
QUIET_SECONDS, QUIET_SOURCES = 60.0, 256
METHODS = ("GET", "HEAD")
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
           431: "Request Header Fields Too Large", 503: "Service Unavailable",
           505: "HTTP Version Not Supported"}

Resolve = Callable[[str, int], Awaitable[Dir | None]]  # peer (ip, port) -> its documents


class BadRequest(Exception):
    def __init__(self, status: int):
        super().__init__(status)
        self.status = status


def parse_head(head: bytes) -> tuple[str, str]:
    """(method, path) of a request head; BadRequest(status) when it is refused."""
    line, _, _ = head.partition(b"\r\n")
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise BadRequest(400) from None
    parts = text.split(" ")
    if len(parts) != 3 or not text.isprintable():
        raise BadRequest(400)
    method, target, version = parts
    if version not in ("HTTP/1.0", "HTTP/1.1"):
        raise BadRequest(505)
    if method not in METHODS:
        raise BadRequest(405)
    path = target.partition("?")[0]
    if not path.startswith("/") or len(path) > MAX_PATH:
        raise BadRequest(404 if path.startswith("/") else 400)
    return method, path


def response(status: int, content_type: str, body: bytes, head_only: bool = False) -> bytes:
    headers = [f"HTTP/1.1 {status} {REASONS.get(status, 'Error')}",
               f"Content-Type: {content_type}", f"Content-Length: {len(body)}",
               "Connection: close", "Cache-Control: no-store"]
    if status == 405:
        headers.append("Allow: GET, HEAD")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + (b"" if head_only else body)


def _plain(status: int) -> bytes:
    return response(status, TEXT, REASONS.get(status, "Error").encode())


class Handler:
    """The connection handler of one listener (asyncio.start_server, limit=MAX_HEAD)."""

    def __init__(self, resolve: Resolve, max_connections: int = MAX_CONNECTIONS,
                 max_per_source: int = MAX_PER_SOURCE):
        self.resolve = resolve
        self.max_connections = max_connections
        self.max_per_source = max_per_source
        self.open = 0
        self.by_source: dict[str, int] = {}
        self._quiet: set[str] = set()  # sources refused and logged this minute
        self._quiet_since = time.monotonic()

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = str(peer[0]) if isinstance(peer, tuple) and peer else ""
        self.open += 1
        self.by_source[source] = self.by_source.get(source, 0) + 1
        try:
            if self.open > self.max_connections or self.by_source[source] > self.max_per_source:
                await self._send(writer, _plain(503))
                return
            await self._send(writer, await self._answer(reader, writer))
        except Exception:  # one connection's fault stays its own  # noqa: BLE001
            log.exception("metadata request failed")
        finally:
            self.open -= 1
            self.by_source[source] -= 1
            if not self.by_source[source]:
                del self.by_source[source]
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bytes:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
        except (asyncio.LimitOverrunError, ValueError):
            return _plain(431)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            return b""
        try:
            method, path = parse_head(head)
        except BadRequest as err:
            return _plain(err.status)
        peer = writer.get_extra_info("peername")
        if not isinstance(peer, tuple) or len(peer) < 2:
            return _plain(404)
        try:
            root = await asyncio.wait_for(self.resolve(str(peer[0]), int(peer[1])), ANSWER_TIMEOUT)
        except TimeoutError:
            return _plain(503)
        if root is None:
            self._said_nobody(str(peer[0]), method, path)
            return _plain(404)
        status, content_type, body = answer(root, path)
        return response(status, content_type, body, head_only=method == "HEAD")

    def _said_nobody(self, ip: str, method: str, path: str) -> None:
        """Log a refused source once a minute at most (a guest asking in a loop would
        fill the log), for at most QUIET_SOURCES sources at once."""
        now = time.monotonic()
        if now - self._quiet_since > QUIET_SECONDS:
            self._quiet.clear()
            self._quiet_since = now
        if ip in self._quiet or len(self._quiet) >= QUIET_SOURCES:
            return
        self._quiet.add(ip)
        log.info("metadata: no VM of the appliance at %s (%s %s): 404", ip, method, path)

    @staticmethod
    async def _send(writer: asyncio.StreamWriter, data: bytes) -> None:
        if not data:
            return
        writer.write(data)
        try:
            await asyncio.wait_for(writer.drain(), WRITE_TIMEOUT)
        except (TimeoutError, ConnectionError):
            pass

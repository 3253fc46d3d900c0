"""gunicorn's uvicorn worker, with a deadline on a request's line and headers.

Parsing in an event loop already keeps slow clients from holding threads
(appliance/api/asgi.py), but uvicorn has no deadline for the request head: a
connection that never finishes its headers stays open for good, costing a
file descriptor, and enough of them exhaust the worker's descriptor limit so
that nothing, not even /healthz, can connect. Here a connection whose request
line and headers are not complete HEADER_DEADLINE seconds after it opened (or
after the request's first byte, on a kept-alive connection) is closed, as
nginx's client_header_timeout and Apache's mod_reqtimeout do.
"""
from __future__ import annotations

import asyncio
from typing import Any, ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn_worker import UvicornWorker

# Any real client sends its request head in well under a second; this leaves
# room for a slow link and still frees a stalled connection's descriptor soon.
HEADER_DEADLINE = 15.0


class HeaderDeadlineProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, closing connections whose request head stalls."""

    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._arm_head_timer()

    def on_headers_complete(self) -> None:
        self._cancel_head_timer()
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(HEADER_DEADLINE, self._head_too_slow)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if not self.transport.is_closing():
            self.transport.close()


class Worker(UvicornWorker):
    """What gunicorn_args names as the worker class."""

    CONFIG_KWARGS: ClassVar[dict[str, Any]] = {
        **UvicornWorker.CONFIG_KWARGS,
        "http": HeaderDeadlineProtocol,
        # The client's address is the connection's: uvicorn would take X-Forwarded-For
        # from loopback peers (gunicorn's forwarded_allow_ips), and every local user and
        # default guest (slirp's 10.0.2.2) is one; the audit trail names that address.
        "proxy_headers": False,
        # The consoles' WebSockets (websocket.py): a client message is at most 64 KiB
        # (uvicorn closes the socket with 1009 past it, before buffering more), and no
        # compression: console bytes are few, VNC encodes its own, and inflating a
        # client's frames would let a small message grow in memory.
        "ws_max_size": 64 * 1024,
        "ws_per_message_deflate": False,
    }

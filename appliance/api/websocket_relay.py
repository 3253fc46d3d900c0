"""The bytes of an accepted console WebSocket (websocket.py), both ways.

Out: what the broker's connection yields (the serial port's bytes, or the
RFB server's), as binary frames, each at most READ_CHUNK; `send` waits while
the client's socket is full (uvicorn's flow control), so a slow client slows
its own reads from the broker, whose queue per client is bounded (it drops
a client whose queue passes 1 MiB).

In: each client message, binary or text (a text frame is its UTF-8 bytes:
xterm.js sends strings), at most MAX_MESSAGE bytes (uvicorn refuses larger
ones first, with 1009, as the worker is configured; checked here too). A
read-only console drops them (the broker would too: it is told write=false);
a read-only VNC session passes them through the RFB filter
(appliance/consoles/rfb.py), which drops input and closes on what it cannot
parse (1008). The WebSocket closes when the broker's side ends (the VM
stopped: 1000) and the broker's connection when the client leaves.
"""
from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Callable

from appliance.consoles.rfb import ReadOnlyFilter, RFBRefused
from appliance.model.access import ConsoleKind

log = logging.getLogger("vmctl.websocket")

MAX_MESSAGE = 64 * 1024
READ_CHUNK = 64 * 1024
CLOSE_NORMAL, CLOSE_POLICY, CLOSE_TOO_BIG = 1000, 1008, 1009


@dataclasses.dataclass
class Backend:
    """The broker's side of a session: a console connection, or the RFB socket."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    def close(self) -> None:
        self.writer.close()


class Closed(Exception):
    """The session ends with this close code and reason (sent to the client)."""

    def __init__(self, code: int, reason: str = ""):
        super().__init__(reason)
        self.code, self.reason = code, reason


async def _outward(backend: Backend, send: Callable) -> None:
    while True:
        chunk = await backend.reader.read(READ_CHUNK)
        if not chunk:
            raise Closed(CLOSE_NORMAL, "the console ended")
        await send({"type": "websocket.send", "bytes": chunk})


async def _inward(receive: Callable, backend: Backend, kind: ConsoleKind, write: bool) -> None:
    rfb = ReadOnlyFilter() if kind == ConsoleKind.VNC and not write else None
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if message["type"] != "websocket.receive":
            continue
        data = message.get("bytes")
        if data is None:
            data = (message.get("text") or "").encode()
        if len(data) > MAX_MESSAGE:
            raise Closed(CLOSE_TOO_BIG, f"a message may be at most {MAX_MESSAGE} bytes")
        if rfb is not None:
            try:
                data = rfb.feed(data)
            except RFBRefused as err:
                raise Closed(CLOSE_POLICY, f"read-only session: {err}") from None
        elif not write:
            continue  # a read-only console: keystrokes go nowhere
        if data:
            backend.writer.write(data)
            await backend.writer.drain()


async def relay(receive: Callable, send: Callable, backend: Backend, kind: ConsoleKind,
                write: bool) -> None:
    """Until either side ends; then the other is closed too."""
    outward = asyncio.create_task(_outward(backend, send))
    inward = asyncio.create_task(_inward(receive, backend, kind, write))
    done, pending = await asyncio.wait({outward, inward}, return_when=asyncio.FIRST_COMPLETED)
    for task in pending:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
    backend.close()
    closing: Closed | None = None
    for task in done:
        err = task.exception()
        if isinstance(err, Closed):
            closing = err
        elif isinstance(err, (ConnectionError, OSError)):
            closing = Closed(CLOSE_NORMAL, "the console connection ended")
        elif err is not None:
            log.error("console relay failed", exc_info=err)
            closing = Closed(1011, "internal error")
    if inward in done and closing is None:
        return  # the client left: nothing to close toward it
    closing = closing or Closed(CLOSE_NORMAL)
    with contextlib.suppress(Exception):
        await send({"type": "websocket.close", "code": closing.code, "reason": closing.reason})

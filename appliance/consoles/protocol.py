"""The console broker's wire protocol: one JSON line each way, then raw bytes.

The client sends ONE line (at most HEADER_MAX bytes with its newline):
`{"op": "console"|"vnc"|"screenshot"|"input", "vm": VM_ID, ...}`; the broker
answers ONE line: `{"ok": true, ...}` or `{"ok": false, "status": 404|409|500|503,
"reason": "...", "field": ...}`. What follows depends on the op (see
broker.py). Every request field is checked here, so the broker's handlers see
only well-formed, bounded values.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import uuid
from http import HTTPStatus
from typing import Any

from appliance.errors import ApplianceError, Conflict, Failed, NotFound

HEADER_MAX = 4096  # bytes of a request line, its newline included
REPLY_MAX = 4096  # bytes of a reply line
HISTORY_MAX = 65536  # bytes of console.log a console client may ask for first
INPUT_MAX = 65536  # bytes of one input request
HEADER_TIMEOUT = 10.0  # seconds a client has to send its request line
OPS = ("console", "vnc", "screenshot", "input")


class ConsoleUnavailable(Failed):
    """The console broker is not running, or cannot reach the VM's host: 503."""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE


class BadRequest(ApplianceError):
    """A request line the broker cannot take (answered 400, then closed)."""


@dataclasses.dataclass(frozen=True)
class Request:
    op: str
    vm: str
    write: bool = False
    force: bool = False
    history: int = 0
    size: int = 0


def _flag(data: dict[str, Any], name: str) -> bool:
    value = data.get(name, False)
    if not isinstance(value, bool):
        raise BadRequest(f"{name} must be true or false", name)
    return value


def _count(data: dict[str, Any], name: str, most: int) -> int:
    value = data.get(name, 0)
    # bool is an int in Python: true is not a size
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= most:
        raise BadRequest(f"{name} must be a whole number from 0 to {most}", name)
    return value


def parse_request(line: bytes) -> Request:
    """The request in one line from a client; BadRequest naming the field otherwise."""
    if len(line) > HEADER_MAX:
        raise BadRequest(f"the request line is longer than {HEADER_MAX} bytes")
    try:
        data = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        raise BadRequest("the request line is not JSON") from None
    if not isinstance(data, dict):
        raise BadRequest("the request line is not a JSON object")
    op = data.get("op")
    if op not in OPS:
        raise BadRequest(f"op must be one of {', '.join(OPS)}", "op")
    vm = data.get("vm")
    if not isinstance(vm, str) or not is_vm_id(vm):
        raise BadRequest("vm must be a VM id (a UUID)", "vm")
    unknown = set(data) - {"op", "vm", "write", "force", "history", "size"}
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r}", sorted(unknown)[0])
    return Request(op=op, vm=vm, write=_flag(data, "write"), force=_flag(data, "force"),
                   history=_count(data, "history", HISTORY_MAX),
                   size=_count(data, "size", INPUT_MAX))


def is_vm_id(text: str) -> bool:
    """Whether text is a UUID in its canonical form (VM ids are; they name folders)."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def ok(**fields: Any) -> bytes:
    return encode({"ok": True, **fields})


def refusal(err: ApplianceError) -> bytes:
    """The error line for a refusal: its status, reason and field."""
    status = 400 if isinstance(err, BadRequest) else int(err.http_status)
    out: dict[str, Any] = {"ok": False, "status": status, "reason": err.reason}
    if err.field is not None:
        out["field"] = err.field
    return encode(out)


def error_from(reply: dict[str, Any]) -> ApplianceError:
    """The exception a refusal line stands for (the client side of `refusal`)."""
    status, reason = reply.get("status"), str(reply.get("reason") or "refused")
    field = reply.get("field")
    field = field if isinstance(field, str) else None
    if status == 404:
        return NotFound(reason, field)
    if status == 409:
        return Conflict(reason, field)
    if status == 503:
        return ConsoleUnavailable(reason, field)
    return Failed(reason, field)


def parse_reply(line: bytes) -> dict[str, Any]:
    """The broker's reply line; raises what a refusal stands for."""
    if not line.endswith(b"\n") or len(line) > REPLY_MAX:
        raise ConsoleUnavailable("the console broker closed the connection without an answer")
    try:
        reply = json.loads(line)
    except ValueError:
        raise Failed("the console broker's answer is not JSON") from None
    if not isinstance(reply, dict):
        raise Failed("the console broker's answer is not a JSON object")
    if reply.get("ok") is not True:
        raise error_from(reply)
    return reply


async def read_line(reader: asyncio.StreamReader, most: int, timeout: float) -> bytes:
    """One line of at most `most` bytes, within `timeout` seconds; BadRequest otherwise.
    The reader's limit must be at least `most` (the broker's server sets it)."""
    try:
        line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except TimeoutError:
        raise BadRequest(f"no request line within {timeout:g} s") from None
    except asyncio.LimitOverrunError:
        raise BadRequest(f"the request line is longer than {most} bytes") from None
    except asyncio.IncompleteReadError:
        raise BadRequest("the connection closed before a whole request line") from None
    if len(line) > most:
        raise BadRequest(f"the request line is longer than {most} bytes")
    return line

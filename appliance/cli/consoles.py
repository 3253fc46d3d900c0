"""vmctl console, vnc and screenshot: a VM's serial console in this terminal,
a browser URL for its VNC console, its screen as a PNG file.

`console` talks to the WebSocket /v1/vms/NAME/console with the REST client's
base URL, token, --project and TLS trust (appliance/client.py: the same SSL
context, so a pinned fingerprint is checked before the token is sent); the
terminal side is appliance/cli/terminal.py. `console --log [-f]` prints the
console's log instead (appliance/cli/vms.py), as `console` did before it could
attach.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import stat
import sys
import termios
import time
import urllib.parse
from pathlib import Path

from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedOK,
    InvalidHandshake,
    InvalidMessage,
    InvalidStatus,
    InvalidURI,
)
from websockets.sync.client import ClientConnection, connect

from appliance import durable
from appliance.access import policy
from appliance.access.principal import Role
from appliance.cli import terminal, vms
from appliance.client import APIError, Client, FingerprintMismatch

OPEN_TIMEOUT = 30.0  # the handshake waits for the broker to attach to the VM's host
HANDSHAKE_ATTEMPTS = 2  # a connection that ends before any answer is tried once more
RETRY_PAUSE = 0.5
MAX_FRAME = 1 << 20  # the server sends console output in small chunks; more is not a console
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A server's close codes that mean "the console ended as it should" (the VM stopped, or
# the server is going away): exit status 0, as virsh console when the domain stops.
NORMAL_CLOSE_CODES = (1000, 1001)
# websockets logs from its reader thread when the server ends the stream right after a
# refused handshake (an "unexpected internal error", EOFError): a race it loses at random,
# printed to stderr by logging's last-resort handler ahead of vmctl's own message. The
# refusal reaches the user as APIError all the same, so that logger says nothing here.
_WEBSOCKET_LOG = logging.getLogger("vmctl.websocket")
_WEBSOCKET_LOG.addHandler(logging.NullHandler())
_WEBSOCKET_LOG.propagate = False


class _WebSocketConsole:
    """terminal.ConsoleSocket over a websockets connection: bytes both ways,
    ConsoleClosed with the server's close code and reason."""

    def __init__(self, connection: ClientConnection):
        self.connection = connection

    def send(self, data: bytes) -> None:
        try:
            self.connection.send(data)
        except ConnectionClosed as closed:
            raise _closed(closed) from None

    def recv(self) -> bytes:
        try:
            message = self.connection.recv(decode=False)
        except ConnectionClosed as closed:
            raise _closed(closed) from None
        return message if isinstance(message, bytes) else bytes(message)

    def close(self) -> None:
        self.connection.close()


def _closed(closed: ConnectionClosed) -> terminal.ConsoleClosed:
    if closed.rcvd is not None:
        return terminal.ConsoleClosed(closed.rcvd.code, closed.rcvd.reason)
    code = 1000 if isinstance(closed, ConnectionClosedOK) else 1006
    return terminal.ConsoleClosed(code, "the connection was lost" if code == 1006 else "")


def websocket_url(client: Client, path: str, query: dict[str, str]) -> str:
    """The REST base URL with ws:// or wss://, --project added as every request has it."""
    if client.project is not None:
        query = {**query, "project": client.project}
    base = "ws" + client.base_url.removeprefix("http")  # http: -> ws:, https: -> wss:
    return base + path + ("?" + urllib.parse.urlencode(query) if query else "")


def open_websocket(client: Client, path: str, query: dict[str, str]) -> ClientConnection:
    """The WebSocket at path with the token in the Authorization header; a
    refusal raises APIError with the API's status and reason, as REST calls do.
    A connection that ends before any answer (a worker the server restarted, or
    a reset that took the answer with it) is tried once more, as HTTP clients
    retry an idempotent request: the handshake changes nothing until it is accepted."""
    url = websocket_url(client, path, query)
    headers = {"Authorization": f"Bearer {client.token}"} if client.token else {}
    for attempt in range(1, HANDSHAKE_ATTEMPTS + 1):
        try:
            return connect(url, ssl=client.ssl_context, additional_headers=headers,
                           open_timeout=OPEN_TIMEOUT, max_size=MAX_FRAME,
                           compression=None,  # keystrokes are a few bytes: deflate adds latency
                           user_agent_header="vmctl", logger=_WEBSOCKET_LOG, legacy=True)
        except InvalidStatus as err:
            raise APIError(err.response.status_code, _body(err.response.body)) from None
        except FingerprintMismatch as err:
            raise APIError(0, {"reason": str(err.args[0])}) from None
        except (OSError, TimeoutError) as err:
            raise APIError(0, {"reason": f"cannot reach the appliance at {client.base_url}: "
                                         f"{err or type(err).__name__}"}) from None
        except InvalidMessage as err:
            if _no_answer(err) and attempt < HANDSHAKE_ATTEMPTS:
                time.sleep(RETRY_PAUSE)
                continue
            raise APIError(0, {"reason": f"the WebSocket handshake with {client.base_url} "
                                         f"failed: {_with_cause(err)}"}) from None
        except (InvalidHandshake, InvalidURI) as err:
            raise APIError(0, {"reason": f"the WebSocket handshake with {client.base_url} "
                                         f"failed: {err}"}) from None
    raise AssertionError("unreachable: the last attempt returns or raises")


def _no_answer(err: InvalidMessage) -> bool:
    """The connection ended (or was reset) before an HTTP answer began."""
    return isinstance(err.__cause__, (EOFError, ConnectionError))


def _with_cause(err: InvalidMessage) -> str:
    cause = err.__cause__
    if isinstance(cause, EOFError):
        return f"{err} (the connection ended first: {cause or 'no bytes'})"
    return f"{err} ({type(cause).__name__}: {cause})" if cause is not None else str(err)


def _body(raw: bytes | bytearray) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return bytes(raw).decode(errors="replace").strip() or "refused"


def cmd_console(client: Client, args: argparse.Namespace) -> int:
    if args.log or args.follow:
        if args.read_only or args.force or args.history:
            print("vmctl console: --read-only, --force and --history are for attaching, "
                  "not with --log", file=sys.stderr)
            return 2
        return vms.print_console_log(client, args)
    return attach(client, args.name, read_only=args.read_only, force=args.force,
                  history=args.history)


def attach(client: Client, name: str, *, read_only: bool, force: bool, history: int) -> int:
    query = {"history": str(history)} if history else {}
    if read_only:
        query["mode"] = "ro"
    if force:
        query["force"] = "true"
    path = f"/v1/vms/{urllib.parse.quote(name, safe='')}/console"
    connection = open_websocket(client, path, query)
    interactive = os.isatty(sys.stdin.fileno())
    notes = ["escape character is ^]" if interactive else "until the end of stdin"]
    notes += ["read-only"] if read_only else _read_only_role(client)
    print(f"Connected to {name} ({'; '.join(notes)})", file=sys.stderr, flush=True)
    try:
        with terminal.signals_raise(), terminal.raw_terminal(sys.stdin.fileno()):
            outcome = terminal.pump(_WebSocketConsole(connection), sys.stdin.fileno(),
                                    sys.stdout.fileno(), interactive=interactive)
    except terminal.Terminated as err:
        print(f"\nvmctl console: {err} received: detached from {name}", file=sys.stderr)
        return 128 + err.signum
    except (OSError, termios.error) as err:  # the terminal or stdin/stdout failed
        print(f"\nvmctl console: {err}", file=sys.stderr)
        return 1
    finally:
        connection.close()
    return _report(name, outcome, interactive)


def _read_only_role(client: Client) -> list[str]:
    """What the Connected line says when the token's role may not type (the
    API drops a viewer's keys without a word; this says so up front). Nothing
    when it may, or when /v1/me does not say."""
    try:
        role = Role(client.get("/v1/me")["role"])
    except (APIError, KeyError, TypeError, ValueError):
        return []
    if policy.allows(role, policy.WEBSOCKET_INPUT):
        return []
    return [f"read-only: a {role}'s keys are dropped"]


def _report(name: str, outcome: terminal.Outcome, interactive: bool) -> int:
    if outcome.how in ("detached", "eof"):
        if interactive:
            print(file=sys.stderr)  # the shell's prompt on a line of its own
        return 0
    if outcome.how == "output":
        return 0  # stdout went away (a pipe's reader left): as a BrokenPipe elsewhere
    reason = outcome.reason or "the appliance closed the connection"
    print(f"\nvmctl console: {name}: {reason}", file=sys.stderr)
    return 0 if outcome.code in NORMAL_CLOSE_CODES else 1


def vnc_url(base_url: str, name: str, ticket: str, project: str | None) -> str:
    """The web page's bare VNC console for this ticket (part of the page: #vnc?...)."""
    fragment = {"vm": name, "ticket": ticket}
    if project is not None:
        fragment["project"] = project
    return f"{base_url}/#vnc?{urllib.parse.urlencode(fragment)}"


def cmd_vnc(client: Client, args: argparse.Namespace) -> int:
    ticket = client.request("POST", "/v1/tickets", body={"vm": args.name, "kind": "vnc"})
    url = vnc_url(client.base_url, args.name, ticket["ticket"], client.project)
    if args.json:
        print(json.dumps({**ticket, "url": url}))
        return 0
    print(url)
    view = "" if ticket.get("write", True) else "; view only: your role may not type"
    print(f"(open it in a browser: valid once, for 60 s, until {ticket.get('expires')}{view})",
          file=sys.stderr)
    return 0


def cmd_screenshot(client: Client, args: argparse.Namespace) -> int:
    to_stdout = args.file == "-"
    if to_stdout and sys.stdout.isatty():
        print("vmctl screenshot: not writing a PNG to a terminal: name a FILE, "
              "or redirect stdout", file=sys.stderr)
        return 2
    target = Path(args.file)
    if not to_stdout and target.is_dir():
        print(f"vmctl screenshot: {target} is a directory: name the file to write",
              file=sys.stderr)
        return 2
    path = f"/v1/vms/{urllib.parse.quote(args.name, safe='')}/screen.png"
    png = client.request("GET", path, binary=True)
    if not png.startswith(PNG_SIGNATURE):
        print("vmctl screenshot: the appliance's answer is not a PNG image", file=sys.stderr)
        return 1
    if to_stdout:
        sys.stdout.buffer.write(png)
        sys.stdout.flush()
        return 0
    try:
        write_atomically(target, png)
    except OSError as err:
        print(f"vmctl screenshot: cannot write {target}: {err.strerror or err}", file=sys.stderr)
        return 1
    if not args.json:
        print(f"{target}: {len(png)} bytes, {args.name}'s screen")
    return 0


def write_atomically(target: Path, data: bytes) -> None:
    """A reader of target sees the old file or the whole new one, never a
    part: a temporary file beside it, synced, renamed over it (durable.replacing)."""
    with durable.replacing(target, _new_file_mode(target)) as out:
        out.write(data)


def _new_file_mode(target: Path) -> int:
    """An existing file keeps its mode; a new one gets 0666 less the umask,
    as open() would have given it (mkstemp makes 0600)."""
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except OSError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask

"""The OpenAPI document's consoles: POST /v1/tickets and the two WebSockets
(appliance/api/websocket.py), merged into openapi.py's SCHEMAS and PATHS.

OpenAPI has no WebSocket operation; a WebSocket is documented as what it is on
the wire, a GET answered 101 Switching Protocols, marked `x-websocket: true`
(the role x route matrix checks these against policy.WEBSOCKETS). The same
GET without `Upgrade: websocket` reaches the REST route of the VM's files:
`console` is the console log, `vnc` is no file (404).
"""
from __future__ import annotations

from appliance.access.tickets import MAX_LIVE_PER_TOKEN
from appliance.api.openapi_shared import (
    ERROR,
    ERRORS,
    NAME,
    boolean,
    integer,
    json_answer,
    ref,
    string,
)
from appliance.model.access import CONSOLE_KINDS, TicketCreate
from appliance.model.schema import model_components

# The frame bounds and refusals websocket.py applies (documented here, checked there).
MAX_FRAME = 64 * 1024
MAX_HISTORY = 65536

SCHEMAS = {
    **model_components(TicketCreate),
    "Ticket": {
        "type": "object", "required": ["ticket", "vm", "kind", "write", "expires", "path"],
        "properties": {
            "ticket": string(description="vmt_...: put it in the WebSocket's URL as "
                                         "?ticket=; it works once, for this VM and kind"),
            "vm": string(), "kind": string(enum=list(CONSOLE_KINDS)),
            "write": boolean(description="whether the caller's role may type (false: the "
                                         "console will be read-only)"),
            "expires": string(format="date-time"),
            "path": string(description="the WebSocket's path"),
        },
    },
}

_CREDENTIALS = (
    "Credentials: `Authorization: Bearer TOKEN`, or `?ticket=` from POST /v1/tickets "
    "(browsers, which cannot set the header). Refusals come before the upgrade, as HTTP "
    "answers with an Error body: 401 without valid credentials (a ticket used, expired, or "
    "whose token was revoked), 403 for a role that may not attach, 404 for a VM not in the "
    "caller's project (or not the ticket's), 409 when it is not running (or, for vnc, has "
    "graphics none), 503 when the console service is down or the worker holds its most "
    "WebSockets. A viewer (a role without console-input) is attached read-only, as is "
    "anyone who asks `mode=ro`. Every attach is recorded in the VM's events (who, rw or ro). "
    f"A client message over {MAX_FRAME} bytes closes the WebSocket (1009).")
_SESSION = {
    "101": {"description": "Switching Protocols: the WebSocket is open"},
    "409": {**ERROR, "description": "the VM is not running (or has graphics none), or the "
                                    "console is held elsewhere (see force)"},
    "503": {**ERROR, "description": "the console service is not running, or too many "
                                    "WebSockets are open"},
}
_MODE = {"name": "mode", "in": "query", "schema": string(enum=["ro", "rw"]),
         "description": "ro: attach read-only even if the role may type"}
# The ticket is a credential: a security scheme (openapi.py's components), not a parameter.
TICKET_SCHEME = {"type": "apiKey", "in": "query", "name": "ticket",
                 "description": "vmt_...: a ticket from POST /v1/tickets (WebSockets only)"}
_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}, {"ticket": []}]

PATHS = {
    "/v1/tickets": {
        "post": {"summary": "a one-use console ticket for a browser's WebSocket",
                 "description": "Valid for config ticket_ttl seconds (60 by default), for one "
                                "WebSocket to this VM's console of this kind, and only while "
                                "the token that asked for it is valid. A token holds at most "
                                f"{MAX_LIVE_PER_TOKEN} unused tickets (409 beyond).",
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": ref("TicketCreate")}}},
                 "responses": {"201": json_answer(ref("Ticket"), "made"), **ERRORS}},
    },
    "/v1/vms/{name}/console": {
        "parameters": [NAME],
        "get": {
            "summary": "the serial console as a WebSocket (Upgrade: websocket); without the "
                       "upgrade, the console log",
            "x-websocket": True, "security": _SECURITY,
            "description": "Frames: binary both ways, the serial port's raw bytes; a text "
                           "frame from the client is its UTF-8 bytes (xterm.js sends "
                           "strings). Every attached client sees the output; all writers "
                           "type into one shared session (as `screen -x`). The socket closes "
                           "when the VM's console ends (it stopped). No subprotocol is "
                           "needed; `binary` is accepted when offered. " + _CREDENTIALS,
            "parameters": [_MODE,
                           {"name": "history", "in": "query",
                            "schema": integer(minimum=0, maximum=MAX_HISTORY),
                            "description": "send the last N bytes of the console log first"},
                           {"name": "force", "in": "query", "schema": boolean(),
                            "description": "take the console from a holder outside the "
                                           "appliance (virsh console on the host)"}],
            "responses": {**_SESSION, "200": {"description": "without the upgrade: the "
                                                             "console log", "content": {
                "text/plain": {"schema": string()}}}, **ERRORS},
        },
    },
    "/v1/vms/{name}/vnc": {
        "parameters": [NAME],
        "get": {
            "summary": "the VM's display as RFB (VNC) over a WebSocket, for noVNC",
            "x-websocket": True, "security": _SECURITY,
            "description": "Frames: binary both ways, the RFB protocol's bytes (the server "
                           "speaks first: `RFB 003.008`, security None, as the appliance "
                           "has authenticated the caller). A read-only session's client "
                           "messages are filtered: SetPixelFormat, SetEncodings, "
                           "FramebufferUpdateRequest (and fences, continuous updates) pass; "
                           "key, pointer, clipboard and desktop-size messages are dropped; "
                           "anything else closes the socket; its ClientInit is made shared, "
                           "so it cannot push other viewers off. " + _CREDENTIALS,
            "parameters": [_MODE],
            "responses": {**_SESSION, **ERRORS,
                          "404": {**ERROR, "description": "no such VM in the caller's "
                                                          "project; without the upgrade, "
                                                          "always (vnc is no file)"}},
        },
    },
}

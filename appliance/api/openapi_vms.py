"""The OpenAPI document's VMs, their files, operations and events (merged into
openapi.py's SCHEMAS and PATHS)."""
from __future__ import annotations

from typing import Any

from appliance.api.openapi_shared import (
    ALL_PROJECTS,
    ERROR,
    ERRORS,
    IF_MATCH,
    NAME,
    NOT_ADMIN,
    WAIT,
    boolean,
    integer,
    json_answer,
    list_of,
    number,
    ref,
    string,
)
from appliance.files import CONSOLE_INPUT_MAX_BYTES, VM_FILES
from appliance.model import STATE_VERBS, OpStatus, VMState

# A locked VM refuses every change but its locker's and an admin's (service/base.py).
CHANGE_ERRORS = {**ERRORS, "409": {**ERROR, "description": "conflicts with the current state, "
                                                           "or another user locked the VM"}}


def write_responses(ok: dict) -> dict:
    return {"200": ok, "202": json_answer(ref("Accepted"), "accepted (wait=false)"),
            **CHANGE_ERRORS}


# The console typed into, and the screen: files of their own kinds (appliance/files.py).
UNAVAILABLE = {**ERROR, "description": "the console broker is not running (vmctl serve starts "
                                       "it), or the VM's host cannot be reached"}
STOPPED = {**ERROR, "description": "the VM is not running (or, for the screen, has no display: "
                                   "graphics none)"}
STOPPED_OR_CHANGE = {**ERROR, "description": "conflicts with the current state, another user "
                                             "locked the VM, or (console) it is not running"}
# screen.png has a path of its own; the console's log (GET) and typing (PUT) are the
# {file} route's (its WebSocket, a GET with Upgrade, is openapi_consoles.py's own path).
SCREEN_PATHS: dict[str, Any] = {
    "/v1/vms/{name}/screen.png": {
        "parameters": [NAME],
        "get": {"summary": "a screenshot of the VM's display, taken now",
                "responses": {"200": {"description": "PNG", "content": {
                    "image/png": {"schema": string(format="binary")}}},
                    **ERRORS, "409": STOPPED, "503": UNAVAILABLE}},
    },
}

SCHEMAS = {
    "Typed": {"type": "object", "required": ["name", "typed"],
              "description": "bytes typed into the VM's serial port",
              "properties": {"name": string(), "typed": integer()}},
    "VM": {
        "type": "object",
        "required": ["id", "name", "state", "desired_state", "generation", "spec"],
        "properties": {
            "id": string(), "name": string(), "project": string(),
            "state": string(enum=list(VMState)),
            "desired_state": string(), "reason": string(),
            "host": string(nullable=True), "generation": integer(),
            "spec": ref("Spec"), "restart_required": boolean(), "ready": boolean(),
            "template": {"type": "object", "nullable": True, "description": (
                "the template and revision it was made from (null: a clone or a restore); "
                "a later change of the template never reaches the VM"),
                "properties": {"name": string(), "revision": integer(nullable=True)}},
            "pending_changes": {"type": "array", "items": string(), "description": (
                "spec fields the running VM waits to have until its next restart "
                "(RestartRequired); changes applied live are not listed")},
            "created": number(), "updated": number(),
            "lock": {"nullable": True, "allOf": [ref("Lock")]},
            "operation": {"nullable": True, "allOf": [ref("Operation")]},
        },
    },
    "Operation": {
        "type": "object", "required": ["id", "kind", "status"],
        "properties": {"id": string(), "project": string(),
                       # null for an image copied into the mount's images/ (image-import)
                       "vm_id": string(nullable=True), "vm_name": string(nullable=True),
                       "kind": string(),
                       "status": {"type": "string", "enum": list(OpStatus)},
                       "progress": integer(), "params": {"type": "object"},
                       "bytes_done": integer(nullable=True, description=(
                           "a copy's bytes done (backup, restore, clone); null without one")),
                       "bytes_total": integer(nullable=True),
                       "error": string(nullable=True),
                       "error_field": string(nullable=True, description=(
                           "set when the failure was a refusal (answered 409): the field")),
                       "created": number(),
                       "started": number(nullable=True),
                       "finished": number(nullable=True)},
    },
    "Accepted": {"type": "object", "required": ["operation"],
                 "properties": {"operation": ref("Operation")}},
    "Event": {
        "type": "object",
        "properties": {"id": integer(), "time": number(),
                       "vm_id": string(nullable=True), "vm_name": string(nullable=True),
                       "project": string(nullable=True, description="null: the appliance's own "
                                                                    "(hosts, images)"),
                       "kind": string(), "message": string(),
                       "operation": string(nullable=True),
                       "actor": string(nullable=True, description="who: a user, or system"),
                       "source": string(nullable=True,
                                        description="from where: a client address, mount, local"),
                       "credential": string(nullable=True,
                                            description="token ID, or uid N (the mount)"),
                       "result": string(nullable=True,
                                        description="a write's outcome: ok, or the status or "
                                                    "errno with the error and its reason")},
    },
    "Lock": {
        "type": "object", "required": ["by", "reason"],
        "description": "a locked VM changes only by its locker's or an admin's request",
        "properties": {"by": string(), "reason": string(maxLength=200), "at": number()},
    },
}

PATHS: dict[str, Any] = {
    "/v1/vms": {
        "get": {"summary": "list VMs", "parameters": [
            {"name": "state", "in": "query", "schema": string()},
            {"name": "label", "in": "query", "schema": string(), "description": "key or key=value"},
            {"name": "host", "in": "query", "schema": string()}, ALL_PROJECTS],
            "responses": {"200": json_answer(list_of(ref("VM"))), **ERRORS, "403": NOT_ADMIN}},
        "post": {"summary": "create a VM (and start it, unless state is stopped)",
                 "parameters": WAIT,
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": ref("CreateVM")}}},
                 "responses": {"201": json_answer(ref("VM"), "created"),
                               "202": json_answer(ref("Accepted"), "accepted (wait=false)"),
                               **ERRORS}},
    },
    "/v1/vms/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one VM; the ETag is its generation",
                "responses": {"200": json_answer(ref("VM")), **ERRORS}},
        "patch": {"summary": "change the spec; a new name renames (stopped VMs only)",
                  "parameters": [*WAIT, IF_MATCH],
                  "requestBody": {"required": True,
                                  "content": {"application/json": {"schema": ref("Spec")}}},
                  "responses": write_responses(json_answer(ref("VM")))},
        "delete": {"summary": "delete (refused while running unless force)",
                   "parameters": [*WAIT, IF_MATCH,
                                  {"name": "force", "in": "query", "schema": boolean()}],
                   "responses": {"204": {"description": "deleted"},
                                 "202": json_answer(ref("Accepted"), "accepted (wait=false)"),
                                 **CHANGE_ERRORS}},
    },
    "/v1/vms/{name}/state": {
        "parameters": [NAME],
        "get": {"summary": "observed state",
                "responses": {"200": {"description": "the state", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "state": string(enum=list(VMState))}}},
            "text/plain": {"schema": string()}}}, **ERRORS}},
        "put": {"summary": "desired state, or a verb (suspended: memory to disk, RAM freed; "
                           "shelved: stopped, host claim released; running resumes/unshelves)",
                "parameters": [*WAIT, IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["state"],
                                                    "properties": {
                                                        "state": string(enum=list(STATE_VERBS))}}},
                    "text/plain": {"schema": string()}}},
                "responses": write_responses(json_answer(ref("VM")))},
    },
    "/v1/vms/{name}/host": {
        "parameters": [NAME],
        "get": {"summary": "the host the VM is placed on",
                "responses": {"200": {"description": "the host", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "host": string(nullable=True)}}},
            "text/plain": {"schema": string()}}}, **ERRORS}},
        "put": {"summary": "move the VM to another host: live migration when it runs, "
                           "offline move when stopped",
                "parameters": [*WAIT, IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": ref("Migrate")},
                    "text/plain": {"schema": string(),
                                   "description": "a host name, or the Migrate JSON"}}},
                "responses": write_responses(json_answer(ref("VM")))},
    },
    "/v1/vms/{name}/lock": {
        "parameters": [NAME],
        "get": {"summary": "the VM's lock (null: unlocked); as text: `USER: REASON`, or empty",
                "responses": {"200": {"description": "the lock", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "lock": {"nullable": True, "allOf": [ref("Lock")]}}}},
            "text/plain": {"schema": string()}}}, **ERRORS}},
        "put": {"summary": "lock the VM with a reason (an empty one unlocks); 409 when "
                           "another user locked it",
                "parameters": [IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["lock"],
                                                    "properties": {"lock": string(
                                                        nullable=True, maxLength=200)}}},
                    "text/plain": {"schema": string(maxLength=200)}}},
                "responses": {"200": json_answer(ref("VM")), **CHANGE_ERRORS}},
        "delete": {"summary": "unlock (the locker, or an admin)",
                   "responses": {"204": {"description": "unlocked"}, **CHANGE_ERRORS}},
    },
    **SCREEN_PATHS,
    "/v1/vms/{name}/{file}": {
        "parameters": [NAME, {"name": "file", "in": "path", "required": True,
                              "schema": string(enum=[f for f in VM_FILES if f not in (
                                  "state", "host", "lock", "screen.png", "rebuild")])}],
        "get": {"summary": "a file of the VM directory, as in the mount",
                "responses": {"200": {"description": "the file", "content": {
                    "application/json": {"schema": {}}, "text/plain": {"schema": string()},
                    "application/xml": {"schema": string()}}}, **ERRORS}},
        "put": {"summary": "write a writable file (spec.json, cpus, memory); console: type "
                           "the body into the serial port as it is (control characters too; "
                           'JSON {"console": "text"} as its UTF-8), answered once sent '
                           "with {name, typed} (no operation, wait and If-Match unused)",
                "parameters": [*WAIT, IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {}}, "text/plain": {"schema": string()},
                    "application/octet-stream": {"schema": string(format="binary")}}},
                "responses": {**write_responses(json_answer(
                    {"oneOf": [ref("VM"), ref("Typed")]}, "the VM; for console, what was typed")),
                              "403": {**ERROR, "description": "the file is read-only"},
                              "409": STOPPED_OR_CHANGE,
                              "413": {**ERROR, "description": "console: more than "
                                                              f"{CONSOLE_INPUT_MAX_BYTES} bytes"},
                              "503": UNAVAILABLE}},
    },
    "/v1/operations": {"get": {"summary": "recent operations", "parameters": [
        {"name": "vm", "in": "query", "schema": string()},
        {"name": "status", "in": "query", "schema": string()},
        {"name": "limit", "in": "query", "schema": integer(minimum=1, maximum=1000)}, ALL_PROJECTS],
        "responses": {"200": json_answer(list_of(ref("Operation"))), **ERRORS, "403": NOT_ADMIN}}},
    "/v1/operations/{op_id}": {
        "parameters": [{"name": "op_id", "in": "path", "required": True, "schema": string()}],
        "get": {"summary": "one operation; ?wait=SECONDS long-polls until it is done",
                "parameters": [
            {"name": "wait", "in": "query", "schema": number(minimum=0, maximum=3600)}],
            "responses": {"200": json_answer(ref("Operation")), **ERRORS}},
        "delete": {"summary": "cancel a pending operation, or a running migration, backup, "
                              "restore or clone (params.cancel: the controller aborts it; a "
                              "cancelled clone or restore into a new VM deletes that VM)",
                   "responses": {"200": json_answer(ref("Operation")), **ERRORS}},
    },
    "/v1/events": {"get": {"summary": "the appliance's event log", "parameters": [
        {"name": "vm", "in": "query", "schema": string()},
        {"name": "user", "in": "query", "schema": string(),
         "description": "only the events this user caused (the audit trail)"},
        {"name": "since", "in": "query", "schema": integer(minimum=0, maximum=2**62)},
        {"name": "limit", "in": "query", "schema": integer(minimum=1, maximum=10000)},
        {"name": "format", "in": "query", "schema": string(enum=["json", "text"])}, ALL_PROJECTS],
        "responses": {"200": {"description": "events", "content": {
            "application/json": {"schema": list_of(ref("Event"))},
            "text/plain": {"schema": string()}}},
            **ERRORS, "403": NOT_ADMIN}}},
}

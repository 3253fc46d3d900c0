"""The OpenAPI 3 document of the REST view, served at /v1/openapi.json.

Tests run schemathesis against the app with this document, so it has to say
what the server really does.
"""
from __future__ import annotations

import falcon

from appliance.api import openapi_access, openapi_projects
from appliance.files import HOST_FILES, VM_FILES
from appliance.model import (
    GROUP_POLICIES,
    HOST_DOWN,
    HOST_RATIOS,
    HOST_STATES,
    STATE_VERBS,
    OpStatus,
)
from appliance.model.defaults import MAX_MEMORY_MIB
from appliance.model.schema import spec_components
from appliance.model.values import DNS_LABEL, anchored


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _str(**extra: object) -> dict:
    return {"type": "string", **extra}


def _num(**extra: object) -> dict:
    return {"type": "number", **extra}


def _int(**extra: object) -> dict:
    return {"type": "integer", **extra}


def _bool(**extra: object) -> dict:
    return {"type": "boolean", **extra}


ERROR = _json(_ref("Error"), "error")
ERRORS = {str(code): {**ERROR, "description": text} for code, text in (
    (400, "malformed request"), (401, "missing or wrong token"), (404, "not found"),
    (409, "conflicts with the current state"), (412, "If-Match names an old generation"),
    (422, "invalid input"), (500, "the operation failed"), (504, "still running after the wait"))}
NAME = {"name": "name", "in": "path", "required": True, "schema": _str()}
WAIT = [
    {"name": "wait", "in": "query", "schema": _bool(),
     "description": "false: answer 202 with the operation instead of waiting"},
    {"name": "timeout", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 3600}},
]
IF_MATCH = {"name": "If-Match", "in": "header", "schema": _str(),
            "description": "the ETag of a GET; 412 when the VM changed since"}
# Nova's --all-projects: every project's, for admins (403 for anyone else).
ALL_PROJECTS = {"name": "all_projects", "in": "query", "schema": _bool(),
                "description": "every project's (admins only; each item names its project)"}
NOT_ADMIN = {**ERROR, "description": "all_projects asked by someone other than an admin"}
DNS_NAME = {"type": "string", "pattern": anchored(DNS_LABEL)}
LABELS = {"type": "object", "additionalProperties": _str()}

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error", "reason"],
        "properties": {"error": _str(), "reason": _str(), "field": _str(),
                       "title": _str(), "description": _str()},
    },
    # Spec, CreateVM, Network, PortForward, Disk, CloudInit, Probe: from the model
    **spec_components(),
    **openapi_projects.SCHEMAS,  # Project, ProjectCreate, ProjectUpdate
    "VM": {
        "type": "object",
        "required": ["id", "name", "state", "desired_state", "generation", "spec"],
        "properties": {
            "id": _str(), "name": _str(), "project": _str(), "state": _str(),
            "desired_state": _str(), "reason": _str(),
            "host": _str(nullable=True), "generation": _int(),
            "spec": _ref("Spec"), "restart_required": _bool(), "ready": _bool(),
            "created": _num(), "updated": _num(),
            "lock": {"nullable": True, "allOf": [_ref("Lock")]},
            "operation": {"nullable": True, "allOf": [_ref("Operation")]},
        },
    },
    "Operation": {
        "type": "object", "required": ["id", "kind", "status"],
        "properties": {"id": _str(), "vm_id": _str(), "vm_name": _str(), "project": _str(),
                       "kind": _str(),
                       "status": {"type": "string", "enum": list(OpStatus)},
                       "progress": _int(), "params": {"type": "object"},
                       "error": _str(nullable=True), "created": _num(),
                       "started": _num(nullable=True),
                       "finished": _num(nullable=True)},
    },
    "Accepted": {"type": "object", "required": ["operation"],
                 "properties": {"operation": _ref("Operation")}},
    "Event": {
        "type": "object",
        "properties": {"id": _int(), "time": _num(),
                       "vm_id": _str(nullable=True), "vm_name": _str(nullable=True),
                       "project": _str(nullable=True, description="null: the appliance's own "
                                                                  "(hosts, images)"),
                       "kind": _str(), "message": _str(),
                       "operation": _str(nullable=True),
                       "actor": _str(nullable=True, description="who: a user, or system"),
                       "source": _str(nullable=True,
                                      description="from where: a client address, mount, local"),
                       "credential": _str(nullable=True,
                                          description="token ID, or uid N (the mount)"),
                       "result": _str(nullable=True,
                                      description="a write's outcome: ok, or the status or "
                                                  "errno with the error and its reason")},
    },
    "Lock": {
        "type": "object", "required": ["by", "reason"],
        "description": "a locked VM changes only by its locker's or an admin's request",
        "properties": {"by": _str(), "reason": _str(maxLength=200), "at": _num()},
    },
    "Image": {
        "type": "object",
        "properties": {"name": _str(), "path": _str(), "format": _str(),
                       "virtual_size": _int(), "actual_size": _int(),
                       "created": _num(), "source": _str()},
    },
    "HostSettings": {
        "type": "object",
        "properties": {
            "uri": _str(description="libvirt URI: qemu:///system, qemu+ssh://root@h2/system, "
                                    "qemu+unix:///system?socket=/path"),
            "labels": LABELS,
            "storage": _str(pattern="^[A-Za-z0-9_.:-]{1,64}$",
                            description="where the host finds VM disks; "
                                        "hosts naming the same storage share them"),
            "migration_address": _str(nullable=True,
                                      description="the name or IP other hosts reach this one at "
                                                  "for live migration"),
            "state": {"type": "string", "enum": list(HOST_STATES)},
            **{name: _num(minimum=low, maximum=high, description=f"overcommit, default {default}")
               for name, (default, low, high) in HOST_RATIOS.items()},
            "reserved_memory_mib": {"type": "integer", "minimum": 0, "maximum": MAX_MEMORY_MIB},
        },
    },
    "HostCreate": {"allOf": [_ref("HostSettings"), {"type": "object", "required": ["name", "uri"],
                                                    "properties": {"name": DNS_NAME}}]},
    "Host": {
        "type": "object",
        "required": ["name", "uri", "state", "observed_state", "up", "capacity", "allocated"],
        "properties": {
            "name": _str(), "uri": _str(),
            "state": _str(enum=list(HOST_STATES), description="administrative state"),
            "observed_state": {"type": "string", "enum": [*HOST_STATES, HOST_DOWN]},
            "up": _bool(), "last_seen": _num(nullable=True),
            "down_since": _num(nullable=True), "labels": LABELS,
            "storage": _str(nullable=True), "migration_address": _str(nullable=True),
            **{name: _num() for name in HOST_RATIOS},
            "reserved_memory_mib": _int(),
            "inventory": {"type": "object",
                          "description": "what libvirt reports: arch, cpus, memory_mib, "
                                         "disk_bytes"},
            "capacity": {"type": "object", "properties": {
                "cpus": _int(), "memory_mib": _int(), "disk_gib": _num()}},
            "allocated": {"type": "object", "properties": {
                "cpus": _int(), "memory_mib": _int(), "disk_gib": _num(), "vms": _int()}},
        },
    },
    "Drain": {
        "type": "object", "required": ["migrating", "moving", "blocked"],
        "description": "maintenance: running VMs migrate live, stopped ones move; "
                       "blocked ones stay, with the reason",
        "properties": {
            "migrating": {"type": "array", "items": {"type": "object", "properties": {
                "vm": _str(), "target": _str(nullable=True),
                "operation": _str(), "note": _str()}}},
            "moving": {"type": "array", "items": {"type": "object", "properties": {
                "vm": _str(), "target": _str(), "operation": _str()}}},
            "blocked": {"type": "array", "items": {"type": "object", "properties": {
                "vm": _str(), "reason": _str()}}},
        },
    },
    "HostStateChange": {"allOf": [_ref("Host"), {"type": "object", "required": ["drain"],
                                                 "properties": {"drain": _ref("Drain")}}]},
    "GroupCreate": {
        "type": "object", "required": ["name", "policy"],
        "properties": {"name": DNS_NAME, "policy": _str(enum=list(GROUP_POLICIES))},
    },
    "Group": {
        "type": "object", "required": ["name", "policy", "members"],
        "properties": {"name": _str(), "project": _str(),
                       "policy": _str(enum=list(GROUP_POLICIES)), "created": _num(),
                       "members": {"type": "array", "items": {"type": "object", "properties": {
                           "name": _str(), "host": _str(nullable=True)}}}},
    },
    "Migrate": {
        "type": "object", "required": ["host"],
        "description": "live migration when the VM runs, an offline move when it is stopped",
        "properties": {"host": _str(description="the target host"),
                       "force": _bool(description="skip the scheduler's filters (not the checks "
                                                  "that the host is up and sees the disks)")},
    },
    **openapi_access.SCHEMAS,  # users and tokens
}


def _list_of(schema: dict) -> dict:
    return {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": schema}}}


def _write_responses(ok: dict) -> dict:
    return {"200": ok, "202": _json(_ref("Accepted"), "accepted (wait=false)"), **ERRORS}


PATHS = {
    "/healthz": {"get": {"summary": "the process is up", "security": [],
                          "responses": {"200": _json({"type": "object"})}}},
    "/readyz": {"get": {"summary": "the store and libvirt are reachable", "security": [],
                         "responses": {"200": _json({"type": "object"}),
                                       "503": _json({"type": "object"})}}},
    "/v1/openapi.json": {"get": {"summary": "this document", "security": [],
                                 "responses": {"200": _json({"type": "object"})}}},
    "/metrics": {"get": {"summary": "Prometheus metrics "
                                    "(the token too, unless config metrics_public)",
                         "responses": {"200": {"description": "Prometheus text format",
                                               "content": {"text/plain": {"schema": _str()}}},
                                       "401": ERROR}}},
    "/v1/vms": {
        "get": {"summary": "list VMs", "parameters": [
            {"name": "state", "in": "query", "schema": _str()},
            {"name": "label", "in": "query", "schema": _str(), "description": "key or key=value"},
            {"name": "host", "in": "query", "schema": _str()}, ALL_PROJECTS],
            "responses": {"200": _json(_list_of(_ref("VM"))), **ERRORS, "403": NOT_ADMIN}},
        "post": {"summary": "create a VM (and start it, unless state is stopped)",
                 "parameters": WAIT,
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": _ref("CreateVM")}}},
                 "responses": {"201": _json(_ref("VM"), "created"),
                               "202": _json(_ref("Accepted"), "accepted (wait=false)"), **ERRORS}},
    },
    "/v1/vms/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one VM; the ETag is its generation",
                "responses": {"200": _json(_ref("VM")), **ERRORS}},
        "patch": {"summary": "change the spec; a new name renames (stopped VMs only)",
                  "parameters": [*WAIT, IF_MATCH],
                  "requestBody": {"required": True,
                                  "content": {"application/json": {"schema": _ref("Spec")}}},
                  "responses": _write_responses(_json(_ref("VM")))},
        "delete": {"summary": "delete (refused while running unless force)",
                   "parameters": [*WAIT, IF_MATCH,
                                  {"name": "force", "in": "query", "schema": _bool()}],
                   "responses": {"204": {"description": "deleted"},
                                 "202": _json(_ref("Accepted"), "accepted (wait=false)"),
                                 **ERRORS}},
    },
    "/v1/vms/{name}/state": {
        "parameters": [NAME],
        "get": {"summary": "observed state",
                "responses": {"200": {"description": "the state", "content": {
            "application/json": {"schema": {"type": "object", "properties": {"state": _str()}}},
            "text/plain": {"schema": _str()}}}, **ERRORS}},
        "put": {"summary": "desired state, or a verb", "parameters": [*WAIT, IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["state"],
                                                    "properties": {
                                                        "state": _str(enum=list(STATE_VERBS))}}},
                    "text/plain": {"schema": _str()}}},
                "responses": _write_responses(_json(_ref("VM")))},
    },
    "/v1/vms/{name}/host": {
        "parameters": [NAME],
        "get": {"summary": "the host the VM is placed on",
                "responses": {"200": {"description": "the host", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "host": _str(nullable=True)}}},
            "text/plain": {"schema": _str()}}}, **ERRORS}},
        "put": {"summary": "move the VM to another host: live migration when it runs, "
                           "offline move when stopped",
                "parameters": [*WAIT, IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": _ref("Migrate")},
                    "text/plain": {"schema": _str(),
                                   "description": "a host name, or the Migrate JSON"}}},
                "responses": _write_responses(_json(_ref("VM")))},
    },
    "/v1/vms/{name}/lock": {
        "parameters": [NAME],
        "get": {"summary": "the VM's lock (null: unlocked); as text: `USER: REASON`, or empty",
                "responses": {"200": {"description": "the lock", "content": {
            "application/json": {"schema": {"type": "object", "properties": {
                "lock": {"nullable": True, "allOf": [_ref("Lock")]}}}},
            "text/plain": {"schema": _str()}}}, **ERRORS}},
        "put": {"summary": "lock the VM with a reason (an empty one unlocks); 409 when "
                           "another user locked it",
                "parameters": [IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["lock"],
                                                    "properties": {"lock": _str(
                                                        nullable=True, maxLength=200)}}},
                    "text/plain": {"schema": _str(maxLength=200)}}},
                "responses": {"200": _json(_ref("VM")), **ERRORS}},
        "delete": {"summary": "unlock (the locker, or an admin)",
                   "responses": {"204": {"description": "unlocked"}, **ERRORS}},
    },
    "/v1/vms/{name}/{file}": {
        "parameters": [NAME, {"name": "file", "in": "path", "required": True,
                              "schema": _str(enum=[f for f in VM_FILES
                                                   if f not in ("state", "host", "lock")])}],
        "get": {"summary": "a file of the VM directory, as in the mount",
                "responses": {"200": {"description": "the file", "content": {
                    "application/json": {"schema": {}}, "text/plain": {"schema": _str()},
                    "application/xml": {"schema": _str()}}}, **ERRORS}},
        "put": {"summary": "write a writable file (spec.json, cpus, memory)",
                "parameters": [*WAIT, IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {}}, "text/plain": {"schema": _str()}}},
                "responses": {**_write_responses(_json(_ref("VM"))),
                              "403": {**ERROR, "description": "read-only"}}},
    },
    "/v1/operations": {"get": {"summary": "recent operations", "parameters": [
        {"name": "vm", "in": "query", "schema": _str()},
        {"name": "status", "in": "query", "schema": _str()},
        {"name": "limit", "in": "query", "schema": _int(minimum=1, maximum=1000)}, ALL_PROJECTS],
        "responses": {"200": _json(_list_of(_ref("Operation"))), **ERRORS, "403": NOT_ADMIN}}},
    "/v1/operations/{op_id}": {
        "parameters": [{"name": "op_id", "in": "path", "required": True, "schema": _str()}],
        "get": {"summary": "one operation; ?wait=SECONDS long-polls until it is done",
                "parameters": [
            {"name": "wait", "in": "query", "schema": _num(minimum=0, maximum=3600)}],
            "responses": {"200": _json(_ref("Operation")), **ERRORS}},
        "delete": {"summary": "cancel a pending operation",
                   "responses": {"200": _json(_ref("Operation")), **ERRORS}},
    },
    "/v1/events": {"get": {"summary": "the appliance's event log", "parameters": [
        {"name": "vm", "in": "query", "schema": _str()},
        {"name": "user", "in": "query", "schema": _str(),
         "description": "only the events this user caused (the audit trail)"},
        {"name": "since", "in": "query", "schema": _int(minimum=0, maximum=2**62)},
        {"name": "limit", "in": "query", "schema": _int(minimum=1, maximum=10000)},
        {"name": "format", "in": "query", "schema": _str(enum=["json", "text"])}, ALL_PROJECTS],
        "responses": {"200": {"description": "events", "content": {
            "application/json": {"schema": _list_of(_ref("Event"))},
            "text/plain": {"schema": _str()}}},
            **ERRORS, "403": NOT_ADMIN}}},
    "/v1/images": {
        "get": {"summary": "images",
                "responses": {"200": _json(_list_of(_ref("Image"))), **ERRORS}},
        "post": {"summary": "import a file from the image import folder "
                            "(config image_import_dir, default HOME/images/import)",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["name", "path"],
                     "properties": {"name": _str(), "path": _str()}}}}},
                 "responses": {"201": _json(_ref("Image"), "imported"), **ERRORS}},
    },
    "/v1/images/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one image", "responses": {"200": _json(_ref("Image")), **ERRORS}},
        "put": {"summary": "upload an image file (the body)",
                "requestBody": {"required": True, "content": {
                    "application/octet-stream": {"schema": _str(format="binary")}}},
            "responses": {"201": _json(_ref("Image"), "uploaded"), **ERRORS}},
        "delete": {"summary": "delete an unused image",
                   "responses": {"204": {"description": "deleted"}, **ERRORS}},
    },
    "/v1/hosts": {
        "get": {"summary": "libvirt hosts, with capacity and what is allocated",
                "responses": {"200": _json(_list_of(_ref("Host"))), **ERRORS}},
        "post": {"summary": "add a host (the controller connects to it and reads its inventory)",
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": _ref("HostCreate")}}},
                 "responses": {"201": _json(_ref("Host"), "added"), **ERRORS}},
    },
    "/v1/hosts/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one host", "responses": {"200": _json(_ref("Host")), **ERRORS}},
        "patch": {"summary": "change a host's settings (merge); state as with PUT .../state",
                  "requestBody": {"required": True, "content": {
                      "application/json": {"schema": _ref("HostSettings")}}},
                  "responses": {"200": _json(_ref("Host")), **ERRORS}},
        "delete": {"summary": "remove a host without VMs",
                   "responses": {"204": {"description": "removed"}, **ERRORS}},
    },
    "/v1/hosts/{name}/state": {
        "parameters": [NAME],
        "get": {"summary": "observed state: down, or the administrative state",
                "responses": {"200": {"description": "the state", "content": {
                    "application/json": {"schema": {"type": "object",
                                                    "properties": {"state": _str()}}},
                    "text/plain": {"schema": _str()}}}, **ERRORS}},
        "put": {"summary": "enabled | disabled (no new VMs) "
                           "| maintenance (no new VMs, and its VMs leave)",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["state"],
                                                    "properties": {
                                                        "state": _str(enum=list(HOST_STATES))}}},
                    "text/plain": {"schema": _str()}}},
                "responses": {"200": _json(_ref("HostStateChange")), **ERRORS}},
    },
    "/v1/hosts/{name}/{file}": {
        "parameters": [NAME, {"name": "file", "in": "path", "required": True,
                              "schema": _str(enum=[f for f in HOST_FILES if f != "state"])}],
        "get": {"summary": "a file of the host directory, as in the mount",
                "responses": {"200": {"description": "the file", "content": {
                    "application/json": {"schema": _ref("Host")},
                    "text/plain": {"schema": _str()}}},
                    **ERRORS}},
    },
    "/v1/groups": {
        "get": {"summary": "server groups and their members",
                "responses": {"200": _json(_list_of(_ref("Group"))), **ERRORS}},
        "post": {"summary": "create a server group",
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": _ref("GroupCreate")}}},
                 "responses": {"201": _json(_ref("Group"), "created"), **ERRORS}},
    },
    **openapi_projects.PATHS,  # /v1/projects, /v1/projects/{name}
    "/v1/groups/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one server group",
                "responses": {"200": _json(_ref("Group")), **ERRORS}},
        "delete": {"summary": "delete a server group without members",
                   "responses": {"204": {"description": "deleted"}, **ERRORS}},
    },
    **openapi_access.PATHS,  # /v1/me, /v1/users, /v1/tokens
}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "vm-appliance", "version": "1",
             "description": "The resource tree of the mount, over HTTP. "
                            "Writes wait for their operation unless wait=false."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
                   "schemas": SCHEMAS},
    "paths": PATHS,
}


class OpenAPI:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = DOCUMENT

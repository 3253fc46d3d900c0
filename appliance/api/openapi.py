"""The OpenAPI 3 document of the REST view, served at /v1/openapi.json.

Tests run schemathesis against the app with this document, so it has to say
what the server really does. Its parts: openapi_vms (VMs, operations, events),
openapi_cluster (hosts, images, groups), openapi_projects, openapi_access (users,
tokens), openapi_consoles, openapi_backups (snapshots, backups, targets, clones),
openapi_templates, openapi_pools (replica pools), openapi_networks, openapi_keys;
this module assembles them
and adds what every route with a token shares (auth.py): the `project`
parameter, and the 401, 403 and 404 answers, the 403's roles read from the
policy table.
"""
from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import falcon

from appliance.access import policy
from appliance.access.principal import Role
from appliance.api import (
    openapi_access,
    openapi_adoption,
    openapi_backups,
    openapi_cluster,
    openapi_consoles,
    openapi_disks,
    openapi_keys,
    openapi_networks,
    openapi_pools,
    openapi_projects,
    openapi_shapes,
    openapi_templates,
    openapi_vms,
    web,
)
from appliance.api.openapi_shared import DNS_NAME, ERROR, json_answer, string
from appliance.model.schema import spec_components

SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error", "reason"],
        "properties": {"error": string(), "reason": string(), "field": string(),
                       "title": string(), "description": string()},
    },
    # Spec, CreateVM, Network, PortForward, Disk, CloudInit, Probe: from the model
    **spec_components(),
    **openapi_projects.SCHEMAS,  # Project, ProjectCreate, ProjectUpdate
    **openapi_vms.SCHEMAS,  # VM, Operation, Accepted, Event, Lock
    **openapi_cluster.SCHEMAS,  # images, hosts, groups, Migrate
    **openapi_access.SCHEMAS,  # users and tokens
    **openapi_consoles.SCHEMAS,  # TicketCreate, Ticket
    **openapi_backups.SCHEMAS,  # snapshots, backups, targets, restores, clones
    **openapi_templates.SCHEMAS,  # Template, TemplateCreate, TemplateChange
    **openapi_pools.SCHEMAS,  # Pool, PoolStatus, PoolCreate, PoolUpdate
    **openapi_shapes.SCHEMAS,  # Rebuild (issue 14)
    **openapi_disks.SCHEMAS,  # DiskInfo, Cdrom (issue 14)
    **openapi_networks.SCHEMAS,  # NetworkResource, NetworkCreate, DhcpRange (issue 15)
    **openapi_keys.SCHEMAS,  # Key, KeyCreate (issue 15)
    **openapi_adoption.SCHEMAS,  # Adopt (issue 16)
}

PATHS: dict[str, Any] = {
    "/healthz": {"get": {"summary": "the process is up", "security": [],
                          "responses": {"200": json_answer({"type": "object"})}}},
    "/readyz": {"get": {"summary": "the store and libvirt are reachable", "security": [],
                         "responses": {"200": json_answer({"type": "object"}),
                                       "503": json_answer({"type": "object"})}}},
    "/v1/openapi.json": {"get": {"summary": "this document", "security": [],
                                 "responses": {"200": json_answer({"type": "object"})}}},
    "/metrics": {"get": {"summary": "Prometheus metrics "
                                    "(the token too, unless config metrics_public)",
                         "responses": {"200": {"description": "Prometheus text format",
                                               "content": {"text/plain": {"schema": string()}}}}}},
    **openapi_vms.PATHS,  # /v1/vms..., /v1/operations..., /v1/events
    **openapi_cluster.PATHS,  # /v1/images..., /v1/hosts..., /v1/groups...
    **openapi_projects.PATHS,  # /v1/projects, /v1/projects/{name}
    **openapi_access.PATHS,  # /v1/me, /v1/users, /v1/tokens
    **openapi_consoles.PATHS,  # /v1/tickets; the WebSockets .../console and .../vnc
    **openapi_backups.PATHS,  # .../snapshots..., .../clone, .../backups, /v1/backup-targets
    **openapi_templates.PATHS,  # /v1/templates, /v1/templates/{name}
    **openapi_pools.PATHS,  # /v1/pools, /v1/pools/{name}, /v1/pools/{name}/{file}
    **openapi_shapes.PATHS,  # .../rebuild (issue 14)
    **openapi_disks.PATHS,  # .../disks..., .../cdroms... (issue 14)
    **openapi_networks.PATHS,  # /v1/networks, /v1/networks/{name} (issue 15)
    **openapi_keys.PATHS,  # /v1/keys, /v1/keys/{name} (issue 15)
    **openapi_adoption.PATHS,  # /v1/vms/adopt, /v1/vms/{name}/export (issue 16)
    **web.OPENAPI_PATHS,  # /, /ui/{path}: the web page, public
}

# auth.py: every request with a token acts in one project.
PROJECT = {"name": "project", "in": "query", "schema": DNS_NAME,
           "description": "the project this request acts in: one of the caller's (their "
                          "first when not named), any for an admin; 404 for a project "
                          "that is not the caller's, as if it did not exist"}
UNAUTHORIZED = {**ERROR, "description": "missing or wrong token"}
NO_PROJECT = {**ERROR, "description": "?project= names no project of the caller's"}
OPERATIONS = ("get", "put", "post", "patch", "delete")
# A documented path naming one file of a file route (/v1/vms/{name}/state).
ONE_FILE = re.compile(r"(/v1/(?:vms|hosts)/\{name\})/([\w.-]+)")


def _roles_for(action: policy.Action) -> str:
    roles = [role.value for role in Role if policy.allows(role, action)]
    return "only " + (" or ".join(roles) if len(roles) < 3
                      else f"{', '.join(roles[:-1])} or {roles[-1]}") + " may"


def _refusal(path: str, method: str, files: Sequence[str]) -> str:
    """The 403 of the policy table (auth.py's process_resource): the roles that may."""
    template, params = path, {}
    one_file = ONE_FILE.fullmatch(path)
    if one_file and (path, method.upper()) not in policy.ROUTES:  # not a route of its own
        template, params = f"{one_file[1]}/{{file}}", {"file": one_file[2]}
    if isinstance(policy.ROUTES.get((template, method.upper())), Mapping) and not params:
        # A route for every file ({file}): the action goes by the file.
        by_roles: dict[str, list[str]] = {}
        for name in files:
            action = policy.action_for(template, method.upper(), {"file": name})
            by_roles.setdefault(_roles_for(action or policy.Action.ADMIN), []).append(name)
        return "the caller's role may not write this file (" + "; ".join(
            f"{', '.join(names)}: {roles}" for roles, names in by_roles.items()) + ")"
    action = policy.action_for(template, method.upper(), params)
    if action is None:
        return "no policy allows this route to anyone"
    return f"the caller's role may not ({_roles_for(action)})"


def _websocket_refusal(path: str) -> str:
    """The 403 of a WebSocket (websocket.py, by policy.WEBSOCKETS)."""
    attach = _roles_for(policy.WEBSOCKETS[path])
    typing = _roles_for(policy.WEBSOCKET_INPUT).removesuffix(" may")
    return (f"the caller's role may not attach ({attach}); {typing} may type, "
            "others are attached read-only")


def _with_token(path: str, item: Mapping[str, Any]) -> dict[str, Any]:
    """A path item whose operations (those not public) take ?project= and answer
    401, 403 and 404 as auth.py does."""
    files = [enum for parameter in item.get("parameters", []) if parameter["name"] == "file"
             for enum in parameter["schema"]["enum"]]
    out = dict(item)
    for method in OPERATIONS:
        operation = item.get(method)
        if operation is None or operation.get("security") == []:
            continue
        responses = operation["responses"]
        refusal = (_websocket_refusal(path) if operation.get("x-websocket")
                   else _refusal(path, method, files))
        if "403" in responses:  # the route's own reason too (all_projects, read-only)
            refusal = f"{refusal}. Also: {responses['403']['description']}"
        out[method] = {**operation,
                       "parameters": [*operation.get("parameters", []), PROJECT],
                       "responses": {**responses, "401": UNAUTHORIZED,
                                     "403": {**ERROR, "description": refusal},
                                     "404": responses.get("404", NO_PROJECT)}}
    return out


PATHS = {path: _with_token(path, item) for path, item in PATHS.items()}

DOCUMENT = {
    "openapi": "3.0.3",
    "info": {"title": "vm-appliance", "version": "1",
             "description": "The resource tree of the mount, over HTTP. "
                            "Writes wait for their operation unless wait=false."},
    "servers": [{"url": "/"}],
    "security": [{"bearer": []}],
    "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"},
                                       "ticket": openapi_consoles.TICKET_SCHEME},
                   "schemas": SCHEMAS},
    "paths": PATHS,
}


class OpenAPI:
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = DOCUMENT

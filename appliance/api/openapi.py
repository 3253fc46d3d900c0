"""The OpenAPI 3 document of the REST view, served at /v1/openapi.json.

Tests run schemathesis against the app with this document, so it has to say
what the server really does.
"""
from __future__ import annotations

import falcon

from appliance.api import openapi_access, openapi_cluster, openapi_projects, openapi_vms
from appliance.api.openapi_shared import ERROR, json_answer, string
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
}

PATHS = {
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
                                               "content": {"text/plain": {"schema": string()}}},
                                       "401": ERROR}}},
    **openapi_vms.PATHS,  # /v1/vms..., /v1/operations..., /v1/events
    **openapi_cluster.PATHS,  # /v1/images..., /v1/hosts..., /v1/groups
    **openapi_projects.PATHS,  # /v1/projects, /v1/projects/{name}
    **openapi_cluster.GROUP_PATHS,  # /v1/groups/{name}
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

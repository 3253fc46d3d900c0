"""The OpenAPI document's replica pools (KubeVirt's VirtualMachinePool), merged into
openapi.py's SCHEMAS and PATHS: /v1/pools, /v1/pools/{name} and the files of a
pool directory (appliance/pool_files.py)."""
from __future__ import annotations

from appliance.api.openapi_shared import (
    DNS_NAME,
    ERRORS,
    NAME,
    WAIT,
    boolean,
    integer,
    json_answer,
    list_of,
    number,
    ref,
    string,
)
from appliance.pool_files import POOL_FILES
from appliance.service.pools import MAX_POOL_NAME, MAX_REPLICAS

REPLICAS = integer(minimum=0, maximum=MAX_REPLICAS)
TEMPLATE = {"description": "the members' spec without a name (a VM create's body: "
                           "\"template\": NAME names a template), or a template's name",
            "oneOf": [{"type": "object", "additionalProperties": True}, string()]}

SCHEMAS = {
    "PoolStatus": {
        "type": "object",
        "properties": {
            "replicas": integer(), "current_replicas": integer(), "ready_replicas": integer(),
            "updated_replicas": integer(), "revision": integer(), "paused": boolean(),
            "rollout": {"type": "object", "nullable": True, "properties": {
                "member": string(), "phase": string(enum=["stop", "apply", "start"])}},
            "skipped": {"type": "array", "items": string(),
                        "description": "names NAME-N held by VMs not of the pool"},
            "message": string(description="why the pool is short of members, if it is"),
            "members": {"type": "array", "items": {"type": "object", "properties": {
                "name": string(), "ordinal": integer(), "state": string(), "ready": boolean(),
                "revision": integer(), "host": string(nullable=True)}}}},
    },
    "Pool": {
        "type": "object", "required": ["name", "template", "replicas", "revision"],
        "properties": {"id": string(), "name": string(), "project": string(),
                       "template": {"type": "object"}, "revision": integer(),
                       "replicas": integer(), "paused": boolean(),
                       "group": string(nullable=True), "created": number(),
                       "updated": number(), "status": ref("PoolStatus")},
    },
    "PoolCreate": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {"name": {**DNS_NAME, "maxLength": MAX_POOL_NAME},
                       "template": TEMPLATE, "replicas": REPLICAS, "paused": boolean(),
                       "group": {**DNS_NAME, "description": "a server group the members join"}},
    },
    "PoolUpdate": {
        "type": "object", "additionalProperties": False,
        "properties": {"template": TEMPLATE, "replicas": REPLICAS, "paused": boolean()},
    },
}

PATHS = {
    "/v1/pools": {
        "get": {"summary": "the project's replica pools",
                "responses": {"200": json_answer(list_of(ref("Pool"))), **ERRORS}},
        "post": {"summary": "create a pool; its controller makes the members NAME-0...",
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": ref("PoolCreate")}}},
                 "responses": {"201": json_answer(ref("Pool"), "created"), **ERRORS}},
    },
    "/v1/pools/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one pool and its status",
                "responses": {"200": json_answer(ref("Pool")), **ERRORS}},
        "patch": {"summary": "scale (replicas), change the template (rolled through the "
                             "members one at a time), pause or resume the roll-out",
                  "requestBody": {"required": True, "content": {
                      "application/json": {"schema": ref("PoolUpdate")}}},
                  "responses": {"200": json_answer(ref("Pool")), **ERRORS}},
        "delete": {"summary": "delete the pool and its members (forced: stopped first)",
                   "parameters": WAIT,
                   "responses": {"204": {"description": "deleted, members too"},
                                 "202": json_answer({"type": "object", "properties": {
                                     "operations": {"type": "array",
                                                    "items": ref("Operation")}}},
                                     "the members' deletions still run"),
                                 **ERRORS}},
    },
    "/v1/pools/{name}/{file}": {
        "parameters": [NAME, {"name": "file", "in": "path", "required": True,
                              "schema": string(enum=list(POOL_FILES))}],
        "get": {"summary": "a file of the pool directory, as in the mount",
                "responses": {"200": {"description": "the file", "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/plain": {"schema": string()}}}, **ERRORS}},
        "put": {"summary": "write template.json, replicas or paused, as in the mount",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object"}},
                    "text/plain": {"schema": string()}}},
                "responses": {"200": json_answer(ref("Pool")), **ERRORS}},
    },
}

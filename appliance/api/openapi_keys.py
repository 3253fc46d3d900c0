"""The OpenAPI document's SSH keys (merged into openapi.py's SCHEMAS and PATHS):
what appliance/service/keys.py accepts and answers."""
from __future__ import annotations

from appliance.api.openapi_shared import (
    DNS_NAME,
    ERRORS,
    NAME,
    integer,
    json_answer,
    list_of,
    number,
    ref,
    string,
)
from appliance.model.sshkeys import KEY_TYPES, MAX_KEY_BYTES, MIN_RSA_BITS
from appliance.service.keys import MAX_KEYS_PER_USER

USER = {"name": "user", "in": "query", "required": False, "schema": string(),
        "description": "another user's keys (admins; GET /v1/keys: * for everyone's)"}
SCHEMAS = {
    "Key": {
        "type": "object",
        "required": ["name", "user", "type", "fingerprint", "public_key"],
        "properties": {
            "name": string(), "user": string(description="the owner"),
            "type": string(enum=list(KEY_TYPES)), "bits": integer(),
            "fingerprint": string(description="ssh-keygen -l's: SHA256:BASE64"),
            "public_key": string(description="the OpenSSH line, normalised"),
            "created": number()},
    },
    "KeyCreate": {
        "type": "object", "required": ["name", "public_key"], "additionalProperties": False,
        "properties": {
            "name": DNS_NAME,
            "public_key": string(maxLength=MAX_KEY_BYTES, description=(
                f"one OpenSSH public key line: {', '.join(KEY_TYPES)} (RSA: at least "
                f"{MIN_RSA_BITS} bits)"))}},
}

PATHS = {
    "/v1/keys": {
        "get": {"summary": "your SSH keys (an admin: ?user=NAME, or * for everyone's)",
                "parameters": [USER],
                "responses": {"200": json_answer(list_of(ref("Key"))), **ERRORS}},
        "post": {"summary": "add an SSH public key of yours, which a VM's cloud_init.keys "
                            f"names; at most {MAX_KEYS_PER_USER} per user",
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": ref("KeyCreate")}}},
                 "responses": {"201": json_answer(ref("Key"), "created"), **ERRORS}},
    },
    "/v1/keys/{name}": {
        "parameters": [NAME, USER],
        "get": {"summary": "one SSH key",
                "responses": {"200": json_answer(ref("Key")), **ERRORS}},
        "delete": {"summary": "delete an SSH key; VMs keep the copies they were given",
                   "responses": {"204": {"description": "deleted"}, **ERRORS}},
    },
}

"""The pieces every part of the OpenAPI document uses (openapi.py assembles it):
schema shorthands, the error answers, the parameters several routes share."""
from __future__ import annotations

from appliance.model.values import DNS_LABEL, anchored


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def json_answer(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def string(**extra: object) -> dict:
    return {"type": "string", **extra}


def number(**extra: object) -> dict:
    return {"type": "number", **extra}


def integer(**extra: object) -> dict:
    return {"type": "integer", **extra}


def boolean(**extra: object) -> dict:
    return {"type": "boolean", **extra}


ERROR = json_answer(ref("Error"), "error")
ERRORS = {str(code): {**ERROR, "description": text} for code, text in (
    (400, "malformed request"), (401, "missing or wrong token"), (404, "not found"),
    (409, "conflicts with the current state"), (412, "If-Match names an old generation"),
    (422, "invalid input"), (500, "the operation failed"),
    (503, "a host it needs is unreachable; try again once it answers"),
    (504, "still running after the wait"))}
NAME = {"name": "name", "in": "path", "required": True, "schema": string()}
WAIT = [
    {"name": "wait", "in": "query", "schema": boolean(),
     "description": "false: answer 202 with the operation instead of waiting"},
    {"name": "timeout", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 3600}},
]
IF_MATCH = {"name": "If-Match", "in": "header", "schema": string(),
            "description": "the ETag of a GET; 412 when the VM changed since"}
# Nova's --all-projects: every project's, for admins (403 for anyone else).
ALL_PROJECTS = {"name": "all_projects", "in": "query", "schema": boolean(),
                "description": "every project's (admins only; each item names its project)"}
NOT_ADMIN = {**ERROR, "description": "all_projects asked by someone other than an admin"}
DNS_NAME = {"type": "string", "pattern": anchored(DNS_LABEL)}
LABELS = {"type": "object", "additionalProperties": string()}


def list_of(schema: dict) -> dict:
    return {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": schema}}}


"""The OpenAPI document's projects and quotas (merged into openapi.py's
SCHEMAS and PATHS); what appliance/quotas.py and service/projects.py accept."""
from __future__ import annotations

from appliance.model.values import DNS_LABEL, anchored
from appliance.quotas import MAX_LIMITS, RESOURCES
from appliance.service.projects import MAX_DESCRIPTION

_ERROR = {"description": "error",
          "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
ERRORS = {str(code): {**_ERROR, "description": text} for code, text in (
    (400, "malformed request"), (401, "missing or wrong token"),
    (404, "no such project, or not one of the caller's"),
    (409, "conflicts with the current state (name taken, project not empty)"),
    (422, "invalid input"))}
SIZE_TEXT = "^\\s*[0-9]{1,20}\\s*([KMGTkmgt]([Ii]?[Bb])?)?\\s*$"


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _limit(resource: str) -> dict:
    number = {"type": "integer", "minimum": 0, "maximum": MAX_LIMITS[resource]}
    if resource in ("memory_mib", "disk_gib"):
        return {"nullable": True, "oneOf": [number, {"type": "string", "pattern": SIZE_TEXT}],
                "description": "a number (MiB / GiB), or a size such as 16G; null: unlimited"}
    return {**number, "nullable": True, "description": "null: unlimited"}


def _figures(nullable: bool) -> dict:
    return {"type": "object", "required": list(RESOURCES), "properties": {
        r: {"type": "integer", "minimum": 0, "nullable": nullable} for r in RESOURCES}}


QUOTA_SET = {"type": "object", "additionalProperties": False,
             "description": "merged into the current quota: a resource not named keeps its "
                            "limit, null makes it unlimited",
             "properties": {r: _limit(r) for r in RESOURCES}}
DESCRIPTION = {"type": "string", "maxLength": MAX_DESCRIPTION}
# The schema of BackupPolicy comes from the model (appliance/model/schema.py, via the Spec).
BACKUP = {"allOf": [_ref("BackupPolicy")], "nullable": True,
          "description": "the backup policy of the project's VMs that have none of their "
                         "own (replaced whole; null: none)"}

SCHEMAS = {
    "Project": {
        "type": "object",
        "required": ["name", "description", "created", "quota", "usage", "backup"],
        "properties": {
            "name": {"type": "string"}, "description": {"type": "string"},
            "created": {"type": "number"},
            "quota": {**_figures(True), "description": "limits; null is unlimited"},
            "usage": {**_figures(False),
                      "description": "every VM not being deleted, running or not; "
                                     "disk: image sizes plus extra disks, GiB rounded up"},
            "backup": BACKUP}},
    "ProjectCreate": {"type": "object", "required": ["name"], "additionalProperties": False,
                      "properties": {"name": {"type": "string", "pattern": anchored(DNS_LABEL)},
                                     "description": DESCRIPTION, "quota": QUOTA_SET,
                                     "backup": BACKUP}},
    "ProjectUpdate": {"type": "object", "additionalProperties": False,
                      "properties": {"description": DESCRIPTION, "quota": QUOTA_SET,
                                     "backup": BACKUP}},
}

NAME = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
PATHS = {
    "/v1/projects": {
        "get": {"summary": "projects with their quota and usage (an admin's: all; "
                           "anyone else's: their own)",
                "responses": {"200": _json({"type": "object", "required": ["items"], "properties": {
                    "items": {"type": "array", "items": _ref("Project")}}}), **ERRORS}},
        "post": {"summary": "create a project (admin)",
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": _ref("ProjectCreate")}}},
                 "responses": {"201": _json(_ref("Project"), "created"), **ERRORS}},
    },
    "/v1/projects/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one project: quota and usage",
                "responses": {"200": _json(_ref("Project")), **ERRORS}},
        "patch": {"summary": "change the description, the quota or the backup policy "
                             "(admin); a limit below the usage is accepted and blocks "
                             "creates and growth",
                  "requestBody": {"required": True, "content": {
                      "application/json": {"schema": _ref("ProjectUpdate")}}},
                  "responses": {"200": _json(_ref("Project")), **ERRORS}},
        "delete": {"summary": "delete an empty project (admin; never default)",
                   "responses": {"204": {"description": "deleted"}, **ERRORS}},
    },
}

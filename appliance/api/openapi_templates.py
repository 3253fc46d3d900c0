"""The OpenAPI document's templates (merged into openapi.py's SCHEMAS and PATHS):
what appliance/service/templates.py accepts and answers."""
from __future__ import annotations

from appliance.api.openapi_shared import (
    DNS_NAME,
    ERROR,
    ERRORS,
    NAME,
    boolean,
    integer,
    json_answer,
    list_of,
    number,
    ref,
    string,
)
from appliance.service.projects import MAX_DESCRIPTION
from appliance.service.templates import MAX_TEMPLATE_BYTES, MAX_TEMPLATES

TEMPLATE_SPEC = {"allOf": [ref("Spec")], "description": (
    "a VM spec without a name; the fields it leaves out are the default template's "
    f"(at most {MAX_TEMPLATE_BYTES} bytes as JSON)")}
DESCRIPTION = string(maxLength=MAX_DESCRIPTION)
IF_REVISION = {"name": "If-Match", "in": "header", "schema": string(),
               "description": "the ETag of a GET (the revision); 412 when it changed since"}
TOO_LARGE = {**ERROR, "description": "the template's spec is too large"}
FORBIDDEN = {**ERROR, "description": "a global template (admins only), or the built-in default "
                                     "(read-only)"}

SCHEMAS = {
    "Template": {
        "type": "object",
        "required": ["name", "global", "revision", "spec", "builtin"],
        "properties": {
            "name": string(), "global": boolean(),
            "project": string(nullable=True, description="the owner; null for a global one"),
            "builtin": boolean(description="the built-in default: read-only"),
            "revision": integer(description="1, then +1 per change; VMs record theirs"),
            "spec": {"type": "object"}, "description": string(),
            "created": number(nullable=True), "updated": number(nullable=True)},
    },
    "TemplateCreate": {
        "type": "object", "required": ["name", "spec"], "additionalProperties": False,
        "properties": {"name": DNS_NAME, "spec": TEMPLATE_SPEC, "description": DESCRIPTION,
                       "global": boolean(description="a global template (admins); default: "
                                                     "the project's")}},
    "TemplateChange": {
        "type": "object", "additionalProperties": False,
        "properties": {"name": string(description="the template's own, if given"),
                       "global": boolean(description="the template's own, if given"),
                       "spec": TEMPLATE_SPEC, "description": DESCRIPTION}},
}

_BODY = {"required": True, "content": {"application/json": {"schema": ref("TemplateChange")}}}
_CHANGED = {"200": json_answer(ref("Template")), **ERRORS, "403": FORBIDDEN, "413": TOO_LARGE}
PATHS = {
    "/v1/templates": {
        "get": {"summary": "the templates the project sees: the built-in default, the global "
                           "ones and its own",
                "responses": {"200": json_answer(list_of(ref("Template"))), **ERRORS}},
        "post": {"summary": "create a template: the project's, or with global a global one "
                            f"(admins); at most {MAX_TEMPLATES} per project and global",
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": ref("TemplateCreate")}}},
                 "responses": {"201": json_answer(ref("Template"), "created"), **ERRORS,
                               "403": FORBIDDEN, "413": TOO_LARGE}},
    },
    "/v1/templates/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one template; the ETag is its revision",
                "responses": {"200": json_answer(ref("Template")), **ERRORS}},
        "put": {"summary": "replace the template's spec (revision + 1); VMs made from it "
                           "keep theirs",
                "parameters": [IF_REVISION], "requestBody": _BODY, "responses": _CHANGED},
        "patch": {"summary": "change some of the spec's fields (null removes one) or the "
                             "description (revision + 1)",
                  "parameters": [IF_REVISION], "requestBody": _BODY, "responses": _CHANGED},
        "delete": {"summary": "delete a template; VMs made from it keep their spec and the "
                              "name and revision they record",
                   "parameters": [IF_REVISION],
                   "responses": {"204": {"description": "deleted"}, **ERRORS,
                                 "403": FORBIDDEN}},
    },
}

"""The OpenAPI paths and schemas of /v1/me, /v1/users and /v1/tokens (openapi.py
merges them into /v1/openapi.json). The request bodies' schemas come from the
models that validate them (appliance/model/access.py)."""
from __future__ import annotations

from appliance.access.principal import ROLES
from appliance.model.access import TokenCreate, UserCreate, UserUpdate
from appliance.model.schema import model_components


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str = "OK") -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _body(name: str) -> dict:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


def _list_of(schema: dict) -> dict:
    return {"type": "object", "required": ["items"],
            "properties": {"items": {"type": "array", "items": schema}}}


STR = {"type": "string"}
TIME = {"type": "number", "nullable": True}
ERRORS = {str(code): _json(_ref("Error"), text) for code, text in (
    (400, "malformed request"), (401, "missing or wrong token"),
    (404, "not found (or not the caller's)"),
    (409, "conflicts with the current state (a name taken, the last admin)"),
    (422, "invalid input"))}
DELETED = {"204": {"description": "done"}, **ERRORS}
PROJECTS = {"type": "array", "items": STR}

SCHEMAS = {
    **model_components(UserCreate, UserUpdate, TokenCreate),
    "User": {
        "type": "object", "required": ["name", "role", "projects", "disabled"],
        "properties": {"name": STR, "role": {"type": "string", "enum": list(ROLES)},
                       "projects": PROJECTS, "created": {"type": "number"},
                       "disabled": {"type": "boolean"}},
    },
    "Token": {
        "type": "object", "required": ["id", "user", "prefix", "state"],
        "description": "a token's record: never the token (shown once, at creation) "
                       "nor its hash",
        "properties": {"id": STR, "user": STR,
                       "prefix": {"type": "string", "description": "the token's first characters"},
                       "description": {"type": "string", "nullable": True},
                       "created": TIME, "expires": TIME, "last_used": TIME, "revoked": TIME,
                       "state": {"type": "string", "enum": ["active", "expired", "revoked"]}},
    },
    "NewToken": {"allOf": [_ref("Token"), {
        "type": "object", "required": ["token"],
        "properties": {"token": {"type": "string",
                                 "description": "the token, shown this once: "
                                                "send it as Authorization: Bearer TOKEN"}}}]},
    "Me": {
        "type": "object", "required": ["user", "role", "projects", "project"],
        "properties": {"user": STR, "role": {"type": "string", "enum": list(ROLES)},
                       "projects": PROJECTS,
                       "project": {"type": "string",
                                   "description": "the project this request acts in"},
                       "token_id": {"type": "string", "nullable": True}},
    },
}

USER_NAME = {"name": "name", "in": "path", "required": True, "schema": STR}
TOKEN_ID = {"name": "token_id", "in": "path", "required": True, "schema": STR}
PATHS = {
    "/v1/me": {"get": {"summary": "who the token names: user, role, projects, "
                                  "and the project this request acts in",
                       "responses": {"200": _json(_ref("Me")), **ERRORS}}},
    "/v1/users": {
        "get": {"summary": "users (admin)",
                "responses": {"200": _json(_list_of(_ref("User"))), **ERRORS}},
        "post": {"summary": "add a user (admin); every project named must exist",
                 "requestBody": _body("UserCreate"),
                 "responses": {"201": _json(_ref("User"), "added"), **ERRORS}},
    },
    "/v1/users/{name}": {
        "parameters": [USER_NAME],
        "get": {"summary": "one user (admin)",
                "responses": {"200": _json(_ref("User")), **ERRORS}},
        "patch": {"summary": "change a user's role, projects or disabled (admin); "
                             "a disabled user's tokens stop working; the last admin stays one",
                  "requestBody": _body("UserUpdate"),
                  "responses": {"200": _json(_ref("User")), **ERRORS}},
        "delete": {"summary": "remove a user and their tokens (admin); not the last admin",
                   "responses": DELETED},
    },
    "/v1/tokens": {
        "get": {"summary": "the caller's tokens (an admin: everyone's, or ?user=)",
                "parameters": [{"name": "user", "in": "query", "schema": STR}],
                "responses": {"200": _json(_list_of(_ref("Token"))), **ERRORS}},
        "post": {"summary": "make a token (for oneself; an admin: for anyone); "
                            "the answer carries it, this once",
                 "requestBody": {"required": False, "content": {
                     "application/json": {"schema": _ref("TokenCreate")}}},
                 "responses": {"201": _json(_ref("NewToken"), "made"), **ERRORS,
                               "403": _json(_ref("Error"), "a token for another user: "
                                                           "an admin's alone")}},
    },
    "/v1/tokens/{token_id}": {
        "parameters": [TOKEN_ID],
        "get": {"summary": "one token's record (one's own; an admin: anyone's)",
                "responses": {"200": _json(_ref("Token")), **ERRORS}},
        "delete": {"summary": "revoke a token (one's own; an admin: anyone's)",
                   "responses": DELETED},
    },
}

"""Issue 11: what /v1/openapi.json says of the teams features (appliance/api/openapi.py).

Every documented operation with a token takes `?project=` (auth.py: the
project the request acts in) and answers 401, 403 and 404; its 403 names
exactly the roles the policy table allows (per file, on a route for every
file). The operations are read from the document and matched by the app's
router (matrix_sources.py), so a route added later is checked too.
"""
from __future__ import annotations

import re
from collections.abc import Mapping

import pytest

from appliance.access import policy
from appliance.access.principal import Role
from appliance.api.openapi import DOCUMENT
from tests.unit.appliance.api.matrix_sources import Documented, app_at_collection, documented

OPS = [op for op in documented(app_at_collection()) if not op.public]
SCHEMAS = DOCUMENT["components"]["schemas"]


def _operation(op: Documented) -> dict:
    return DOCUMENT["paths"][op.path][op.method.lower()]


def _roles_named(text: str) -> set[Role]:
    return {role for role in Role if re.search(rf"\b{role.value}\b", text)}


def _allowed(action: policy.Action) -> set[Role]:
    return {role for role in Role if policy.allows(role, action)}


def test_the_document_lists_operations_with_a_token():
    """Guards the walk: the cases below are not an empty list."""
    assert len(OPS) >= 50
    assert {(op.path, op.method) for op in OPS} >= {
        ("/metrics", "GET"), ("/v1/vms/{name}/lock", "DELETE"), ("/v1/users", "POST")}


@pytest.mark.parametrize("op", OPS, ids=[f"{op.method}-{op.path}" for op in OPS])
def test_every_operation_with_a_token_takes_project_and_answers_401_403_404(op):
    operation = _operation(op)
    project = [p for p in operation.get("parameters", []) if p["name"] == "project"]
    assert len(project) == 1 and project[0]["in"] == "query"
    assert "404" in project[0]["description"]
    assert {"401", "403", "404"} <= set(operation["responses"])


@pytest.mark.parametrize("op", OPS, ids=[f"{op.method}-{op.path}" for op in OPS])
def test_the_403_names_the_roles_the_policy_allows(op):
    refusal = _operation(op)["responses"]["403"]["description"].split(". Also: ")[0]
    rule = policy.ROUTES[(op.template, op.method)]
    if isinstance(rule, Mapping) and op.file is None:  # a route for every file
        files = [p["schema"]["enum"] for p in DOCUMENT["paths"][op.path]["parameters"]
                 if p["name"] == "file"][0]
        for part in refusal[refusal.index("(") + 1:-1].split("; "):
            names, roles = part.split(": ")
            for name in names.split(", "):
                assert name in files
                action = policy.action_for(op.template, op.method, {"file": name})
                assert action is not None and _roles_named(roles) == _allowed(action), name
        return
    action = policy.action_for(op.template, op.method, {"file": op.file or ""})
    assert action is not None
    assert _roles_named(refusal) == _allowed(action), refusal


def test_the_teams_parameters_and_fields_are_documented():
    paths = DOCUMENT["paths"]
    for path in ("/v1/vms", "/v1/operations", "/v1/events"):
        names = {p["name"] for p in paths[path]["get"]["parameters"]}
        assert "all_projects" in names, path
        assert "all_projects" in paths[path]["get"]["responses"]["403"]["description"]
    assert "user" in {p["name"] for p in paths["/v1/events"]["get"]["parameters"]}
    assert {"get", "put", "delete"} <= set(paths["/v1/vms/{name}/lock"])
    vm = SCHEMAS["VM"]["properties"]
    assert vm["lock"]["allOf"] == [{"$ref": "#/components/schemas/Lock"}]
    assert vm["project"]["type"] == "string"
    # A locked VM refuses another user's change: 409.
    assert "locked" in paths["/v1/vms/{name}"]["patch"]["responses"]["409"]["description"]

"""Issue 11: another project's VMs do not exist for a caller outside it, on every VM route.

`webop` is an operator of the project `web` alone; `db1` is a VM of the
project `db` (matrix_world.py). Every route under /v1/vms/{name} the router
serves (file routes once per file), generated as the role matrix is: where
the operator's role allows the action, db1 is 404, word for word the answer
for a VM that exists nowhere; where the role does not, the 403 is the same
for both names (as is the file table's refusal of a file with no writer).
Either way db1 is unchanged.
"""
from __future__ import annotations

import pytest

from appliance.access import policy
from appliance.access.principal import Role
from tests.unit.appliance.api.matrix_sources import FILE_ROUTES, app_at_collection, expanded, served
from tests.unit.appliance.api.matrix_world import json_body, sample

VM_CASES = [case for case in expanded(served(app_at_collection()))
            if case[0].startswith("/v1/vms/{name}")]
NOWHERE = "nosuch1"


@pytest.fixture(scope="module")
def webop(policy_world, policy_app):
    return policy_world.client(policy_app[1], "webop")


def _db1(policy_app) -> dict:
    service = policy_app[0]
    return service.store.get_vm("db1", "db", with_xml=False)


@pytest.mark.parametrize("template, method, file", VM_CASES,
                         ids=[f"{m}-{t.replace('{file}', f or '{file}')}" for t, m, f in VM_CASES])
def test_another_project_s_vm_is_not_found(policy_world, policy_app, webop, template, method,
                                           file):
    before = _db1(policy_app)
    answers = {}
    for vm in ("db1", NOWHERE):
        request = sample(policy_world, "webop", template, method, file, vm=vm)
        answers[vm] = webop.simulate_request(method, request.path, **request.kwargs)
    action = policy.action_for(template, method, {"file": file or ""})
    assert action is not None
    theirs, nowhere = answers["db1"], answers[NOWHERE]
    if not policy.allows(Role.OPERATOR, action):
        expected = {403}
    elif _no_writer(template, method, file):
        # A write to a file with no writer (the console), or a DELETE of a file that cannot
        # be removed: the file table refuses it (403, 404 no such file) before any VM is read.
        expected = {403, 404}
    else:
        expected = {404}
    assert theirs.status_code in expected, (theirs.status_code, theirs.text[:300])
    # Nothing tells db1 from a VM that does not exist.
    assert theirs.text.replace("db1", NOWHERE) == nowhere.text
    assert nowhere.status_code == theirs.status_code
    assert _db1(policy_app) == before


def _no_writer(template: str, method: str, file: str | None) -> bool:
    """A write the file table refuses by the file's name alone: PUT to a read-only file,
    DELETE of a file that cannot be removed (all but the lock)."""
    if file is None or method == "GET":
        return False
    directory, _ = FILE_ROUTES[template]
    if file not in directory:
        return True
    entry = directory.file(file)
    return entry.clear is None if method == "DELETE" else not entry.writable


def _names(resp) -> list[str]:
    assert resp.status_code == 200, resp.text[:300]
    return sorted(vm["name"] for vm in resp.json["items"])


def test_project_parameter_outside_one_s_projects_is_not_found(webop):
    for method, path in (("GET", "/v1/vms"), ("GET", "/v1/vms/db1"), ("PATCH", "/v1/vms/db1"),
                         ("PUT", "/v1/vms/db1/state")):
        resp = webop.simulate_request(method, path, params={"project": "db", "wait": "false"},
                                      json={"state": "running", "cpus": 2})
        assert resp.status_code == 404, (method, path, resp.text[:300])
        assert json_body(resp).get("field") == "project"
    # A project that does not exist answers the same.
    nowhere = webop.simulate_get("/v1/vms", params={"project": "nosuch"})
    assert nowhere.status_code == 404
    assert nowhere.text.replace("nosuch", "db") == webop.simulate_get(
        "/v1/vms", params={"project": "db"}).text


def test_an_operator_sees_their_own_project(webop):
    assert _names(webop.simulate_get("/v1/vms")) == ["www1"]
    assert _names(webop.simulate_get("/v1/vms", params={"project": "web"})) == ["www1"]
    assert webop.simulate_get("/v1/vms/www1").json["project"] == "web"


def test_the_default_project_s_operator_sees_the_default_project_alone(policy_world, policy_app):
    operator = policy_world.client(policy_app[1], "operator")
    assert _names(operator.simulate_get("/v1/vms")) == ["web1", "web2"]
    assert operator.simulate_get("/v1/vms/db1").status_code == 404


def test_an_admin_names_any_project(policy_world, policy_app):
    admin = policy_world.client(policy_app[1], "admin")
    got = admin.simulate_get("/v1/vms/db1", params={"project": "db"})
    assert got.status_code == 200 and got.json["project"] == "db"
    assert _names(admin.simulate_get("/v1/vms", params={"project": "db"})) == ["db1"]
    # Without ?project= the admin acts in their own (default) project.
    assert admin.simulate_get("/v1/vms/db1").status_code == 404
    assert admin.simulate_get("/v1/vms", params={"project": "nosuch"}).status_code == 404

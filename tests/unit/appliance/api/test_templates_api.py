"""Templates over REST (issue 14, part C): /v1/templates and /v1/templates/{name},
who may change what (the policy table and the service's ADMIN for global ones),
the answers' fields and statuses, and a VM's `template` in GET /v1/vms/NAME."""
from __future__ import annotations

import time

import pytest
from falcon import testing

from appliance.api.app import create_app
from tests.unit.appliance.api.test_projects_api import add_user

TOKEN = "templates-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def world(service):
    service.store.insert_project({"name": "web", "description": "", "quota": {},
                                  "created": time.time()})
    client = testing.TestClient(create_app(service, TOKEN), headers=ADMIN)
    operator = add_user(service.store, "olga", "operator", ["web"])
    viewer = add_user(service.store, "vic", "viewer", ["web"])
    return client, operator, viewer


def test_crud_and_etags(world):
    client, _, _ = world
    made = client.simulate_post("/v1/templates", json={
        "name": "small", "spec": {"cpus": 1, "memory": "512M"}, "description": "one CPU",
        "global": True})
    assert made.status_code == 201, made.text
    assert made.headers["location"] == "/v1/templates/small" and made.headers["etag"] == '"1"'
    assert (made.json["global"], made.json["spec"]) == (True, {"cpus": 1, "memory": 512})
    assert [t["name"] for t in client.simulate_get("/v1/templates").json["items"]] == \
        ["default", "small"]
    assert client.simulate_get("/v1/templates/small").json == made.json
    put = client.simulate_put("/v1/templates/small", json={"spec": {"cpus": 2}},
                              headers={**ADMIN, "If-Match": '"1"'})
    assert (put.status_code, put.json["revision"], put.headers["etag"]) == (200, 2, '"2"'), put.text
    stale = client.simulate_patch("/v1/templates/small", json={"spec": {"cpus": 3}},
                                  headers={**ADMIN, "If-Match": '"1"'})
    assert stale.status_code == 412
    patched = client.simulate_patch("/v1/templates/small", json={"spec": {"memory": "1G"}})
    assert patched.json["spec"] == {"cpus": 2, "memory": 1024}
    assert client.simulate_delete("/v1/templates/small").status_code == 204
    assert client.simulate_get("/v1/templates/small").status_code == 404


def test_refusals_name_the_field(world):
    client, _, _ = world
    for body, status, field in (({"name": "t", "spec": {"cpus": 0}}, 422, "spec.cpus"),
                                ({"name": "t", "spec": {"shoes": 2}}, 422, "spec.shoes"),
                                ({"name": "t", "spec": {}, "size": 1}, 422, "size"),
                                ({"name": "default", "spec": {}}, 409, "name")):
        resp = client.simulate_post("/v1/templates", json=body)
        assert (resp.status_code, resp.json.get("field")) == (status, field), resp.text
    resp = client.simulate_put("/v1/templates/default", json={"spec": {"cpus": 2}})
    assert resp.status_code == 403
    assert client.simulate_delete("/v1/templates/default").status_code == 403


def test_operators_own_their_project_s_templates_and_admins_the_global_ones(world):
    client, operator, viewer = world
    assert client.simulate_post("/v1/templates", json={
        "name": "small", "spec": {"cpus": 1}, "global": True}).status_code == 201
    refused = client.simulate_post("/v1/templates", headers=operator, json={
        "name": "big", "spec": {"cpus": 4}, "global": True})
    assert refused.status_code == 403, refused.text
    assert client.simulate_put("/v1/templates/small", headers=operator,
                               json={"spec": {"cpus": 8}}).status_code == 403
    assert client.simulate_delete("/v1/templates/small", headers=operator).status_code == 403
    mine = client.simulate_post("/v1/templates", headers=operator,
                                json={"name": "web-box", "spec": {"cpus": 2}})
    assert (mine.status_code, mine.json["project"]) == (201, "web"), mine.text
    assert client.simulate_post("/v1/templates", headers=viewer, json={
        "name": "v", "spec": {}}).status_code == 403
    seen = client.simulate_get("/v1/templates", headers=viewer).json["items"]
    assert [t["name"] for t in seen] == ["default", "small", "web-box"]
    # the default project (the admin's) does not see web's
    assert client.simulate_get("/v1/templates/web-box").status_code == 404

    vm = client.simulate_post("/v1/vms", headers=operator, params={"wait": "false"},
                              json={"name": "web1", "template": "web-box", "state": "stopped"})
    assert vm.status_code == 202, vm.text
    shown = client.simulate_get("/v1/vms/web1", headers=operator).json
    assert shown["template"] == {"name": "web-box", "revision": 1} and shown["spec"]["cpus"] == 2
    assert client.simulate_delete("/v1/templates/web-box", headers=operator).status_code == 204
    assert client.simulate_get("/v1/vms/web1", headers=operator).json["template"] == \
        {"name": "web-box", "revision": 1}

"""A project's backup policy over REST: PATCH /v1/projects/P {"backup": ...}
sets it whole, null removes it, a refused one names its field and changes nothing."""
from __future__ import annotations

import pytest
from falcon import testing

from appliance.api.app import create_app
from tests.unit.appliance.api.test_projects_api import add_user

TOKEN = "projects-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
POLICY = {"schedule": "daily 02:00", "target": "nas", "keep_daily": 7}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=ADMIN)


def test_a_project_has_no_policy_until_one_is_set_then_null_removes_it(client, store):
    assert client.simulate_post("/v1/projects", json={"name": "web"}).json["backup"] is None
    patched = client.simulate_patch("/v1/projects/web", json={"backup": POLICY})
    assert patched.status_code == 200, patched.text
    assert patched.json["backup"] == {**POLICY, "full_every": 6}  # the default made explicit
    assert client.simulate_get("/v1/projects/web").json["backup"] == patched.json["backup"]
    assert store.get_project("web")["backup"] == patched.json["backup"]
    # Another PATCH leaves the policy as it is.
    assert client.simulate_patch("/v1/projects/web", json={"description": "d"}).json["backup"]
    assert client.simulate_patch("/v1/projects/web", json={"backup": None}).json["backup"] is None
    assert store.get_project("web")["backup"] is None


def test_a_project_created_with_a_policy(client):
    made = client.simulate_post("/v1/projects", json={"name": "db", "backup": {
        "schedule": "weekly sun 03:30", "keep_weekly": 4, "full_every": 3}})
    assert made.status_code == 201, made.text
    assert made.json["backup"] == {"schedule": "weekly sun 03:30", "keep_weekly": 4,
                                   "full_every": 3}


@pytest.mark.parametrize(("policy", "field", "reason"), [
    ({"schedule": "daily 2:00", "keep_daily": 7}, "backup.schedule", "daily HH:MM"),
    ({"schedule": "every minute", "keep_last": 1}, "backup.schedule", "hourly"),
    ({"schedule": "hourly"}, "backup", "at least one of keep_last"),
    ({"keep_daily": -1}, "backup.keep_daily", "from 0 to"),
    ({"keep_daily": "7"}, "backup.keep_daily", "whole number"),
    ({"keep_last": 1, "full_every": 0}, "backup.full_every", "from 1 to 100"),
    ({"keep_last": 1, "target": "../etc"}, "backup.target", "DNS label"),
    ({"keep_last": 1, "cron": "* * * * *"}, "backup", "unknown field 'cron'"),
    ("daily", "backup", "must be an object"),
])
def test_a_refused_policy_names_its_field_and_changes_nothing(client, store, policy, field, reason):
    client.simulate_post("/v1/projects", json={"name": "web", "backup": POLICY})
    before = store.get_project("web")
    refused = client.simulate_patch("/v1/projects/web", json={"backup": policy,
                                                              "description": "changed"})
    assert refused.status_code == 422, refused.text
    assert refused.json["field"] == field and reason in refused.json["reason"]
    assert store.get_project("web") == before


def test_only_an_admin_sets_a_projects_policy(client, store):
    client.simulate_post("/v1/projects", json={"name": "web"})
    operator = add_user(store, "alice", "operator", ["web"])
    denied = client.simulate_patch("/v1/projects/web", json={"backup": POLICY}, headers=operator)
    assert denied.status_code == 403
    assert store.get_project("web")["backup"] is None
    # The operator sees the policy of their project.
    client.simulate_patch("/v1/projects/web", json={"backup": POLICY})
    assert client.simulate_get("/v1/projects/web", headers=operator).json["backup"]["keep_daily"] == 7

"""Regression tests of the issue-11 security review (users, projects, audit): each
failed before its fix."""
from __future__ import annotations

import pytest
from falcon import testing

from appliance.access import mountmap
from appliance.api.app import create_app
from tests.unit.appliance.api.test_projects import ADMIN, ADMIN_TOKEN, add_project, add_user


@pytest.fixture
def api(service):
    app = testing.TestClient(create_app(service, ADMIN_TOKEN))
    for project in ("web", "hush"):
        add_project(service.store, project)
    return app


def test_the_admins_events_are_not_shown_to_other_projects_members(api, service):
    """Users, tokens, projects and the mount's map are the admin's business: their events
    (which name other projects, users and token ids) were recorded with no project, and
    so listed to every viewer of every project."""
    viewer = add_user(service.store, "vic", "viewer", ["web"])
    assert api.simulate_post("/v1/projects", json={"name": "merger"}, headers=ADMIN).status_code == 201
    assert api.simulate_patch("/v1/projects/hush", json={"description": "x"},
                              headers=ADMIN).status_code == 200
    made = api.simulate_post("/v1/users", json={"name": "carol", "role": "operator",
                                                "projects": ["hush"]}, headers=ADMIN)
    assert made.status_code == 201
    assert api.simulate_post("/v1/tokens", json={"user": "carol", "description": "laptop"},
                             headers=ADMIN).status_code == 201
    mountmap.set_group(service.store, "5100", "operator", "hush")

    seen = api.simulate_get("/v1/events", headers=viewer)
    assert seen.status_code == 200
    leaked = [e["message"] for e in seen.json["items"]
              if any(word in e["message"] for word in ("hush", "merger", "carol"))]
    assert leaked == []
    # the admin still reads them all in their own listing
    admins = " ".join(e["message"] for e in api.simulate_get("/v1/events", headers=ADMIN).json["items"])
    for said in ("project merger created", "user carol added", "made for carol",
                 "PATCH /v1/projects/hush", "group 5100"):
        assert said in admins

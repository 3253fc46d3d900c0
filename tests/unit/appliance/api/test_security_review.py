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


def test_a_loopback_client_cannot_forge_its_address_with_x_forwarded_for():
    """The audit trail names a REST caller's address (the request's client). uvicorn trusts
    X-Forwarded-For from gunicorn's forwarded_allow_ips (127.0.0.1 and ::1 by default), and
    every default guest reaches the API from the host's loopback (slirp's 10.0.2.2): any of
    them could write the address of its choice into the log. The API's worker, configured
    as gunicorn's uvicorn worker configures it, keeps the connection's own address."""
    import asyncio

    from gunicorn.config import Config as GunicornConfig
    from uvicorn.config import Config

    from appliance.api.http_deadline import Worker

    seen = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"]

    config = Config(app, log_config=None,
                    forwarded_allow_ips=GunicornConfig().forwarded_allow_ips,
                    **Worker.CONFIG_KWARGS)
    config.load()
    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
             "scheme": "http", "path": "/v1/vms", "raw_path": b"/v1/vms", "query_string": b"",
             "root_path": "", "headers": [(b"x-forwarded-for", b"203.0.113.7")],
             "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080)}
    asyncio.run(config.loaded_app(scope, None, None))
    assert seen["client"] == ("127.0.0.1", 40000)


def test_a_project_made_again_under_an_old_name_does_not_inherit_its_history(api, service):
    """Project names are reused (a team leaves, another arrives under the same name): the
    events of the deleted project stayed under its name, so the members of the new one read
    the old team's history (its VMs, groups, users' writes and refusals). Deleting a project
    hands its events to the admins (ADMIN_EVENTS)."""
    old_team = add_user(service.store, "olga", "operator", ["web"])
    made = api.simulate_post("/v1/groups", json={"name": "payroll-db", "policy": "anti-affinity"},
                             headers=old_team)
    assert made.status_code == 201, made.text
    assert api.simulate_delete("/v1/groups/payroll-db", headers=old_team).status_code == 204
    assert api.simulate_delete("/v1/users/olga", headers=ADMIN).status_code == 204
    assert api.simulate_delete("/v1/projects/web", headers=ADMIN).status_code == 204

    assert api.simulate_post("/v1/projects", json={"name": "web"}, headers=ADMIN).status_code == 201
    new_team = add_user(service.store, "nina", "viewer", ["web"])
    seen = api.simulate_get("/v1/events", headers=new_team).json["items"]
    assert [e["message"] for e in seen if "payroll" in e["message"] or e["actor"] == "olga"] == []
    admins = api.simulate_get("/v1/events", headers=ADMIN).json["items"]
    assert any("payroll-db" in e["message"] for e in admins)


def test_a_user_made_again_under_an_old_name_does_not_hold_the_old_ones_locks(api, service):
    """A lock names its locker by user name; deleting the user left their locks under that
    name, so whoever was next made a user of that name (another person) could change and
    unlock the VMs the first one locked. A removed user's locks stay, the admins' to lift."""
    alice = add_user(service.store, "alice", "operator", ["web"])
    made = api.simulate_post("/v1/vms", json={"name": "exam1", "state": "stopped"}, headers=alice,
                             params={"wait": "false"})
    assert made.status_code in (201, 202), made.text
    assert api.simulate_put("/v1/vms/exam1/lock", body="exam running", headers=alice).status_code == 200
    assert api.simulate_delete("/v1/users/alice", headers=ADMIN).status_code == 204

    again = add_user(service.store, "alice", "operator", ["web"])
    changed = api.simulate_put("/v1/vms/exam1/cpus", body="2", headers=again,
                               params={"wait": "false"})
    assert changed.status_code == 409 and changed.json["field"] == "lock", changed.text
    assert api.simulate_delete("/v1/vms/exam1/lock", headers=again).status_code == 409
    got = api.simulate_get("/v1/vms/exam1", headers=ADMIN, params={"project": "web"}).json
    assert got["lock"]["reason"] == "exam running" and got["spec"]["cpus"] == 1


@pytest.mark.parametrize("trick", ["\u202e", "\u2028", "\u200b", "\u2066"])
def test_a_token_description_has_no_format_characters_or_line_separators(api, service, trick):
    """A user's own token's description is shown in the admin's `vmctl token list`: C0 and C1
    controls were refused, but not a right-to-left override (which reverses the rest of the
    row on the admin's terminal) nor U+2028 (a line break for some readers)."""
    viewer = add_user(service.store, "vic", "viewer", ["web"])
    resp = api.simulate_post("/v1/tokens", json={"description": f"laptop{trick}nimda"}, headers=viewer)
    assert resp.status_code == 422 and resp.json["field"] == "description", resp.text


def test_how_a_host_is_reached_is_the_admins(api, service):
    """Security review (issue 11, reported, then fixed): every role read a host's `uri`
    (an ssh user and address, a keyfile's path) and its migration address. Others now see
    the URI's transport alone, in the view, the list and the `uri` file."""
    service.store.upsert_host({**service.store.get_host("local"), "name": "h2",
                               "uri": "qemu+ssh://deploy@10.1.2.3/system?keyfile=/root/.ssh/k",
                               "migration_address": "10.9.9.9"})
    viewer = add_user(service.store, "vic", "viewer", ["web"])
    operator = add_user(service.store, "otto", "operator", ["web"])
    for who in (viewer, operator):
        host = api.simulate_get("/v1/hosts/h2", headers=who).json
        assert (host["uri"], host["migration_address"]) == ("qemu+ssh://…", None)
        listed = {h["name"]: h for h in api.simulate_get("/v1/hosts", headers=who).json["items"]}
        assert "deploy" not in str(listed) and "10.9.9.9" not in str(listed)
        assert api.simulate_get("/v1/hosts/h2/uri", headers=who).text == "qemu+ssh://…\n"
    host = api.simulate_get("/v1/hosts/h2", headers=ADMIN).json
    assert host["uri"].startswith("qemu+ssh://deploy@10.1.2.3") and host["migration_address"] == "10.9.9.9"

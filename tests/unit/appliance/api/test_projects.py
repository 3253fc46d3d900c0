"""Projects over REST: a VM name is unique per project; `/v1/vms/NAME` is the
token's project's (or `?project=`); what lies outside the caller's projects is
404, never 403; `?all_projects=true` is an admin's. Operations, events, server
groups and a host's VM list follow their VM's project.

Users and tokens are made with the store (the users part builds their REST)."""
from __future__ import annotations

import pytest
from falcon import testing

from appliance.access import tokens
from appliance.api.app import create_app

ADMIN_TOKEN = "sekrit"  # the home's token: the first admin's
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


def add_project(store, name: str) -> None:
    store.insert_project({"name": name, "description": "", "quota": {}, "created": 0.0})


def add_user(store, name: str, role: str, projects: list[str]) -> dict[str, str]:
    """A user with one token; the Authorization header that presents it."""
    store.insert_user({"name": name, "role": role, "projects": projects, "created": 0.0,
                       "disabled": 0})
    token_id, token = tokens.new_token()
    store.insert_token({"id": token_id, "user": name, "hash": tokens.token_hash(token),
                        "prefix": tokens.shown_prefix(token), "description": "test",
                        "created": 0.0, "expires": None, "last_used": None, "revoked": None})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(service, controller):
    """The app, with a controller on libvirt's test driver that carries out its operations."""
    app = testing.TestClient(create_app(service, ADMIN_TOKEN))
    for project in ("web", "dev"):
        add_project(service.store, project)
    return app


@pytest.fixture
def alice(service, api):
    """An operator in project web."""
    return add_user(service.store, "alice", "operator", ["web"])


@pytest.fixture
def bob(service, api):
    """An operator in project dev."""
    return add_user(service.store, "bob", "operator", ["dev"])


def create(api, headers, name: str, project: str | None = None, **body):
    params = {"project": project} if project else {}
    resp = api.simulate_post("/v1/vms", json={"name": name, "state": "stopped", **body},
                             headers=headers, params=params)
    assert resp.status_code == 201, resp.text
    return resp.json


def names(resp) -> list[tuple[str, str]]:
    assert resp.status_code == 200, resp.text
    return sorted((vm["project"], vm["name"]) for vm in resp.json["items"])


def test_one_name_in_two_projects_is_two_vms(api):
    default = create(api, ADMIN, "web1")
    dev = create(api, ADMIN, "web1", project="dev")
    assert (default["project"], dev["project"]) == ("default", "dev")
    assert default["id"] != dev["id"]
    again = api.simulate_post("/v1/vms", json={"name": "web1"}, headers=ADMIN,
                              params={"project": "dev"})
    assert again.status_code == 409 and again.json["field"] == "name"

    assert api.simulate_get("/v1/vms/web1", headers=ADMIN).json["id"] == default["id"]
    got = api.simulate_get("/v1/vms/web1", headers=ADMIN, params={"project": "dev"})
    assert got.json["id"] == dev["id"] and got.json["project"] == "dev"
    assert names(api.simulate_get("/v1/vms", headers=ADMIN)) == [("default", "web1")]
    assert names(api.simulate_get("/v1/vms", headers=ADMIN, params={"project": "dev"})) == \
        [("dev", "web1")]
    assert names(api.simulate_get("/v1/vms", headers=ADMIN, params={"all_projects": "true"})) == \
        [("default", "web1"), ("dev", "web1")]

    # Each one's files and writes are its own.
    resp = api.simulate_put("/v1/vms/web1/state", json={"state": "running"}, headers=ADMIN,
                            params={"project": "dev"})
    assert resp.status_code == 200 and resp.json["state"] == "running", resp.text
    assert api.simulate_get("/v1/vms/web1/state", headers=ADMIN).json == {"state": "stopped"}

    resp = api.simulate_delete("/v1/vms/web1", headers=ADMIN,
                               params={"project": "dev", "force": "true"})
    assert resp.status_code == 204, resp.text
    assert api.simulate_get("/v1/vms/web1", headers=ADMIN, params={"project": "dev"}).status_code == 404
    assert api.simulate_get("/v1/vms/web1", headers=ADMIN).json["id"] == default["id"]
    assert api.simulate_delete("/v1/vms/web1", headers=ADMIN).status_code == 204
    assert names(api.simulate_get("/v1/vms", headers=ADMIN, params={"all_projects": "true"})) == []


def test_a_member_reaches_their_projects_vms_and_nothing_else(api, service, alice):
    create(api, ADMIN, "db1", project="dev")
    before = api.simulate_get("/v1/vms/db1", headers=ADMIN, params={"project": "dev"}).json
    mine = create(api, alice, "web1")
    assert mine["project"] == "web"
    assert names(api.simulate_get("/v1/vms", headers=alice)) == [("web", "web1")]

    # dev's db1 is not there for alice, whatever she asks: 404, and nothing changes.
    asks = [("GET", "/v1/vms/db1", None), ("GET", "/v1/vms/db1/state", None),
            ("GET", "/v1/vms/db1/console", None), ("GET", "/v1/vms/db1/spec.json", None),
            ("PUT", "/v1/vms/db1/state", {"state": "running"}),
            ("PUT", "/v1/vms/db1/cpus", {"cpus": 2}), ("PUT", "/v1/vms/db1/host", {"host": "local"}),
            ("PATCH", "/v1/vms/db1", {"cpus": 2}), ("DELETE", "/v1/vms/db1", None)]
    for method, path, body in asks:
        resp = api.simulate_request(method, path, json=body, headers=alice,
                                    params={"wait": "false", "force": "true"})
        assert resp.status_code == 404, (method, path, resp.status_code, resp.text)
    for params in ({"project": "dev"}, {"project": "default"}, {"project": "nosuch"}):
        resp = api.simulate_get("/v1/vms/db1", headers=alice, params=params)
        assert resp.status_code == 404 and resp.json["field"] == "project", params
    after = api.simulate_get("/v1/vms/db1", headers=ADMIN, params={"project": "dev"}).json
    assert after == before

    # Names are unique per project: alice may name hers db1 too.
    resp = api.simulate_patch("/v1/vms/web1", json={"name": "db1"}, headers=alice)
    assert resp.status_code == 200 and resp.json["project"] == "web", resp.text
    assert api.simulate_get("/v1/vms/db1", headers=alice).json["id"] == mine["id"]
    assert api.simulate_get("/v1/vms/db1", headers=ADMIN, params={"project": "dev"}).json["id"] == \
        before["id"]


def test_all_projects_is_for_admins(api, alice):
    create(api, ADMIN, "web1")
    create(api, alice, "web2")
    for path in ("/v1/vms", "/v1/operations", "/v1/events"):
        resp = api.simulate_get(path, headers=alice, params={"all_projects": "true"})
        assert resp.status_code == 403, (path, resp.text)
        assert resp.json["field"] == "all_projects" and "admin" in resp.json["reason"]
    every = api.simulate_get("/v1/vms", headers=ADMIN, params={"all_projects": "true"})
    assert names(every) == [("default", "web1"), ("web", "web2")]
    ops = api.simulate_get("/v1/operations", headers=ADMIN, params={"all_projects": "true"}).json
    assert {(o["project"], o["vm_name"]) for o in ops["items"]} == {("default", "web1"), ("web", "web2")}
    events = api.simulate_get("/v1/events", headers=ADMIN, params={"all_projects": "true"}).json
    assert {("web", "web2"), ("default", "web1")} <= {(e["project"], e["vm_name"]) for e in events["items"]}
    # Without it, the admin's own project's.
    assert names(api.simulate_get("/v1/vms", headers=ADMIN)) == [("default", "web1")]


def test_operations_and_events_of_another_project_are_not_found(api, service, alice, bob):
    resp = api.simulate_post("/v1/vms", json={"name": "db1", "state": "stopped"}, headers=bob,
                             params={"wait": "false"})
    assert resp.status_code == 202, resp.text
    op = resp.json["operation"]
    assert op["project"] == "dev"
    create(api, alice, "web1")

    for method, params in (("GET", {}), ("GET", {"wait": "1"}), ("DELETE", {})):
        resp = api.simulate_request(method, f"/v1/operations/{op['id']}", headers=alice, params=params)
        assert resp.status_code == 404, (method, params, resp.text)
    assert api.simulate_get(f"/v1/operations/{op['id']}", headers=bob).json["id"] == op["id"]
    assert api.simulate_get(f"/v1/operations/{op['id']}", headers=ADMIN).json["project"] == "dev"
    listed = api.simulate_get("/v1/operations", headers=alice).json["items"]
    assert {o["vm_name"] for o in listed} == {"web1"}
    assert api.simulate_get("/v1/operations", headers=alice, params={"vm": "db1"}).json["items"] == []

    service.store.add_event("host-state", "host local is now enabled")  # the appliance's own
    alices = api.simulate_get("/v1/events", headers=alice).json["items"]
    assert {e["vm_name"] for e in alices} == {"web1", None}
    assert {e["project"] for e in alices} == {"web", None}
    assert "host-state" in {e["kind"] for e in alices}
    bobs = api.simulate_get("/v1/events", headers=bob).json["items"]
    assert {e["vm_name"] for e in bobs} == {"db1", None}
    assert api.simulate_get("/v1/events", headers=alice, params={"vm": "db1"}).status_code == 404
    assert api.simulate_get("/v1/vms/web1/events", headers=alice).json["items"][0]["project"] == "web"


def test_server_groups_are_per_project(api, service, alice, bob):
    for who in (alice, bob):
        resp = api.simulate_post("/v1/groups", json={"name": "g", "policy": "anti-affinity"},
                                 headers=who)
        assert resp.status_code == 201, resp.text
    assert api.simulate_post("/v1/groups", json={"name": "g", "policy": "affinity"},
                             headers=alice).status_code == 409
    assert api.simulate_post("/v1/groups", json={"name": "only-web", "policy": "affinity"},
                             headers=alice).status_code == 201
    create(api, alice, "web1", group="g")
    assert api.simulate_get("/v1/groups/g", headers=alice).json["members"] == \
        [{"name": "web1", "host": "local"}]
    assert api.simulate_get("/v1/groups/g", headers=bob).json["members"] == []
    assert api.simulate_get("/v1/groups/g", headers=ADMIN).status_code == 404  # default has none
    assert [g["name"] for g in api.simulate_get("/v1/groups", headers=bob).json["items"]] == ["g"]

    # A spec names its own project's group: web's only-web is not there for bob.
    resp = api.simulate_post("/v1/vms", json={"name": "db1", "group": "only-web"}, headers=bob)
    assert resp.status_code == 422 and resp.json["field"] == "group"
    assert api.simulate_get("/v1/groups/only-web", headers=bob).status_code == 404
    assert api.simulate_delete("/v1/groups/only-web", headers=bob).status_code == 404

    # bob's g goes; alice's (with its member) stays.
    assert api.simulate_delete("/v1/groups/g", headers=bob).status_code == 204
    assert api.simulate_get("/v1/groups/g", headers=alice).json["members"][0]["name"] == "web1"
    assert api.simulate_delete("/v1/groups/g", headers=alice).status_code == 409


def test_a_hosts_vm_list_shows_the_callers_project(api, alice, bob):
    create(api, ADMIN, "web1")
    create(api, ADMIN, "web1", project="dev")
    create(api, alice, "web2")
    text = {"format": "text"}
    assert api.simulate_get("/v1/hosts/local/vms", headers=alice, params=text).text == "web2\n"
    assert api.simulate_get("/v1/hosts/local/vms", headers=bob, params=text).text == "web1\n"
    assert api.simulate_get("/v1/hosts/local/vms", headers=ADMIN, params=text).text == \
        "web1\ndev/web1\nweb/web2\n"
    # Hosts themselves are every project's to read.
    assert api.simulate_get("/v1/hosts/local", headers=alice).json["allocated"]["vms"] == 3


def test_a_taken_mac_or_address_does_not_name_another_projects_vm(api, alice, bob):
    """A MAC or a fixed IP is the whole appliance's (one network, one DHCP server),
    so a conflict across projects is refused, but the refusal names the holder
    only to whoever may see it (it named any VM of any project)."""
    mac = "52:54:00:aa:bb:01"
    net = {"type": "network", "name": "default", "ip": "192.168.122.77"}
    create(api, bob, "secret-db", network={"type": "user", "mac": mac})
    create(api, bob, "secret-web", network=net)
    for body, field in (({"network": {"type": "user", "mac": mac}}, "network.mac"),
                        ({"network": net}, "network.ip")):
        resp = api.simulate_post("/v1/vms", json={"name": "mine", **body}, headers=alice)
        assert resp.status_code == 409 and resp.json["field"] == field, resp.text
        assert "secret" not in resp.text and "dev" not in resp.text
        assert "another project" in resp.json["reason"]
        mine = api.simulate_post("/v1/vms", json={"name": "mine", **body}, headers=bob)
        assert mine.status_code == 409 and "secret-" in mine.json["reason"]
        admin = api.simulate_post("/v1/vms", json={"name": "mine", **body}, headers=ADMIN)
        assert admin.status_code == 409 and "dev/secret-" in admin.json["reason"]

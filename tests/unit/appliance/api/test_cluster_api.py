"""The REST view of several hosts: /v1/hosts, /v1/groups, placement on create,
and moving a VM with PUT /v1/vms/NAME/host.

No controller runs here: a host counts as up once the test stamps its heartbeat
and inventory in the store (as the controller does), and a VM's observed state
is set in the store when a test needs it settled. Operations therefore stay
pending; the tests check what the API recorded and answered.
"""
import json
import time

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.model import OPEN_OP_STATES
from tests.unit.conftest import TEST_HOST_INFO

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_WAIT = {"wait": "false"}
TEXT = {"Content-Type": "text/plain"}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


def heartbeat(store, name: str, info: dict | None = None) -> None:
    """What the controller records when a host's libvirt answers."""
    store.upsert_host({"name": name, "up": 1, "last_seen": time.time(), "info": info or TEST_HOST_INFO})


def add_host(client, store, name: str, up: bool = True, **fields) -> dict:
    resp = client.simulate_post("/v1/hosts", json={"name": name, "uri": f"qemu+ssh://root@{name}/system", **fields})
    assert resp.status_code == 201, resp.text
    if up:
        heartbeat(store, name)
    return resp.json


def settle(store, name: str, state: str) -> None:
    """The VM's observed (and desired) state, and its operations done, as the controller would record them."""
    vm = store.get_vm(name)
    store.update_vm(vm["id"], bump=False, observed_state=state, desired_state=state)
    for op in store.operations_of_vm(vm["id"], OPEN_OP_STATES):
        store.update_operation(op["id"], status="succeeded", finished=time.time())


def create_vm(client, name: str, **body) -> dict:
    resp = client.simulate_post("/v1/vms", json={"name": name, "state": "stopped", **body}, params=NO_WAIT)
    assert resp.status_code == 202, resp.text
    return client.simulate_get(f"/v1/vms/{name}").json


# -- hosts ----------------------------------------------------------------------------------
def test_add_host_defaults_location_and_list(client):
    resp = client.simulate_post("/v1/hosts", json={"name": "h2", "uri": "qemu+ssh://root@h2/system"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/hosts/h2"
    host = resp.json
    assert (host["state"], host["storage"], host["labels"]) == ("enabled", "shared", {})
    assert (host["cpu_ratio"], host["ram_ratio"], host["disk_ratio"]) == (16.0, 1.5, 1.0)
    # No heartbeat from the controller yet: known, but down.
    assert host["up"] is False and host["observed_state"] == "down"
    assert [h["name"] for h in client.simulate_get("/v1/hosts").json["items"]] == ["h2", "local"]
    assert client.simulate_get("/v1/hosts/h2").json["uri"] == "qemu+ssh://root@h2/system"


def test_add_host_with_every_field(client):
    body = {"name": "h3", "uri": "qemu+unix:///system?socket=/run/libvirt/h3/libvirt-sock", "labels": {"zone": "b"},
            "storage": "nfs1", "migration_address": "10.0.0.3", "state": "disabled", "cpu_ratio": 4,
            "ram_ratio": 1.0, "disk_ratio": 2.5, "reserved_memory_mib": 512}
    host = client.simulate_post("/v1/hosts", json=body).json
    assert {k: host[k] for k in body} == {**body, "cpu_ratio": 4.0}


def test_patch_host_merges_and_capacity_follows_the_ratios(client, store):
    add_host(client, store, "h2")
    resp = client.simulate_patch("/v1/hosts/h2", json={"labels": {"gpu": "yes"}, "cpu_ratio": 2,
                                                       "reserved_memory_mib": 1024})
    assert resp.status_code == 200, resp.text
    host = resp.json
    assert host["labels"] == {"gpu": "yes"} and host["storage"] == "shared"  # untouched fields stay
    assert host["capacity"]["cpus"] == TEST_HOST_INFO["cpus"] * 2
    assert host["capacity"]["memory_mib"] == int(TEST_HOST_INFO["memory_mib"] * 1.5) - 1024
    assert client.simulate_patch("/v1/hosts/h2", json={"state": "disabled"}).json["state"] == "disabled"


@pytest.mark.parametrize("body, field", [
    ({"name": "h2", "uri": "not a uri"}, "uri"),
    ({"name": "h2"}, "uri"),
    ({"name": "h2", "uri": "qemu:///system", "cpu_ratio": 0}, "cpu_ratio"),
    ({"name": "h2", "uri": "qemu:///system", "ram_ratio": "2"}, "ram_ratio"),
    ({"name": "h2", "uri": "qemu:///system", "disk_ratio": True}, "disk_ratio"),
    ({"name": "h2", "uri": "qemu:///system", "colour": "red"}, "colour"),
    ({"name": "H 2", "uri": "qemu:///system"}, "name"),
    ({"name": "h2", "uri": "qemu:///system", "state": "sleeping"}, "state"),
    ({"name": "h2", "uri": "qemu:///system", "storage": "a b"}, "storage"),
    ({"name": "h2", "uri": "qemu:///system", "labels": {"bad key!": "x"}}, "labels"),
    ({"name": "h2", "uri": "qemu:///system", "reserved_memory_mib": -1}, "reserved_memory_mib"),
    ({"name": "h2", "uri": "qemu:///system", "migration_address": "a b"}, "migration_address"),
    ([], None),
])
def test_bad_host_is_refused_with_the_field(client, body, field):
    resp = client.simulate_post("/v1/hosts", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json.get("field") == field
    assert [h["name"] for h in client.simulate_get("/v1/hosts").json["items"]] == ["local"]


@pytest.mark.parametrize("patch, field", [
    ({"cpu_ratio": 5000}, "cpu_ratio"), ({"uri": "nope"}, "uri"), ({"name": "h9"}, "name"),
    ({"labels": "gpu"}, "labels"),
])
def test_bad_patch_is_refused_and_changes_nothing(client, store, patch, field):
    before = add_host(client, store, "h2", up=False)
    resp = client.simulate_patch("/v1/hosts/h2", json=patch)
    assert resp.status_code == 422 and resp.json["field"] == field
    assert client.simulate_get("/v1/hosts/h2").json == before


def test_duplicate_name_or_uri_is_409(client, store):
    add_host(client, store, "h2")
    resp = client.simulate_post("/v1/hosts", json={"name": "h2", "uri": "qemu+ssh://root@other/system"})
    assert resp.status_code == 409 and resp.json["field"] == "name"
    resp = client.simulate_post("/v1/hosts", json={"name": "h3", "uri": "qemu+ssh://root@h2/system"})
    assert resp.status_code == 409 and resp.json["field"] == "uri" and "h2" in resp.json["reason"]
    resp = client.simulate_post("/v1/hosts", json={"name": "h3", "uri": "test:///default"})
    assert resp.status_code == 409 and "local" in resp.json["reason"]


@pytest.mark.parametrize("method, path, kwargs", [
    ("GET", "/v1/hosts/nope", {}),
    ("PATCH", "/v1/hosts/nope", {"json": {"cpu_ratio": 2}}),
    ("DELETE", "/v1/hosts/nope", {}),
    ("GET", "/v1/hosts/nope/capacity", {}),
    ("PUT", "/v1/hosts/nope/state", {"json": {"state": "disabled"}}),
])
def test_unknown_host_is_404(client, method, path, kwargs):
    resp = client.simulate_request(method, path, **kwargs)
    assert resp.status_code == 404, resp.text
    assert resp.json["field"] == "host"


def test_delete_host_refused_while_a_vm_is_on_it(client, store):
    add_host(client, store, "h2")
    create_vm(client, "web1", host="h2")
    resp = client.simulate_delete("/v1/hosts/h2")
    assert resp.status_code == 409 and "web1" in resp.json["reason"]
    assert client.simulate_get("/v1/hosts/h2").status_code == 200
    assert client.simulate_delete("/v1/vms/web1", params={**NO_WAIT, "force": "true"}).status_code == 202
    store.delete_vm(store.get_vm("web1")["id"])  # what the controller does once the domain is gone
    assert client.simulate_delete("/v1/hosts/h2").status_code == 204
    assert client.simulate_get("/v1/hosts/h2").status_code == 404


def test_host_files(client):
    create_vm(client, "web1", cpus=2)
    assert client.simulate_get("/v1/hosts/local/uri").text == "test:///default\n"
    capacity = client.simulate_get("/v1/hosts/local/capacity")
    assert capacity.headers["content-type"].startswith("text/plain")
    assert f"cpus {TEST_HOST_INFO['cpus'] * 16}\n" in capacity.text
    allocated = client.simulate_get("/v1/hosts/local/allocated").text
    assert "cpus 0\n" in allocated and "vms 1\n" in allocated  # stopped: its disk only
    assert client.simulate_put("/v1/vms/web1/state", body="running", headers=TEXT, params=NO_WAIT).status_code == 202
    assert "cpus 2\n" in client.simulate_get("/v1/hosts/local/allocated").text  # claimed at start
    assert client.simulate_get("/v1/hosts/local/vms").text == "web1\n"
    status = client.simulate_get("/v1/hosts/local/status.json")
    assert status.headers["content-type"].startswith("application/json")
    assert json.loads(status.text)["allocated"]["vms"] == 1
    assert client.simulate_get("/v1/hosts/local/state").json == {"state": "enabled"}
    assert client.simulate_get("/v1/hosts/local/state", params={"format": "text"}).text == "enabled\n"
    assert client.simulate_get("/v1/hosts/local/nothing").status_code == 404
    resp = client.simulate_put("/v1/hosts/local/uri", body="qemu:///system", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 403
    assert client.simulate_put("/v1/hosts/local/nothing", body="x").status_code == 404


def test_a_host_without_heartbeat_reads_down(client, store):
    add_host(client, store, "h2", up=False)
    assert client.simulate_get("/v1/hosts/h2/state", params={"format": "text"}).text == "down\n"
    heartbeat(store, "h2")
    assert client.simulate_get("/v1/hosts/h2/state").json == {"state": "enabled"}


# -- host state and drain -------------------------------------------------------------------
DRAIN_KEYS = {"migrating", "moving", "blocked"}


def test_state_put_text_and_json_answer_the_host_and_its_drain(client):
    resp = client.simulate_put("/v1/hosts/local/state", body="disabled\n", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.text
    assert resp.json["state"] == "disabled" and resp.json["name"] == "local"
    assert resp.json["drain"] == {"migrating": [], "moving": [], "blocked": []}
    resp = client.simulate_put("/v1/hosts/local/state", json={"state": "enabled"})
    assert resp.json["state"] == "enabled"


@pytest.mark.parametrize("kwargs", [
    {"json": {"state": "asleep"}}, {"json": {"nope": 1}}, {"json": ["enabled"]},
    {"body": "asleep", "headers": {"Content-Type": "text/plain"}},
])
def test_bad_state_is_422(client, kwargs):
    resp = client.simulate_put("/v1/hosts/local/state", **kwargs)
    assert resp.status_code == 422 and resp.json["field"] == "state"
    assert client.simulate_get("/v1/hosts/local").json["state"] == "enabled"


def test_maintenance_moves_a_stopped_vm_and_migrates_a_running_one(client, store):
    create_vm(client, "web1")
    create_vm(client, "web2")
    settle(store, "web1", "stopped")
    settle(store, "web2", "running")
    add_host(client, store, "h2")
    resp = client.simulate_put("/v1/hosts/local/state", json={"state": "maintenance"})
    assert resp.status_code == 200, resp.text
    drain = resp.json["drain"]
    assert set(drain) == DRAIN_KEYS and drain["blocked"] == []
    assert [(m["vm"], m["target"]) for m in drain["moving"]] == [("web1", "h2")]
    assert [(m["vm"], m["target"]) for m in drain["migrating"]] == [("web2", "h2")]
    move = client.simulate_get(f"/v1/operations/{drain['moving'][0]['operation']}").json
    assert move["kind"] == "move" and move["params"]["target"] == "h2" and move["params"]["source"] == "local"
    migrate = client.simulate_get(f"/v1/operations/{drain['migrating'][0]['operation']}").json
    assert migrate["kind"] == "migrate"
    assert client.simulate_get("/v1/hosts/local").json["state"] == "maintenance"


def test_maintenance_without_another_host_reports_blocked(client, store):
    create_vm(client, "web1")
    settle(store, "web1", "stopped")
    drain = client.simulate_put("/v1/hosts/local/state", json={"state": "maintenance"}).json["drain"]
    assert drain["moving"] == [] and [b["vm"] for b in drain["blocked"]] == ["web1"]
    assert "no host fits web1" in drain["blocked"][0]["reason"]


def test_a_drain_says_why_a_host_cannot_receive_a_live_migration(client, store):
    """The local host's URI means each libvirtd itself: the reason names that, not "excluded
    by the request (e.g. a migration's source)" (the README doc test's finding)."""
    add_host(client, store, "h2")
    create_vm(client, "web1", host="h2")
    settle(store, "web1", "running")
    drain = client.simulate_put("/v1/hosts/h2/state", json={"state": "maintenance"}).json["drain"]
    assert [b["vm"] for b in drain["blocked"]] == ["web1"]
    reason = drain["blocked"][0]["reason"]
    local_uri = client.simulate_get("/v1/hosts/local").json["uri"]
    assert f"local by RequestedHostFilter (cannot receive live migrations: its URI {local_uri}" \
        in reason, reason


# -- server groups --------------------------------------------------------------------------
def test_group_crud(client):
    resp = client.simulate_post("/v1/groups", json={"name": "web", "policy": "anti-affinity"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/groups/web"
    assert resp.json["policy"] == "anti-affinity" and resp.json["members"] == []
    assert [g["name"] for g in client.simulate_get("/v1/groups").json["items"]] == ["web"]
    assert client.simulate_get("/v1/groups/web").json["name"] == "web"
    resp = client.simulate_post("/v1/groups", json={"name": "web", "policy": "affinity"})
    assert resp.status_code == 409 and resp.json["field"] == "name"
    assert client.simulate_delete("/v1/groups/web").status_code == 204
    assert client.simulate_get("/v1/groups/web").status_code == 404
    assert client.simulate_delete("/v1/groups/web").status_code == 404


@pytest.mark.parametrize("body, field", [
    ({"name": "web", "policy": "together"}, "policy"), ({"name": "web"}, "policy"),
    ({"name": "Web!", "policy": "affinity"}, "name"), ({"name": "web", "policy": "affinity", "size": 3}, "size"),
    ("web", None),
])
def test_bad_group_is_422(client, body, field):
    resp = client.simulate_post("/v1/groups", json=body)
    assert resp.status_code == 422 and resp.json.get("field") == field
    assert client.simulate_get("/v1/groups").json["items"] == []


def test_group_with_members_cannot_be_deleted_and_lists_them(client, store):
    client.simulate_post("/v1/groups", json={"name": "web", "policy": "soft-affinity"})
    create_vm(client, "web1", group="web")
    group = client.simulate_get("/v1/groups/web").json
    assert group["members"] == [{"name": "web1", "host": "local"}]
    resp = client.simulate_delete("/v1/groups/web")
    assert resp.status_code == 409 and "web1" in resp.json["reason"]


def test_anti_affinity_spreads_then_refuses(client, store):
    add_host(client, store, "h2")
    client.simulate_post("/v1/groups", json={"name": "db", "policy": "anti-affinity"})
    hosts = {create_vm(client, f"db{i}", group="db")["host"] for i in (1, 2)}
    assert hosts == {"local", "h2"}
    resp = client.simulate_post("/v1/vms", json={"name": "db3", "group": "db"}, params=NO_WAIT)
    assert resp.status_code == 409 and resp.json["field"] == "host"
    assert "ServerGroupAntiAffinityFilter" in resp.json["reason"]
    assert client.simulate_get("/v1/vms/db3").status_code == 404


# -- placement on create ----------------------------------------------------------------------
def test_node_selector_no_host_matches_is_409_naming_the_filter_and_host(client, store):
    resp = client.simulate_post("/v1/vms", json={"name": "gpu1", "node_selector": {"gpu": "yes"}}, params=NO_WAIT)
    assert resp.status_code == 409, resp.text
    assert resp.json["field"] == "host"
    assert "LabelsFilter" in resp.json["reason"] and "local" in resp.json["reason"]
    assert client.simulate_get("/v1/vms").json["items"] == []
    add_host(client, store, "h2", labels={"gpu": "yes"})
    vm = create_vm(client, "gpu1", node_selector={"gpu": "yes"})
    assert vm["host"] == "h2" and vm["spec"]["node_selector"] == {"gpu": "yes"}


def test_create_with_unknown_group_is_422(client):
    resp = client.simulate_post("/v1/vms", json={"name": "web1", "group": "nope"}, params=NO_WAIT)
    assert resp.status_code == 422 and resp.json["field"] == "group"


def test_create_on_a_requested_host(client, store):
    add_host(client, store, "h2")
    add_host(client, store, "h3", up=False)
    assert create_vm(client, "web1", host="h2")["host"] == "h2"
    resp = client.simulate_post("/v1/vms", json={"name": "web2", "host": "nope"}, params=NO_WAIT)
    assert resp.status_code == 404 and resp.json["field"] == "host"
    resp = client.simulate_post("/v1/vms", json={"name": "web2", "host": "h3"}, params=NO_WAIT)
    assert resp.status_code == 409 and "h3 by ComputeFilter" in resp.json["reason"]
    resp = client.simulate_post("/v1/vms", json={"name": "web2", "host": "Not A Host"}, params=NO_WAIT)
    assert resp.status_code == 422 and resp.json["field"] == "host"


# -- PUT /v1/vms/NAME/host: migrate or move ---------------------------------------------------
def test_put_host_moves_a_stopped_vm(client, store):
    create_vm(client, "web1")
    settle(store, "web1", "stopped")
    add_host(client, store, "h2")
    assert client.simulate_get("/v1/vms/web1/host").json == {"host": "local"}
    resp = client.simulate_put("/v1/vms/web1/host", json={"host": "h2"}, params=NO_WAIT)
    assert resp.status_code == 202, resp.text
    op = resp.json["operation"]
    assert resp.headers["location"] == f"/v1/operations/{op['id']}"
    assert op["kind"] == "move" and op["params"] == {"target": "h2", "source": "local", "force": False}
    # A second move while the first is pending is refused.
    resp = client.simulate_put("/v1/vms/web1/host", body="h2", headers={"Content-Type": "text/plain"})
    assert resp.status_code == 409


def test_put_host_waits_for_the_migration_then_answers_202(client, store):
    create_vm(client, "web1")
    settle(store, "web1", "running")
    add_host(client, store, "h2")
    started = time.monotonic()
    resp = client.simulate_put("/v1/vms/web1/host", body="h2\n", headers={"Content-Type": "text/plain"},
                               params={"timeout": "0.2"})
    assert time.monotonic() - started >= 0.2
    assert resp.status_code == 202 and resp.json["operation"]["kind"] == "migrate"


def test_put_host_force_reaches_the_operation(client, store):
    create_vm(client, "web1")
    settle(store, "web1", "running")
    add_host(client, store, "h2", labels={"zone": "b"})
    resp = client.simulate_put("/v1/vms/web1/host", json={"host": "h2", "force": True}, params=NO_WAIT)
    assert resp.status_code == 202 and resp.json["operation"]["params"]["force"] is True


def test_put_host_json_text_body_is_the_same_as_json(client, store):
    create_vm(client, "web1")
    settle(store, "web1", "stopped")
    add_host(client, store, "h2")
    resp = client.simulate_put("/v1/vms/web1/host", body='{"host": "h2", "force": true}',
                               headers={"Content-Type": "text/plain"}, params=NO_WAIT)
    assert resp.status_code == 202 and resp.json["operation"]["params"]["force"] is True


def test_put_host_where_it_already_is_is_200_without_operation(client, store):
    create_vm(client, "web1")
    settle(store, "web1", "stopped")
    resp = client.simulate_put("/v1/vms/web1/host", json={"host": "local"})
    assert resp.status_code == 200 and resp.json["host"] == "local" and resp.json["operation"] is None


def test_put_host_unknown_or_down_host(client, store):
    create_vm(client, "web1")
    settle(store, "web1", "running")
    resp = client.simulate_put("/v1/vms/web1/host", json={"host": "nope"}, params=NO_WAIT)
    assert resp.status_code == 404 and resp.json["field"] == "host"
    add_host(client, store, "h2", up=False)
    resp = client.simulate_put("/v1/vms/web1/host", json={"host": "h2"}, params=NO_WAIT)
    assert resp.status_code == 409 and "down" in resp.json["reason"]
    assert client.simulate_get("/v1/operations", params={"vm": "web1"}).json["items"][0]["kind"] == "create"


def test_put_host_refused_by_the_scheduler_unless_forced(client, store):
    create_vm(client, "web1", node_selector={})
    client.simulate_patch("/v1/vms/web1", json={"node_selector": {"zone": "a"}}, params=NO_WAIT)
    settle(store, "web1", "running")
    add_host(client, store, "h2", labels={"zone": "b"})
    resp = client.simulate_put("/v1/vms/web1/host", json={"host": "h2"}, params=NO_WAIT)
    assert resp.status_code == 409 and "LabelsFilter" in resp.json["reason"]
    resp = client.simulate_put("/v1/vms/web1/host", json={"host": "h2", "force": True}, params=NO_WAIT)
    assert resp.status_code == 202


@pytest.mark.parametrize("kwargs, field", [
    ({"json": {"host": "h2", "force": "yes"}}, "force"),
    ({"json": {"target": "h2"}}, "host"),
    ({"json": {"host": 7}}, "host"),
    ({"body": "{not json", "headers": {"Content-Type": "text/plain"}}, "host"),
])
def test_bad_migrate_body_is_422(client, store, kwargs, field):
    create_vm(client, "web1")
    settle(store, "web1", "running")
    add_host(client, store, "h2")
    resp = client.simulate_put("/v1/vms/web1/host", params=NO_WAIT, **kwargs)
    assert resp.status_code == 422, resp.text
    assert resp.json["field"] == field


def test_openapi_lists_the_cluster_routes(client):
    doc = client.simulate_get("/v1/openapi.json").json
    assert {"/v1/hosts", "/v1/hosts/{name}", "/v1/hosts/{name}/state", "/v1/hosts/{name}/{file}", "/v1/groups",
            "/v1/groups/{name}", "/v1/vms/{name}/host"} <= set(doc["paths"])
    spec = doc["components"]["schemas"]["Spec"]["properties"]
    assert {"node_selector", "group"} <= set(spec)

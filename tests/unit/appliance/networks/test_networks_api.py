"""/v1/networks (issue 15) and a VM spec naming one: the REST view of the service's
rules (appliance/service/networks.py). No controller runs: VM creates stay pending."""
from __future__ import annotations

import pytest
from falcon import testing

from appliance.api.app import create_app
from tests.unit.appliance.teams import add_project, add_user

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
NO_WAIT = {"wait": "false"}
LAB = {"name": "lab", "subnet": "10.20.0.0/24"}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


def post_net(client, **body):
    return client.simulate_post("/v1/networks", json=body)


def create_vm(client, name, network, **params):
    return client.simulate_post("/v1/vms", json={"name": name, "state": "stopped",
                                                 "network": network},
                                params={**NO_WAIT, **params})


def test_create_list_get_delete(client):
    resp = post_net(client, **LAB)
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/networks/lab"
    assert resp.json == {
        "name": "lab", "project": "default", "kind": "nat", "subnet": "10.20.0.0/24",
        "gateway": "10.20.0.1", "dhcp": {"start": "10.20.0.128", "end": "10.20.0.254"},
        "domain": "lab", "bridge": None, "libvirt_name": "vmapp.default.lab", "vms": [],
        "reservations": [],
        "created": resp.json["created"]}
    assert [n["name"] for n in client.simulate_get("/v1/networks").json["items"]] == ["lab"]
    assert client.simulate_get("/v1/networks/lab").json["kind"] == "nat"
    assert client.simulate_delete("/v1/networks/lab").status_code == 204
    assert client.simulate_get("/v1/networks/lab").status_code == 404
    assert client.simulate_delete("/v1/networks/lab").status_code == 404
    assert client.simulate_get("/v1/networks").json["items"] == []


@pytest.mark.parametrize(("body", "field"), [
    ({"name": "lab"}, "subnet"),
    ({"name": "lab", "subnet": "10.20.0.0/33"}, "subnet"),
    ({"name": "lab", "subnet": "10.20.0.0/24", "dhcp": {"start": "10.20.0.0", "end": "10.20.0.9"}},
     "dhcp.start"),
    ({"name": "a/b", "subnet": "10.20.0.0/24"}, "name"),
    ({"name": "lab", "kind": "bridge", "bridge": "br0 up"}, "bridge"),
])
def test_bad_body_is_422_with_the_field_and_changes_nothing(client, store, body, field):
    resp = post_net(client, **body)
    assert resp.status_code == 422, resp.text
    assert resp.json["field"] == field
    assert store.list_networks() == []


def test_name_taken_and_overlapping_subnets_are_409(client, store):
    assert post_net(client, **LAB).status_code == 201
    resp = post_net(client, name="lab", subnet="10.30.0.0/24")
    assert resp.status_code == 409 and resp.json["field"] == "name"
    resp = post_net(client, name="lab2", subnet="10.20.0.128/25")
    assert resp.status_code == 409 and resp.json["field"] == "subnet"
    assert "10.20.0.0/24" in resp.json["reason"]
    resp = post_net(client, name="lab3", subnet="10.20.0.0/16")  # contains lab's
    assert resp.status_code == 409 and resp.json["field"] == "subnet"
    assert post_net(client, name="lab4", subnet="10.21.0.0/24").status_code == 201
    assert [n["name"] for n in store.list_networks()] == ["lab", "lab4"]


def test_bridge_networks_are_admins_only(client, service):
    operator = testing.TestClient(client.app, headers=add_user(service.store, "op", "operator"))
    resp = operator.simulate_post("/v1/networks", json={"name": "lan", "kind": "bridge",
                                                        "bridge": "br0"})
    assert resp.status_code == 403, resp.text
    assert service.store.list_networks() == []
    resp = operator.simulate_post("/v1/networks", json=LAB)  # nat: the operator's
    assert resp.status_code == 201, resp.text
    resp = post_net(client, name="lan", kind="bridge", bridge="br0")
    assert resp.status_code == 201 and resp.json["bridge"] == "br0"
    assert resp.json["subnet"] is None and resp.json["gateway"] is None
    viewer = testing.TestClient(client.app, headers=add_user(service.store, "v", "viewer"))
    assert viewer.simulate_get("/v1/networks").status_code == 200
    assert viewer.simulate_post("/v1/networks", json={**LAB, "name": "x",
                                                     "subnet": "10.9.0.0/24"}).status_code == 403
    assert viewer.simulate_delete("/v1/networks/lab").status_code == 403


def test_networks_are_the_projects_own(client, service):
    add_project(service.store, "web")
    assert post_net(client, **LAB).status_code == 201
    other = client.simulate_get("/v1/networks", params={"project": "web"})
    assert other.json["items"] == []
    assert client.simulate_get("/v1/networks/lab", params={"project": "web"}).status_code == 404
    # Same name in another project: another network; its subnet still may not overlap.
    resp = client.simulate_post("/v1/networks", json={"name": "lab", "subnet": "10.20.0.0/25"},
                                params={"project": "web"})
    assert resp.status_code == 409 and resp.json["field"] == "subnet"
    assert "another project's network" in resp.json["reason"]
    resp = client.simulate_post("/v1/networks", json={"name": "lab", "subnet": "10.21.0.0/24"},
                                params={"project": "web"})
    assert resp.status_code == 201 and resp.json["libvirt_name"] == "vmapp.web.lab"
    # A project holding a network is not empty.
    resp = client.simulate_delete("/v1/projects/web")
    assert resp.status_code == 409 and "networks: lab" in resp.json["reason"]


# -- a VM spec naming a network ---------------------------------------------------------
@pytest.mark.parametrize(("ip", "says"), [
    ("10.20.1.5", "outside"), ("10.20.0.0", "own address"), ("10.20.0.255", "broadcast"),
    ("10.20.0.1", "gateway"),
])
def test_fixed_ip_must_be_a_guest_address_of_the_subnet(client, store, ip, says):
    post_net(client, **LAB)
    resp = create_vm(client, "web1", {"type": "network", "name": "lab", "ip": ip})
    assert resp.status_code == 422, resp.text
    assert resp.json["field"] == "network.ip" and says in resp.json["reason"]
    assert store.list_vms() == []


def test_fixed_ip_in_or_out_of_the_dhcp_range_and_taken_once(client, store):
    post_net(client, **LAB)
    assert create_vm(client, "web1", {"type": "network", "name": "lab",
                                      "ip": "10.20.0.5"}).status_code == 202
    assert create_vm(client, "web2", {"type": "network", "name": "lab",
                                      "ip": "10.20.0.200"}).status_code == 202  # in the range
    resp = create_vm(client, "web3", {"type": "network", "name": "lab", "ip": "10.20.0.5"})
    assert resp.status_code == 409, resp.text
    assert resp.json["field"] == "network.ip" and "web1" in resp.json["reason"]
    # A change of a VM's address is checked the same way; its own address is its own.
    resp = client.simulate_patch("/v1/vms/web2", params=NO_WAIT, json={"network": {
        "type": "network", "name": "lab", "ip": "10.20.0.5"}})
    assert resp.status_code == 409 and resp.json["field"] == "network.ip"
    resp = client.simulate_patch("/v1/vms/web2", params=NO_WAIT, json={"network": {
        "type": "network", "name": "lab", "ip": "10.20.0.1"}})
    assert resp.status_code == 422 and resp.json["field"] == "network.ip"
    assert store.get_vm("web2")["spec"]["network"]["ip"] == "10.20.0.200"
    resp = client.simulate_patch("/v1/vms/web1", params=NO_WAIT, json={"network": {
        "type": "network", "name": "lab", "ip": "10.20.0.5"}, "cpus": 2})
    assert resp.status_code in (200, 202), resp.text
    assert client.simulate_get("/v1/networks/lab").json["reservations"] == [
        {"vm": "web1", "ip": "10.20.0.5"}, {"vm": "web2", "ip": "10.20.0.200"}]


def test_same_address_on_same_named_networks_of_two_projects(client, service):
    add_project(service.store, "web")
    post_net(client, **LAB)
    client.simulate_post("/v1/networks", json={"name": "lab", "subnet": "10.21.0.0/24"},
                         params={"project": "web"})
    assert create_vm(client, "a", {"type": "network", "name": "lab",
                                   "ip": "10.20.0.5"}).status_code == 202
    # web's lab is 10.21.0.0/24: the default project's address is outside it.
    resp = create_vm(client, "a", {"type": "network", "name": "lab", "ip": "10.20.0.5"},
                     project="web")
    assert resp.status_code == 422 and "outside" in resp.json["reason"]
    assert create_vm(client, "a", {"type": "network", "name": "lab", "ip": "10.21.0.5"},
                     project="web").status_code == 202


def test_bridge_network_takes_no_fixed_ip(client):
    post_net(client, name="lan", kind="bridge", bridge="br0")
    resp = create_vm(client, "web1", {"type": "network", "name": "lan", "ip": "192.168.1.5"})
    assert resp.status_code == 422 and resp.json["field"] == "network.ip"
    assert create_vm(client, "web1", {"type": "network", "name": "lan"}).status_code == 202


def test_unmanaged_libvirt_network_keeps_working(client, store):
    """A name that is no network of the project's is the host's libvirt network, as before."""
    assert create_vm(client, "web1", {"type": "network", "name": "default",
                                      "ip": "192.168.122.50"}).status_code == 202
    resp = create_vm(client, "web2", {"type": "network", "name": "default",
                                      "ip": "192.168.122.50"})
    assert resp.status_code == 409 and resp.json["field"] == "network.ip"


def test_network_in_use_is_not_deleted_and_names_its_vms(client, store):
    post_net(client, **LAB)
    for name in ("web1", "web2"):
        assert create_vm(client, name, {"type": "network", "name": "lab"}).status_code == 202
    assert client.simulate_get("/v1/networks/lab").json["vms"] == ["web1", "web2"]
    resp = client.simulate_delete("/v1/networks/lab")
    assert resp.status_code == 409, resp.text
    assert resp.json["field"] == "name" and "web1, web2" in resp.json["reason"]
    assert store.find_network("default", "lab") is not None


def test_a_project_holds_a_bounded_number_of_networks(client, store):
    from appliance.model.networks import MAX_PROJECT_NETWORKS

    for i in range(MAX_PROJECT_NETWORKS):
        assert post_net(client, name=f"n{i}", subnet=f"10.40.{i}.0/24").status_code == 201
    resp = post_net(client, name="one-more", subnet="10.41.0.0/24")
    assert resp.status_code == 409 and str(MAX_PROJECT_NETWORKS) in resp.json["reason"]
    assert len(store.list_networks()) == MAX_PROJECT_NETWORKS

"""A VM on a libvirt network that is not active, over HTTP with the controller on
libvirt's test driver (issue 15): the create answers 409 naming network.name and
`virsh net-start`, where the operation's failure in libvirt used to answer 500;
the same VM starts once the network runs. An appliance network is defined and
started on the test driver's host by the controller itself."""
from __future__ import annotations

import libvirt
import pytest
from falcon import testing

from appliance.api.app import create_app

TOKEN = "sekrit"


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN),
                              headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.fixture
def default_down():
    """test:///default's own `default` network, stopped for the test, started again after."""
    conn = libvirt.open("test:///default")
    net = conn.networkLookupByName("default")
    net.destroy()
    yield net
    if not net.isActive():
        net.create()
    conn.close()


def test_create_on_an_inactive_network_is_409_not_500(client, controller, default_down):
    resp = client.simulate_post("/v1/vms", json={"name": "web1", "network": "network:default"})
    assert resp.status_code == 409, resp.text
    assert resp.json["field"] == "network.name"
    assert "virsh net-start default" in resp.json["reason"]
    assert client.simulate_get("/v1/vms/web1").json["state"] != "running"
    default_down.create()
    resp = client.simulate_put("/v1/vms/web1/state", json={"state": "running"})
    assert resp.status_code == 200, resp.text
    assert client.simulate_get("/v1/vms/web1").json["state"] == "running"


def test_appliance_network_started_by_the_controller(client, controller, conn):
    made = client.simulate_post("/v1/networks", json={"name": "lab", "subnet": "10.77.0.0/24"})
    assert made.status_code == 201, made.text
    resp = client.simulate_post("/v1/vms", json={
        "name": "web1", "network": {"type": "network", "name": "lab", "ip": "10.77.0.5"}})
    assert resp.status_code == 201, resp.text
    net = conn.networkLookupByName("vmapp.default.lab")
    assert net.isActive() and net.autostart()
    xml = net.XMLDesc()
    assert "10.77.0.1" in xml and "10.77.0.5" in xml  # the gateway, the VM's reservation
    client.simulate_delete("/v1/vms/web1", params={"force": "true"})

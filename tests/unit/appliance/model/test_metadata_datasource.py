"""`"cloud_init": {"datasource": "metadata"}` (issue 15): the metadata service is
the VM's only data, so a VM with no NIC that reaches 169.254.169.254 is refused up
front with the field named (model/spec.py), through REST too. Its domain XML:
tests/unit/appliance/virt/test_domain.py; the real cloud-init reading it:
tests/integration/test_cloudinit_guest.py."""
from __future__ import annotations

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.errors import Invalid
from appliance.model.spec import validate

TOKEN = "sekrit"
BY_METADATA = {"datasource": "metadata", "user_data": "#cloud-config\n"}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN),
                              headers={"Authorization": f"Bearer {TOKEN}"})


@pytest.mark.parametrize("network, networks", [
    ({"type": "user", "outbound": "none"}, []),  # restrict=on: nothing leaves slirp
    ("none", []),
])
def test_a_vm_that_cannot_reach_the_service_is_refused(network, networks):
    with pytest.raises(Invalid) as err:
        validate({"name": "web1", "image": "demo", "network": network, "networks": networks,
                   "cloud_init": BY_METADATA})
    assert err.value.field == "cloud_init.datasource"
    assert "no NIC that reaches it" in err.value.reason


@pytest.mark.parametrize("network, networks", [
    ("user", []),
    ({"type": "network", "name": "lab"}, []),
    ({"type": "user", "outbound": "none"}, [{"network": "lab"}]),  # a further NIC reaches it
])
def test_a_vm_with_a_nic_that_reaches_it_is_taken(network, networks):
    spec = validate({"name": "web1", "image": "demo", "network": network, "networks": networks,
                     "cloud_init": BY_METADATA})
    assert spec["cloud_init"]["datasource"] == "metadata"
    # the other datasources are not bound to a NIC
    validate({"name": "web1", "image": "demo", "network": "none",
              "cloud_init": {"datasource": "configdrive"}})


def test_its_documents_are_objects_as_a_config_drive_s():
    with pytest.raises(Invalid) as err:
        validate({"name": "web1", "image": "demo",
                  "cloud_init": {"datasource": "metadata", "meta_data": "a: b\n"}})
    assert err.value.field == "cloud_init.meta_data"


def test_the_rest_api_refuses_it_with_422_naming_the_field(client):
    resp = client.simulate_post("/v1/vms", params={"wait": "false"}, json={
        "name": "web1", "state": "stopped", "network": {"type": "user", "outbound": "none"},
        "cloud_init": BY_METADATA})
    assert resp.status_code == 422 and resp.json["field"] == "cloud_init.datasource", resp.text

"""The network body (appliance/model/networks.py) and its records (store/networks.py):
what a create accepts, its defaults, each refusal with its field."""
from __future__ import annotations

import json

import pytest

from appliance import spec as specs
from appliance.errors import Invalid
from appliance.model.networks import NetworkCreate, address_refusal, default_dhcp, libvirt_name
from appliance.store import MIGRATIONS, Store


def parse(**body):
    return NetworkCreate.parse(body)


def test_nat_defaults_dhcp_upper_half_and_domain_the_name():
    net = parse(name="lab", subnet="10.20.0.0/24")
    assert net == {"name": "lab", "kind": "nat", "subnet": "10.20.0.0/24",
                   "dhcp": {"start": "10.20.0.128", "end": "10.20.0.254"}, "domain": "lab",
                   "bridge": None}
    assert default_dhcp("192.168.8.0/29") == {"start": "192.168.8.4", "end": "192.168.8.6"}
    assert default_dhcp("10.1.0.0/16") == {"start": "10.1.128.0", "end": "10.1.255.254"}


def test_given_fields_kept():
    net = parse(name="lab", kind="isolated", subnet="172.16.4.0/22",
                dhcp={"start": "172.16.4.10", "end": "172.16.4.20"}, domain="lab.internal")
    assert net["kind"] == "isolated" and net["domain"] == "lab.internal"
    assert net["dhcp"] == {"start": "172.16.4.10", "end": "172.16.4.20"}


def test_bridge_takes_only_the_bridge():
    assert parse(name="lan", kind="bridge", bridge="br0") == {
        "name": "lan", "kind": "bridge", "subnet": None, "dhcp": None, "domain": None,
        "bridge": "br0"}


@pytest.mark.parametrize(("body", "field", "says"), [
    ({"name": "lab"}, "subnet", "required"),
    ({"name": "Lab", "subnet": "10.0.0.0/24"}, "name", "DNS label"),
    ({"name": "x" * 64, "subnet": "10.0.0.0/24"}, "name", "DNS label"),
    ({"subnet": "10.0.0.0/24"}, "name", "required"),
    ({"name": "lab", "kind": "user", "subnet": "10.0.0.0/24"}, "kind", "nat, isolated, bridge"),
    ({"name": "lab", "subnet": "10.20.0.1/24"}, "subnet", "10.20.0.0/24"),
    ({"name": "lab", "subnet": "10.20.0.0"}, "subnet", "ADDRESS/PREFIX"),
    ({"name": "lab", "subnet": "10.20.0.0/24 "}, "subnet", "ADDRESS/PREFIX"),
    ({"name": "lab", "subnet": "10.300.0.0/24"}, "subnet", "ADDRESS/PREFIX"),
    ({"name": "lab", "subnet": 24}, "subnet", "ADDRESS/PREFIX"),
    ({"name": "lab", "subnet": "10.0.0.0/8"}, "subnet", "/16 to /29"),
    ({"name": "lab", "subnet": "10.0.0.0/30"}, "subnet", "/16 to /29"),
    ({"name": "lab", "subnet": "8.8.8.0/24"}, "subnet", "private"),
    ({"name": "lab", "subnet": "169.254.0.0/16"}, "subnet", "private"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "dhcp": {"start": "10.0.0.1", "end": "10.0.0.9"}},
     "dhcp.start", "gateway"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "dhcp": {"start": "10.0.0.9", "end": "10.0.0.255"}},
     "dhcp.end", "broadcast"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "dhcp": {"start": "10.0.1.9", "end": "10.0.0.20"}},
     "dhcp.start", "outside"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "dhcp": {"start": "10.0.0.20", "end": "10.0.0.9"}},
     "dhcp.end", "after its end"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "dhcp": {"start": "10.0.0.9"}}, "dhcp.end",
     "required"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "dhcp": {"start": "x", "end": "10.0.0.9"}},
     "dhcp.start", "IPv4"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "dhcp": "10.0.0.9-10.0.0.20"}, "dhcp", "object"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "domain": "Lab..x"}, "domain", "DNS name"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "domain": ("a" * 60 + ".") * 5 + "a"}, "domain",
     "253"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "bridge": "br0"}, "bridge", "only a bridge"),
    ({"name": "lab", "kind": "bridge"}, "bridge", "required"),
    ({"name": "lab", "kind": "bridge", "bridge": "br0; reboot"}, "bridge", "interface name"),
    ({"name": "lab", "kind": "bridge", "bridge": "../../etc"}, "bridge", "interface name"),
    ({"name": "lab", "kind": "bridge", "bridge": "b" * 16}, "bridge", "interface name"),
    ({"name": "lab", "kind": "bridge", "bridge": "br0", "subnet": "10.0.0.0/24"}, "subnet",
     "host's network"),
    ({"name": "lab", "subnet": "10.0.0.0/24", "mtu": 9000}, "mtu", "unknown field"),
])
def test_refusals_name_the_field(body, field, says):
    with pytest.raises(Invalid) as refused:
        NetworkCreate.parse(body)
    assert refused.value.field == field
    assert says in refused.value.reason


def test_not_an_object_is_refused():
    for body in ([], "lab", None):
        with pytest.raises(Invalid, match="JSON object"):
            NetworkCreate.parse(body)


def test_guest_addresses():
    assert address_refusal("10.0.0.0/24", "10.0.0.5") is None
    assert address_refusal("10.0.0.0/24", "10.0.0.200") is None  # in the DHCP range: fine
    for ip, why in (("10.0.0.0", "own address"), ("10.0.0.255", "broadcast"),
                    ("10.0.0.1", "gateway"), ("10.0.1.5", "outside")):
        assert why in address_refusal("10.0.0.0/24", ip)


def test_vm_spec_may_not_name_an_appliance_network_by_its_libvirt_name():
    name = libvirt_name("db", "lab")
    assert name == "vmapp.db.lab"
    with pytest.raises(Invalid) as refused:
        specs.validate({"name": "web1", "image": "demo",
                        "network": {"type": "network", "name": name}})
    assert refused.value.field == "network.name"
    assert specs.validate({"name": "web1", "image": "demo", "network": "network:default"})


def test_store_round_trip_and_users(tmp_path):
    store = Store(tmp_path / "a.db")
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    net = parse(name="lab", subnet="10.20.0.0/24")
    store.insert_network({"id": "n1", "project": "default", **net, "created": 1.0})
    store.insert_network({"id": "n2", "project": "default",
                          **parse(name="lan", kind="bridge", bridge="br0"), "created": 2.0})
    got = store.get_network("default", "lab")
    assert {k: got[k] for k in net} == net
    assert store.get_network("default", "lan")["dhcp"] is None
    assert store.find_network("other", "lab") is None
    assert [n["name"] for n in store.list_networks("default")] == ["lab", "lan"]
    assert store.count_networks() == 2
    spec = {"name": "web1", "network": {"type": "network", "name": "lab", "ip": "10.20.0.5"}}
    store.insert_vm({"id": "v1", "name": "web1", "project": "default", "spec": spec,
                     "desired_state": "stopped", "observed_state": "stopped", "generation": 1,
                     "created": 0.0, "updated": 0.0})
    assert store.network_users("default", "lab") == ["web1"]
    assert store.network_users("other", "lab") == []
    assert store.fixed_ip_holder("default", "lab", "10.20.0.5") == {"id": "v1", "name": "web1"}
    assert store.fixed_ip_holder("default", "lab", "10.20.0.5", excluding="v1") is None
    assert store.fixed_ip_holder("other", "lab", "10.20.0.5") is None
    assert "lab" in store.project_members("default")["networks"]
    store.delete_network("default", "lab")
    assert store.find_network("default", "lab") is None
    assert json.loads(store.db.execute("SELECT spec FROM vms").fetchone()[0]) == spec

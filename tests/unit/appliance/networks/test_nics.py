"""Several NICs per VM (issue 15): spec `networks` (appliance/model/nics.py), its
shorthand, MACs of their own that stay, fixed IPs checked per NIC against the
network and every VM's NICs, and the NICs on a running VM plugged in and out
(tests/unit/appliance/controller/test_controller_nics.py)."""
from __future__ import annotations

import pytest
from appliance.errors import Conflict, Invalid
from appliance.model.spec import validate

LAB = {"name": "lab", "subnet": "10.20.0.0/24"}
DB = {"name": "db", "subnet": "10.30.0.0/24"}


def spec(**fields):
    return validate({"name": "web1", "image": "demo", **fields})


# -- the spec ----------------------------------------------------------------------------------
def test_networks_alone_is_the_whole_list_and_its_first_is_network():
    short = spec(networks=[{"network": "lab", "ip": "10.20.0.5"}, {"network": "db"}])
    long = spec(network={"type": "network", "name": "lab", "ip": "10.20.0.5"},
                networks=[{"network": "db"}])
    assert short == long
    assert short["network"] == {"type": "network", "name": "lab", "ip": "10.20.0.5"}
    assert short["networks"] == [{"network": "db"}]
    assert spec()["networks"] == []


@pytest.mark.parametrize(("fields", "field", "says"), [
    ({"networks": "lab"}, "networks", "must be a list"),
    ({"networks": [{"name": "lab"}]}, "networks[0]", "unknown field"),
    ({"network": "user", "networks": [{"network": "a"}, {"network": "a"}]},
     "networks[1].network", "already"),
    ({"network": "network:lab", "networks": [{"network": "lab"}]}, "networks[0].network",
     "first NIC"),
    ({"network": "user", "networks": [{"network": "a", "ip": "10.0.0.300"}]}, "networks[0].ip",
     "IPv4"),
    ({"network": "user", "networks": [{"network": "a", "mac": "52:54:00:00:00:01"},
                                      {"network": "b", "mac": "52:54:00:00:00:01"}]},
     "networks[1].mac", "another NIC"),
    ({"network": "user", "networks": [{"network": f"n{i}"} for i in range(9)]}, "networks",
     "at most 8"),
    ({"network": "user", "networks": [{"network": "vmapp.other.lab"}]}, "networks[0].network",
     "appliance's own"),
    # networks alone: a refusal names the NIC as the body has it (the second is [1])
    ({"networks": [{"network": "a"}, {"network": "b", "ip": "x"}]}, "networks[1].ip", "IPv4"),
    ({"networks": [{"network": "a"}, {"network": "a"}]}, "networks[1].network", "already"),
])
def test_bad_nics_are_refused_naming_the_field(fields, field, says):
    with pytest.raises(Invalid) as refused:
        spec(**fields)
    assert refused.value.field == field and says in refused.value.reason, refused.value


# -- the service: MACs and fixed IPs -----------------------------------------------------------
def test_each_nic_gets_a_mac_of_its_own_that_it_keeps(service):
    service.create_network(LAB)
    service.create_network(DB)
    vm, _ = service.create_vm({"name": "web1", "state": "stopped",
                               "networks": [{"network": "lab"}, {"network": "db"}]})
    row = service.store.get_vm("web1")
    mac = row["spec"]["networks"][0]["mac"]
    assert mac.startswith("52:54:00:") and mac != row["mac"]
    # A change that leaves the NIC on db keeps its MAC; a NIC on another network gets another.
    service.update_vm("web1", {"networks": [{"network": "db", "ip": "10.30.0.9"}], "cpus": 2})
    assert service.store.get_vm("web1")["spec"]["networks"] == [
        {"network": "db", "ip": "10.30.0.9", "mac": mac}]
    # The same spec again is no change.
    _view, op = service.update_vm("web1", {"networks": [{"network": "db", "ip": "10.30.0.9"}]})
    assert op is None
    # Another VM cannot take that MAC, for its first NIC or a further one.
    for body in ({"network": {"type": "user", "mac": mac}},
                 {"networks": [{"network": "lab"}, {"network": "db", "mac": mac}]}):
        with pytest.raises(Conflict) as refused:
            service.create_vm({"name": "web2", "state": "stopped", **body})
        assert mac in refused.value.reason and refused.value.field.endswith("mac")


def test_fixed_ips_of_further_nics_are_checked_against_the_network_and_all_nics(service):
    service.create_network(LAB)
    service.create_network(DB)
    service.create_vm({"name": "web1", "state": "stopped",
                       "networks": [{"network": "lab", "ip": "10.20.0.5"},
                                    {"network": "db", "ip": "10.30.0.5"}]})
    for ip, says in (("10.20.0.5", "outside"), ("10.30.0.1", "gateway"),
                     ("10.30.0.255", "broadcast")):
        with pytest.raises(Invalid) as refused:
            service.create_vm({"name": "web2", "state": "stopped", "network": "user",
                               "networks": [{"network": "db", "ip": ip}]})
        assert refused.value.field == "networks[0].ip" and says in refused.value.reason
    # web1's further NIC's address, taken by a first NIC or a further one: 409.
    with pytest.raises(Conflict) as taken:
        service.create_vm({"name": "web2", "state": "stopped",
                           "network": {"type": "network", "name": "db", "ip": "10.30.0.5"}})
    assert taken.value.field == "network.ip" and "web1" in taken.value.reason
    with pytest.raises(Conflict) as taken:
        service.create_vm({"name": "web2", "state": "stopped",
                           "networks": [{"network": "db"}, {"network": "lab", "ip": "10.20.0.5"}]})
    assert taken.value.field == "networks[0].ip" and "web1" in taken.value.reason
    net = service.get_network("db")
    assert net["vms"] == ["web1"]
    assert net["reservations"] == [{"vm": "web1", "ip": "10.30.0.5"}]
    with pytest.raises(Conflict):  # in use by a further NIC
        service.delete_network("db")


def test_vmctl_get_shows_every_nic():
    from appliance.cli.show import _network

    shown = _network(spec(networks=[{"network": "lab", "ip": "10.20.0.5"},
                                    {"network": "db", "ip": "10.30.0.5"}, {"network": "c"}]))
    assert shown == "network:lab, fixed IP 10.20.0.5; network:db, fixed IP 10.30.0.5; network:c"
    assert _network(spec()) == "user"

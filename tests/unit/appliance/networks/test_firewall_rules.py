"""Guest firewall rules (issue 15): checked up front with the field named
(model/firewall.py), through REST for a VM and a server group; the VM's network
filter XML built from them (virt/nwfilter_xml.py). libvirt's own reading of it:
tests/integration/test_netns_firewall.py."""
from __future__ import annotations

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.errors import Invalid
from appliance.model.firewall import MAX_RULES, validate_rules
from appliance.model.spec import validate
from appliance.virt.nwfilter_xml import filter_of, filter_xml, nic_parameters

TOKEN = "sekrit"
VM_ID = "5de4d215-3988-45d2-9d1a-b5da9d1efa17"
ON_LAB = {"type": "network", "name": "lab"}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN),
                              headers={"Authorization": f"Bearer {TOKEN}"})


def test_rules_are_stored_in_one_form():
    assert validate_rules([
        {"direction": "in", "proto": "tcp", "port": 22, "from": "10.0.0.0/8"},
        {"direction": "in", "proto": "tcp", "port": "22", "from": "10.0.0.0/8"},  # the same
        {"direction": "in", "proto": "udp", "port": "8000-8100"},
        {"direction": "out", "to": "192.168.1.7"},
        {"direction": "out", "proto": "icmp", "port": None},
    ]) == [
        {"direction": "in", "proto": "tcp", "port": 22, "from": "10.0.0.0/8"},
        {"direction": "in", "proto": "udp", "port": "8000-8100"},
        {"direction": "out", "proto": "any", "to": "192.168.1.7/32"},
        {"direction": "out", "proto": "icmp"},
    ]


@pytest.mark.parametrize(("rules", "field", "reason"), [
    ({"direction": "in"}, "firewall", "must be a list"),
    ([{"direction": "in"}] * (MAX_RULES + 1), "firewall", f"at most {MAX_RULES}"),
    (["tcp:22"], "firewall[0]", "must be an object"),
    ([{"direction": "inbound"}], "firewall[0].direction", "in or out"),
    ([{"proto": "tcp"}], "firewall[0].direction", "in or out"),
    ([{"direction": "in", "proto": "sctp"}], "firewall[0].proto", "tcp, udp, icmp, any"),
    ([{"direction": "in", "proto": "tcp", "port": 0}], "firewall[0].port", "1-65535"),
    ([{"direction": "in", "proto": "tcp", "port": 70000}], "firewall[0].port", "1-65535"),
    ([{"direction": "in", "proto": "tcp", "port": True}], "firewall[0].port", "1-65535"),
    ([{"direction": "in", "proto": "tcp", "port": "22;rm"}], "firewall[0].port", "1-65535"),
    ([{"direction": "in", "proto": "tcp", "port": "90-80"}], "firewall[0].port", "low port"),
    ([{"direction": "in", "port": 22}], "firewall[0].port", "proto tcp or udp"),
    ([{"direction": "in", "proto": "icmp", "port": 8}], "firewall[0].port", "tcp or udp"),
    ([{"direction": "in", "from": "10.0.0.1/8"}], "firewall[0].from", "10.0.0.0/8"),
    ([{"direction": "in", "from": "10.0.0.0/33"}], "firewall[0].from", "IPv4"),
    ([{"direction": "in", "from": "fe80::/64"}], "firewall[0].from", "IPv4"),
    ([{"direction": "in", "from": "10.0.0.0/8'/><rule"}], "firewall[0].from", "IPv4"),
    ([{"direction": "in", "to": "10.0.0.0/8"}], "firewall[0].to", "with 'from'"),
    ([{"direction": "out", "from": "10.0.0.0/8"}], "firewall[0].from", "with 'to'"),
    ([{"direction": "in", "ports": 22}], "firewall[0].ports", "unknown field"),
    ([{"direction": "in"}, {"direction": "up"}], "firewall[1].direction", "in or out"),
])
def test_a_bad_rule_is_refused_naming_its_field(rules, field, reason):
    with pytest.raises(Invalid) as err:
        validate({"name": "web1", "image": "demo", "network": ON_LAB, "firewall": rules})
    assert (err.value.field, reason in err.value.reason) == (field, True), err.value.reason


def test_rules_need_a_nic_on_a_libvirt_network():
    with pytest.raises(Invalid) as err:
        validate({"name": "web1", "image": "demo", "network": "user",
                  "firewall": [{"direction": "in", "proto": "tcp", "port": 22}]})
    assert err.value.field == "firewall" and "user mode" in err.value.reason
    # a further NIC on a libvirt network is enough; no rules is fine anywhere
    assert validate({"name": "web1", "image": "demo", "network": "user",
                     "networks": [{"network": "lab"}], "firewall": [{"direction": "in"}]})
    assert validate({"name": "web1", "image": "demo", "network": "user"})["firewall"] == []


def test_the_rest_api_refuses_bad_rules_with_422_and_takes_a_group_s(client, service):
    resp = client.simulate_post("/v1/vms", params={"wait": "false"}, json={
        "name": "web1", "state": "stopped", "network": "user",
        "firewall": [{"direction": "in", "proto": "tcp", "port": 22}]})
    assert resp.status_code == 422 and resp.json["field"] == "firewall", resp.text
    resp = client.simulate_post("/v1/groups", json={
        "name": "webs", "policy": "anti-affinity",
        "firewall": [{"direction": "in", "proto": "tcp", "port": "80-8080x"}]})
    assert resp.status_code == 422 and resp.json["field"] == "firewall[0].port", resp.text
    rule = {"direction": "in", "proto": "tcp", "port": 80}
    resp = client.simulate_post("/v1/groups", json={"name": "webs", "policy": "anti-affinity",
                                                     "firewall": [rule]})
    assert resp.status_code == 201 and resp.json["firewall"] == [rule], resp.text
    resp = client.simulate_patch("/v1/groups/webs", json={"policy": "affinity"})
    assert resp.status_code == 422 and resp.json["field"] == "policy", resp.text
    resp = client.simulate_patch("/v1/groups/webs", json={"firewall": []})
    assert resp.status_code == 200 and resp.json["firewall"] == [], resp.text
    assert client.simulate_get("/v1/groups/webs").json["firewall"] == []


def test_the_filter_has_clean_traffic_and_security_group_semantics():
    rules = validate_rules([
        {"direction": "in", "proto": "tcp", "port": "8000-8100", "from": "10.1.0.0/16"},
        {"direction": "in", "proto": "icmp"}])
    xml = filter_of(filter_xml(VM_ID, rules))
    assert (xml["name"], xml["refs"]) == (f"vmappliance-{VM_ID}", ["clean-traffic"])
    got = [(r["action"], r["direction"], r["proto"]) for r in xml["rules"]]
    assert got == [("drop", "out", "udp"),  # no DHCP server among the guests
                   ("accept", "in", "all"),  # replies: ESTABLISHED,RELATED
                   ("accept", "in", "udp"),  # DHCP from the network's server
                   ("accept", "in", "tcp"), ("accept", "in", "icmp"),
                   ("drop", "in", "all")]  # the rest; out: open (no out rules)
    assert xml["rules"][1]["state"] == "ESTABLISHED,RELATED"
    assert {k: xml["rules"][3][k] for k in ("srcipaddr", "srcipmask", "dstportstart",
                                            "dstportend")} == {
        "srcipaddr": "10.1.0.0", "srcipmask": "16", "dstportstart": "8000", "dstportend": "8100"}
    assert sorted(r["priority"] for r in xml["rules"]) == [r["priority"] for r in xml["rules"]]
    # no rules: anti-spoofing, and no guest answers DHCP (as Neutron's port security)
    assert [(r["action"], r["direction"], r["proto"], r["srcportstart"], r["dstportstart"])
            for r in filter_of(filter_xml(VM_ID, []))["rules"]] == [
        ("drop", "out", "udp", "67", "68")]
    out = filter_of(filter_xml(VM_ID, validate_rules([{"direction": "out", "proto": "udp",
                                                       "port": 53, "to": "10.0.0.2"}])))
    assert [(r["direction"], r["proto"], r.get("dstipaddr")) for r in out["rules"]] == [
        ("out", "udp", None), ("out", "all", None), ("out", "udp", None), ("out", "tcp", "169.254.169.254"),
        ("out", "udp", "10.0.0.2"), ("out", "all", None)]


def test_nic_parameters_are_the_nic_s_own():
    assert nic_parameters("52:54:00:aa:bb:cc", "10.20.0.5", "10.20.0.1") == {
        "MAC": "52:54:00:aa:bb:cc", "IP": "10.20.0.5"}
    assert nic_parameters("52:54:00:aa:bb:cc", None, "10.20.0.1") == {
        "MAC": "52:54:00:aa:bb:cc", "CTRL_IP_LEARNING": "dhcp", "DHCP_SERVER": "10.20.0.1"}
    assert nic_parameters("52:54:00:aa:bb:cc", None, None) == {
        "MAC": "52:54:00:aa:bb:cc", "CTRL_IP_LEARNING": "dhcp"}


"""A VM's network filter on its hosts (issue 15: controller/firewall.py) on the fake
driver: defined before the domain with the VM's rules, referenced by each NIC on a
libvirt network with its MAC and fixed IP, redefined by an update (no restart),
defined on a live migration's target and gone from the source, undefined with the
VM; and a config drive's network_data.json describing every NIC."""
from __future__ import annotations

import json
import xml.etree.ElementTree as ET

from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle
from tests.unit.appliance.controller.test_controller_keys import read

from appliance.virt.nwfilter_xml import filter_of

HOSTS = {"local": URI_A, "b": URI_B}
LAB = {"name": "lab", "subnet": "10.20.0.0/24"}
BACK = {"name": "back", "kind": "isolated", "subnet": "10.30.0.0/24"}
SSH = {"direction": "in", "proto": "tcp", "port": 22, "from": "10.0.0.0/8"}


def filterrefs(cloud, uri, vm_id):
    """MAC -> (filter, {parameter: value}) of each NIC in the domain's definition."""
    root = ET.fromstring(cloud.host(uri).domains[vm_id].xml)
    out = {}
    for iface in root.iterfind("devices/interface"):
        ref = iface.find("filterref")
        out[iface.find("mac").get("address")] = None if ref is None else (
            ref.get("filter"), {p.get("name"): p.get("value") for p in ref.iter("parameter")})
    return out


def accepted(xml: str) -> list[dict]:
    return [r for r in filter_of(xml)["rules"] if r["priority"] >= 200 and r["action"] == "accept"]


def test_every_libvirt_nic_references_the_vm_s_filter_which_follows_its_rules(
        service, controller, cloud, clock):
    service.create_network(LAB)
    service.create_network(BACK)
    vm, _ = service.create_vm({"host": "local", "name": "web1", "firewall": [SSH], "networks": [
        {"network": "lab", "ip": "10.20.0.5"}, {"network": "back"}]})
    settle(controller, clock)
    host, row = cloud.host(URI_A), service.store.get_vm("web1")
    name = f"vmappliance-{vm['id']}"
    # defined before the domain that references it
    assert host.calls.index(f"nwfilter-define {name}") < host.calls.index(
        next(c for c in host.calls if c.startswith("define")))
    assert accepted(host.filters[name]) == [
        {"action": "accept", "direction": "in", "priority": 200, "proto": "tcp",
         "srcipaddr": "10.0.0.0", "srcipmask": "8", "dstportstart": "22", "dstportend": "22"}]
    back_mac = row["spec"]["networks"][0]["mac"]
    assert filterrefs(cloud, URI_A, vm["id"]) == {
        row["mac"]: (name, {"MAC": row["mac"], "IP": "10.20.0.5"}),
        # no fixed IP: learned from the DHCP answers of the network's own server only
        back_mac: (name, {"MAC": back_mac, "CTRL_IP_LEARNING": "dhcp",
                          "DHCP_SERVER": "10.30.0.1"})}

    # A change of rules on the running VM: the filter redefined, no restart.
    web = {"direction": "in", "proto": "tcp", "port": "80-443"}
    service.update_vm("web1", {"firewall": [SSH, web]})
    settle(controller, clock)
    assert [r["dstportstart"] for r in accepted(host.filters[name])] == ["22", "80"]
    row = service.store.get_vm("web1")
    assert row["observed_state"] == "running" and not row["restart_required"]

    # Live migration: defined on the target first, gone from the source after.
    other = "b" if row["host"] == "local" else "local"
    service.migrate_vm("web1", other)
    settle(controller, clock)
    target, source = cloud.host(HOSTS[other]), cloud.host(HOSTS[row["host"]])
    assert service.store.get_vm("web1")["host"] == other
    assert name in target.filters and name not in source.filters

    service.delete_vm("web1", force=True)
    settle(controller, clock)
    assert name not in target.filters


def test_a_user_mode_vm_has_no_filter_and_takes_no_rules(service, controller, cloud, clock):
    vm, _ = service.create_vm({"host": "local", "name": "web1"})
    settle(controller, clock)
    assert not cloud.host(URI_A).filters
    assert filterrefs(cloud, URI_A, vm["id"]) == {service.store.get_vm("web1")["mac"]: None}


def test_a_group_s_rules_apply_to_its_members(service, controller, cloud, clock):
    service.create_network(LAB)
    service.create_group({"name": "webs", "policy": "anti-affinity",
                          "firewall": [{"direction": "in", "proto": "tcp", "port": 80}]})
    vm, _ = service.create_vm({"name": "web1", "group": "webs", "firewall": [SSH],
                               "network": {"type": "network", "name": "lab"}})
    settle(controller, clock)
    row = service.store.get_vm("web1")
    xml = cloud.host(HOSTS[row["host"]]).filters[f"vmappliance-{vm['id']}"]
    assert [r["dstportstart"] for r in accepted(xml)] == ["22", "80"]  # the VM's, then the group's
    service.update_group("webs", {"firewall": [{"direction": "in", "proto": "udp", "port": 53}]})
    settle(controller, clock)
    xml = cloud.host(HOSTS[row["host"]]).filters[f"vmappliance-{vm['id']}"]
    assert [(r["proto"], r["dstportstart"]) for r in accepted(xml)] == [("tcp", "22"),
                                                                        ("udp", "53")]


def test_a_config_drive_describes_every_nic(service, controller, clock):
    service.store.update_host("local", storage="shared")
    service.create_network(LAB)
    service.create_network(BACK)
    service.create_network({"name": "dyn", "subnet": "10.40.0.0/24"})
    vm, _ = service.create_vm({"host": "local", "name": "web1", "state": "stopped",
                               "cloud_init": {"datasource": "configdrive"}, "networks": [
        {"network": "lab", "ip": "10.20.0.5"}, {"network": "back", "ip": "10.30.0.9"},
        {"network": "dyn"}]})
    settle(controller, clock, passes=1)
    seed = controller.ctx.config.vm_dir(vm["id"]) / "cidata.iso"
    net = json.loads(read(seed, "/openstack/latest/network_data.json"))
    row = service.store.get_vm("web1")
    macs = [row["mac"]] + [n["mac"] for n in row["spec"]["networks"]]
    assert [link["ethernet_mac_address"] for link in net["links"]] == macs
    first, back, dyn = net["networks"]
    assert (first["type"], first["ip_address"], first["routes"][0]["gateway"]) == (
        "ipv4", "10.20.0.5", "10.20.0.1")
    # a further static NIC: its address and subnet, no second default route
    assert (back["type"], back["ip_address"], back["netmask"], back["routes"]) == (
        "ipv4", "10.30.0.9", "255.255.255.0", [])
    assert (dyn["type"], dyn["link"]) == ("ipv4_dhcp", net["links"][2]["id"])
    assert {s["address"] for s in net["services"]} == {"10.20.0.1", "10.30.0.1"}


def test_a_further_nic_s_new_fixed_ip_reaches_its_filter_live(service, controller, cloud, clock):
    service.create_network(LAB)
    service.create_network(BACK)
    vm, _ = service.create_vm({"host": "local", "name": "web1", "networks": [
        {"network": "lab"}, {"network": "back", "ip": "10.30.0.9"}]})
    settle(controller, clock)
    mac = service.store.get_vm("web1")["spec"]["networks"][0]["mac"]
    host = cloud.host(URI_A)
    before = len([c for c in host.calls if c == f"update {vm['id']}"])
    service.update_vm("web1", {"networks": [{"network": "back", "ip": "10.30.0.10"}]})
    settle(controller, clock)
    assert filterrefs(cloud, URI_A, vm["id"])[mac][1]["IP"] == "10.30.0.10"  # the definition
    assert len([c for c in host.calls if c == f"update {vm['id']}"]) == before + 1  # the NIC live
    row = service.store.get_vm("web1")
    assert row["observed_state"] == "running" and not row["restart_required"]


def test_a_shelved_vm_leaves_no_filter_and_gets_it_back(service, controller, cloud, clock):
    service.create_network(LAB)
    vm, _ = service.create_vm({"name": "web1", "firewall": [SSH],
                               "network": {"type": "network", "name": "lab"}})
    settle(controller, clock)
    home = service.store.get_vm("web1")["host"]
    name = f"vmappliance-{vm['id']}"
    assert name in cloud.host(HOSTS[home]).filters
    service.set_state("web1", "shelve")
    settle(controller, clock, passes=2)
    assert name not in cloud.host(HOSTS[home]).filters
    service.set_state("web1", "unshelve")
    settle(controller, clock, passes=2)
    row = service.store.get_vm("web1")
    assert row["observed_state"] == "running"
    assert accepted(cloud.host(HOSTS[row["host"]]).filters[name])[0]["dstportstart"] == "22"



def test_leftover_filters_are_swept_when_a_host_reconnects(service, controller, cloud, clock):
    """Filters of a VM whose delete was cut short (row gone, domain gone) and of a VM
    living elsewhere (a migration source whose removal failed) go; the VM's own, one
    whose uuid names a domain there (not ours), and filters not the appliance's stay."""
    service.create_network(LAB)
    made = {}
    for name, host in (("gone", "b"), ("kept", "b"), ("moved", "local")):
        made[name], _ = service.create_vm({"host": host, "name": name, "firewall": [SSH],
                                           "network": {"type": "network", "name": "lab"}})
    settle(controller, clock)
    host, filter_of_ = cloud.host(URI_B), {k: f"vmappliance-{v['id']}" for k, v in made.items()}
    host.filters[filter_of_["moved"]] = cloud.host(URI_A).filters[filter_of_["moved"]]
    del host.domains[made["gone"]["id"]]  # a delete cut short after the domain went
    service.store.delete_vm(made["gone"]["id"])
    stranger = "0b9c2d1e-0000-4000-8000-00000000abcd"  # a domain here not in the store
    host.domains[stranger] = host.domains[made["kept"]["id"]]
    others = {f"vmappliance-{stranger}", "vmappliance-not-a-uuid", "clean-traffic-copy"}
    for name in others:
        host.filters[name] = "<filter/>"
    settle(controller, clock)
    assert filter_of_["gone"] in host.filters  # no sweep between its periods (600 s)
    host.up = False
    settle(controller, clock)
    host.up = True
    settle(controller, clock)  # reconnected: swept at once
    assert set(host.filters) == {filter_of_["kept"], *others}
    assert filter_of_["moved"] in cloud.host(URI_A).filters
    assert sorted(e["message"] for e in service.store.list_events()
                  if e["kind"] == "orphan-filter-removed") == sorted([
        f"removed network filter {filter_of_['gone']} from host b: its VM is gone",
        f"removed network filter {filter_of_['moved']} from host b: its VM is on local"])


def test_the_sweep_keeps_the_filter_of_a_vm_made_after_its_map_was_read(service, controller, cloud, clock):
    """The VM-to-host map is read once for every host: a VM made since (its filter defined
    before its domain, or its domain not there yet) is asked again before its filter goes
    (security review, session 12: a new VM's boot failed on its missing filter)."""
    from appliance.controller import firewall

    service.create_network(LAB)
    vm, _ = service.create_vm({"host": "b", "name": "fresh", "firewall": [SSH],
                               "network": {"type": "network", "name": "lab"}})
    settle(controller, clock)
    host = cloud.host(URI_B)
    name = f"vmappliance-{vm['id']}"
    assert name in host.filters
    del host.domains[vm["id"]]  # as between its filter's definition and its domain's
    store = controller.ctx.store
    real = store.vm_hosts
    store.vm_hosts = lambda: {k: v for k, v in real().items() if k != vm["id"]}  # read before it
    try:
        firewall.sweep(controller.ctx)
    finally:
        store.vm_hosts = real
    assert name in host.filters
    assert not [e for e in store.list_events() if e["kind"] == "orphan-filter-removed"]

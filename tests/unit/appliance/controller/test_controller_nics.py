"""Further NICs (spec networks, issue 15) in the domain, and plugged into and out of a
running VM (appliance/controller/nic_hotplug.py), on the fake driver."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from tests.unit.appliance.controller.controller_harness import URI_A, settle

LAB = {"name": "lab", "subnet": "10.20.0.0/24"}
DB = {"name": "db", "subnet": "10.30.0.0/24"}


def _interfaces(cloud, vm_id):
    dom = cloud.host(URI_A).domains[vm_id]
    return [(i.find("mac").get("address"), i.find("source").get("network"))
            for i in ET.fromstring(dom.xml).iterfind("devices/interface")]


def test_nics_are_defined_plugged_in_and_out_of_a_running_vm(service, controller, cloud, clock):
    service.create_network(LAB)
    service.create_network(DB)
    vm, _ = service.create_vm({"host": "local", "name": "web1",
                               "networks": [{"network": "lab", "ip": "10.20.0.5"}]})
    settle(controller, clock)
    row = service.store.get_vm("web1")
    assert _interfaces(cloud, vm["id"]) == [(row["mac"], "vmapp.default.lab")]
    service.update_vm("web1", {"networks": [{"network": "db", "ip": "10.30.0.7"}]})
    settle(controller, clock)
    host = cloud.host(URI_A)
    row = service.store.get_vm("web1")
    mac = row["spec"]["networks"][0]["mac"]
    assert host.networks["vmapp.default.db"].active  # started before the NIC was plugged in
    assert _interfaces(cloud, vm["id"])[1] == (mac, "vmapp.default.db")  # the definition
    assert mac in host.domains[vm["id"]].live_nics  # and the running domain
    assert not row["restart_required"]
    assert "nic-added" in [e["kind"] for e in service.list_events("web1")]
    service.update_vm("web1", {"networks": []})
    settle(controller, clock)
    assert mac not in host.domains[vm["id"]].live_nics
    assert len(_interfaces(cloud, vm["id"])) == 1
    assert not service.store.get_vm("web1")["restart_required"]
    assert "nic-removed" in [e["kind"] for e in service.list_events("web1")]


def test_a_nic_the_guest_keeps_waits_for_a_restart(service, controller, cloud, clock):
    service.create_network(LAB)
    service.create_network(DB)
    service.create_vm({"host": "local", "name": "web1", "networks": [{"network": "lab"},
                                                                      {"network": "db"}]})
    settle(controller, clock)
    mac = service.store.get_vm("web1")["spec"]["networks"][0]["mac"]
    cloud.stuck_detach = {mac}
    service.update_vm("web1", {"networks": []})
    settle(controller, clock)
    row = service.store.get_vm("web1")
    assert row["restart_required"]
    assert mac in cloud.host(URI_A).domains[row["id"]].live_nics

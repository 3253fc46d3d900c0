"""A VM's libvirt network on its host (issue 15, appliance/controller/networks.py):
the appliance's networks defined before the VM and started before it boots; a
network it does not manage that is missing or down refuses the start with a 409
naming the network and what to do, where libvirt's "network 'default' is not
active" used to fail the operation (500)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest
from tests.unit.appliance.controller.controller_harness import URI_A, settle

from appliance.errors import Conflict

LAB = {"name": "lab", "subnet": "10.20.0.0/24"}


def finished(service, controller, clock, op):
    settle(controller, clock, passes=2)
    return service.store.get_operation(op["id"])


def test_appliance_network_is_defined_started_and_the_vm_attached(service, controller, cloud,
                                                                  clock):
    net = service.create_network(LAB)
    vm, op = service.create_vm({"host": "local", "name": "web1", "network": {
        "type": "network", "name": "lab", "ip": "10.20.0.5"}})
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    host = cloud.host(URI_A)
    libvirt_net = host.networks["vmapp.default.lab"]
    assert libvirt_net.active and libvirt_net.autostart
    assert libvirt_net.uuid == service.store.get_network("default", "lab")["id"]
    assert net["libvirt_name"] == "vmapp.default.lab"
    root = ET.fromstring(libvirt_net.xml)
    assert root.find("forward").get("mode") == "nat"
    assert root.find("ip").attrib == {"address": "10.20.0.1", "netmask": "255.255.255.0"}
    calls = host.calls
    assert calls.index("net-define vmapp.default.lab") < calls.index("net-start vmapp.default.lab")
    assert cloud.where(vm["id"]) == [URI_A]
    source = ET.fromstring(host.domains[vm["id"]].xml).find("devices/interface/source")
    assert source.get("network") == "vmapp.default.lab"


def test_a_stopped_create_defines_the_network_without_starting_it(service, controller, cloud,
                                                                  clock):
    service.create_network(LAB)
    _vm, op = service.create_vm({"host": "local", "name": "web1", "state": "stopped",
                                 "network": {"type": "network", "name": "lab"}})
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    net = cloud.host(URI_A).networks["vmapp.default.lab"]
    assert net.autostart and not net.active
    assert "net-start vmapp.default.lab" not in cloud.host(URI_A).calls


def test_unmanaged_network_not_active_is_409_naming_it_and_the_fix(service, controller, cloud,
                                                                  clock):
    cloud.host(URI_A).networks["default"].active = False
    vm, op = service.create_vm({"host": "local", "name": "web1", "network": "network:default"})
    done = finished(service, controller, clock, op)
    assert done["status"] == "failed" and done["error_field"] == "network.name"
    assert "virsh net-start default" in done["error"] and "/v1/networks" in done["error"]
    with pytest.raises(Conflict) as refused:
        service.finish(op, timeout=0)
    assert refused.value.field == "network.name"
    assert refused.value.http_status == 409
    assert cloud.where(vm["id"]) == []  # never started
    # Started by its admin: the next start runs.
    cloud.host(URI_A).networks["default"].active = True
    vm, op = service.create_vm({"host": "local", "name": "web2", "network": "network:default"})
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    assert cloud.where(vm["id"]) == [URI_A]


def test_unmanaged_network_missing_is_409(service, controller, cloud, clock):
    _vm, op = service.create_vm({"host": "local", "name": "web1", "network": "network:nosuch"})
    done = finished(service, controller, clock, op)
    assert done["status"] == "failed" and done["error_field"] == "network.name"
    assert "does not exist on host local" in done["error"]


def test_other_failures_stay_500(service, controller, cloud, clock, monkeypatch):
    from appliance.errors import Failed
    from appliance.virt.fake import FakeGuest

    def broken(self):
        raise Failed("qemu died")

    monkeypatch.setattr(FakeGuest, "start", broken)
    _vm, op = service.create_vm({"host": "local", "name": "web1"})
    done = finished(service, controller, clock, op)
    assert done["status"] == "failed" and done["error_field"] is None
    with pytest.raises(Failed) as failed:
        service.finish(op, timeout=0)
    assert not isinstance(failed.value, Conflict)


def test_stale_definition_of_a_deleted_network_is_replaced_while_inactive(
        service, controller, cloud, clock):
    service.create_network(LAB)
    _vm, op = service.create_vm({"host": "local", "name": "web1", "state": "stopped",
                                 "network": {"type": "network", "name": "lab"}})
    finished(service, controller, clock, op)
    first = cloud.host(URI_A).networks["vmapp.default.lab"].uuid
    service.delete_vm("web1", force=True)
    settle(controller, clock, passes=3)
    service.delete_network("lab")
    service.create_network({"name": "lab", "subnet": "10.30.0.0/24"})
    _vm, op = service.create_vm({"host": "local", "name": "web2", "network": {"type": "network", "name": "lab"}})
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    net = cloud.host(URI_A).networks["vmapp.default.lab"]
    assert net.uuid != first and net.active
    calls = cloud.host(URI_A).calls
    # The sweep removed the old one after its delete; else ensure_network replaces it.
    assert "net-remove vmapp.default.lab" in calls or "net-undefine vmapp.default.lab" in calls


def test_a_stale_definition_is_replaced_by_ensure_network(cloud):
    from appliance.virt.driver import DriverError
    from appliance.virt.fake import FakeDriver

    driver = FakeDriver(cloud, "local", URI_A, lambda *a: None)
    driver.ensure_network("vmapp.default.lab", "uuid-1", "<network/>", start=False)
    driver.ensure_network("vmapp.default.lab", "uuid-2", "<network/>", start=True)
    assert "net-undefine vmapp.default.lab" in cloud.host(URI_A).calls
    with pytest.raises(DriverError):  # the old one runs: not replaced under its guests
        driver.ensure_network("vmapp.default.lab", "uuid-3", "<network/>", start=True)
    assert cloud.host(URI_A).networks["vmapp.default.lab"].uuid == "uuid-2"


def test_bridge_network_needs_the_host_bridge(service, controller, cloud, clock):
    service.create_network({"name": "lan", "kind": "bridge", "bridge": "br7"})
    vm, op = service.create_vm({"host": "local", "name": "web1",
                                "network": {"type": "network", "name": "lan"}})
    done = finished(service, controller, clock, op)
    assert done["status"] == "failed" and done["error_field"] == "network.name"
    assert "host bridge 'br7'" in done["error"] and "host local" in done["error"]
    assert cloud.where(vm["id"]) == []
    cloud.host(URI_A).bridges.add("br7")
    op = service.set_state("web1", "running")
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    assert cloud.where(vm["id"]) == [URI_A]
    root = ET.fromstring(cloud.host(URI_A).networks["vmapp.default.lan"].xml)
    assert root.find("bridge").get("name") == "br7"


def test_a_migration_target_gets_the_network_running(service, controller, cloud, clock, store):
    """The guest arrives running: its network runs on the target before it does."""
    from tests.unit.appliance.controller.controller_harness import URI_B

    service.create_network(LAB)
    vm, op = service.create_vm({"host": "local", "name": "web1",
                                "network": {"type": "network", "name": "lab"}})
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    assert "vmapp.default.lab" not in cloud.host(URI_B).networks
    service.migrate_vm("web1", "b")
    settle(controller, clock, passes=3)
    assert cloud.where(vm["id"]) == [URI_B], service.store.get_vm("web1")["last_error"]
    assert cloud.host(URI_B).networks["vmapp.default.lab"].active


def test_a_migration_to_a_host_whose_libvirt_network_is_down_is_refused(service, controller,
                                                                        cloud, clock):
    from tests.unit.appliance.controller.controller_harness import URI_B

    vm, op = service.create_vm({"host": "local", "name": "web1", "network": "network:default"})
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    cloud.host(URI_B).networks["default"].active = False
    op = service.migrate_vm("web1", "b")
    done = finished(service, controller, clock, op)
    assert done["status"] == "failed" and done["error_field"] == "network.name"
    assert "not active on host b" in done["error"]
    assert cloud.where(vm["id"]) == [URI_A]  # the guest stays where it runs


def test_deleted_networks_are_swept_off_the_hosts_only_ours(service, controller, cloud, clock):
    from appliance.virt.fake_networks import FakeNetwork
    from appliance.virt.network_xml import network_xml

    service.create_network(LAB)
    _vm, op = service.create_vm({"host": "local", "name": "web1",
                                 "network": {"type": "network", "name": "lab"}})
    assert finished(service, controller, clock, op)["status"] == "succeeded"
    host = cloud.host(URI_A)
    # Another appliance's network on the same host, and an admin's: never touched.
    other = {"id": "11111111-2222-3333-4444-555555555555", "project": "default",
             "name": "theirs", "kind": "isolated", "subnet": "10.99.0.0/24",
             "dhcp": {"start": "10.99.0.128", "end": "10.99.0.254"}, "domain": "theirs"}
    host.networks["vmapp.default.theirs"] = FakeNetwork(other["id"],
                                                        network_xml(other, "another-one"), True)
    host.networks["admins"] = FakeNetwork("22222222-2222-3333-4444-555555555555", "<network/>")
    settle(controller, clock, passes=2)
    assert "vmapp.default.lab" in host.networks  # in use: kept
    service.delete_vm("web1", force=True)
    settle(controller, clock, passes=3)
    service.delete_network("lab")
    settle(controller, clock, passes=2)
    assert "vmapp.default.lab" not in host.networks
    assert "net-remove vmapp.default.lab" in host.calls
    assert {"vmapp.default.theirs", "admins", "default"} <= set(host.networks)


def test_a_network_that_cannot_start_on_the_host_is_409(service, controller, cloud, clock,
                                                        monkeypatch):
    """libvirt refuses to start it (its subnet already routed there): a refusal naming
    the network and the host, with libvirt's reason as translated, not a 500."""
    from appliance.virt.driver import DriverError
    from appliance.virt.fake import FakeDriver

    def refuse(self, name, uuid, xml, start):
        raise DriverError("internal", "the network's address range is in use on the host")

    monkeypatch.setattr(FakeDriver, "ensure_network", refuse)
    service.create_network(LAB)
    _vm, op = service.create_vm({"host": "local", "name": "web1",
                                 "network": {"type": "network", "name": "lab"}})
    done = finished(service, controller, clock, op)
    assert done["status"] == "failed" and done["error_field"] == "network.name"
    assert "network lab cannot run on host local" in done["error"]
    assert "address range is in use" in done["error"] and "internal" not in done["error"]

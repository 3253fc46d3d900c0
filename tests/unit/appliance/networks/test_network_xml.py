"""The libvirt XML of the appliance's networks (virt/network_xml.py) and the
libvirt side of defining and starting one (virt/libvirt_networks.py), on
libvirt's test driver."""
from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

import pytest

from appliance.model.networks import NetworkCreate
from appliance.virt import libvirt_networks
from appliance.virt.driver import DriverError
from appliance.virt.host_networks import ACTIVE, INACTIVE
from appliance.virt.network_xml import network_xml, owner


def network_xml_of(net):
    return network_xml(net, "inst-1")


def row(**body):
    return {"id": str(uuid.uuid4()), "project": "web", "created": 0.0,
            **NetworkCreate.parse(body)}


def test_nat():
    net = row(name="lab", subnet="10.20.0.0/24", domain="lab.internal")
    root = ET.fromstring(network_xml(net, "inst-1"))
    assert root.findtext("name") == "vmapp.web.lab" and root.findtext("uuid") == net["id"]
    assert root.find("forward").attrib == {"mode": "nat"}
    assert root.find("bridge").get("name") is None  # libvirt picks virbrN
    assert root.find("domain").get("name") == "lab.internal"
    assert owner(network_xml(net, "inst-1")) == "inst-1"
    assert owner("<network><name>default</name></network>") is None
    ip = root.find("ip")
    assert ip.attrib == {"address": "10.20.0.1", "netmask": "255.255.255.0"}
    assert ip.find("dhcp/range").attrib == {"start": "10.20.0.128", "end": "10.20.0.254"}


def test_isolated_has_no_forward():
    root = ET.fromstring(network_xml_of(row(name="lab", kind="isolated", subnet="192.168.4.0/22",
                                         dhcp={"start": "192.168.4.10",
                                               "end": "192.168.4.20"})))
    assert root.find("forward") is None
    assert root.find("ip").get("netmask") == "255.255.252.0"
    assert root.find("ip/dhcp/range").attrib == {"start": "192.168.4.10", "end": "192.168.4.20"}


def test_bridge():
    root = ET.fromstring(network_xml_of(row(name="lan", kind="bridge", bridge="br0")))
    assert root.find("forward").attrib == {"mode": "bridge"}
    assert root.find("bridge").attrib == {"name": "br0"}
    assert root.find("ip") is None and root.find("domain") is None


def test_define_start_and_replace_on_libvirt(conn):
    first = row(name="lab", subnet="10.77.0.0/24")
    name = "vmapp.web.lab"
    assert libvirt_networks.state(conn, name) is None
    libvirt_networks.ensure(conn, name, first["id"], network_xml(first, "inst-1"), start=False)
    assert libvirt_networks.state(conn, name) == INACTIVE
    assert conn.networkLookupByName(name).autostart()
    libvirt_networks.ensure(conn, name, first["id"], network_xml(first, "inst-1"), start=True)
    assert libvirt_networks.state(conn, name) == ACTIVE
    libvirt_networks.ensure(conn, name, first["id"], network_xml(first, "inst-1"), start=True)  # again
    second = row(name="lab", subnet="10.78.0.0/24")
    with pytest.raises(DriverError, match="deleted network") as err:  # the old one runs
        libvirt_networks.ensure(conn, name, second["id"], network_xml(second, "inst-1"), start=True)
    assert "net-destroy" in err.value.reason
    conn.networkLookupByName(name).destroy()
    libvirt_networks.ensure(conn, name, second["id"], network_xml(second, "inst-1"), start=True)
    net = conn.networkLookupByName(name)
    assert net.UUIDString() == second["id"] and net.isActive()
    assert "10.78.0.1" in net.XMLDesc()
    # Its own networks, by the instance id in their metadata; libvirt's default is not one.
    assert libvirt_networks.owned(conn, "inst-1") == {name: second["id"]}
    assert libvirt_networks.owned(conn, "inst-2") == {}
    libvirt_networks.remove(conn, name)
    assert libvirt_networks.state(conn, name) is None
    libvirt_networks.remove(conn, name)  # gone: nothing to do


def test_has_bridge_reads_sysfs(tmp_path):
    (tmp_path / "br0" / "bridge").mkdir(parents=True)
    (tmp_path / "eth0").mkdir()
    assert libvirt_networks.has_bridge("br0", tmp_path)
    assert not libvirt_networks.has_bridge("eth0", tmp_path)  # an interface, not a bridge
    assert not libvirt_networks.has_bridge("br9", tmp_path)

"""Fixed IPs on a libvirt network: the guest's own DHCP client gets the address we chose.

The network is isolated (no forward), made by the test on a libvirt host in a
network namespace of its own (packaging/local-hosts up --netns), so its bridge
never exists in the machine's own; nothing is sent to the guest from the host:
the guest reports its lease on the serial console.
"""
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest

from tests.appliance_process import READY_LINE
from tests.integration.netns_lab import netns_appliance

pytestmark = pytest.mark.integration

NETWORK_XML = """<network>
  <name>{name}</name>
  <bridge name='{bridge}' stp='off'/>
  <ip address='10.199.{octet}.1' netmask='255.255.255.0'>
    <dhcp><range start='10.199.{octet}.100' end='10.199.{octet}.200'/></dhcp>
  </ip>
</network>"""


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    """The appliance on a host in its own network namespace (overrides conftest's)."""
    with netns_appliance(tmp_path_factory.mktemp("home")) as (_host, app):
        yield app


@pytest.fixture
def isolated_network(appliance):
    suffix = uuid.uuid4().hex[:6]
    name, octet = f"vmapp-t-{suffix}", 150 + int(suffix, 16) % 100
    conn = libvirt.open(appliance.libvirt_uri)
    net = conn.networkCreateXML(NETWORK_XML.format(name=name, bridge=f"vmt{suffix}", octet=octet))
    try:
        yield name, octet
    finally:
        net.destroy()
        conn.close()


def test_fixed_ip_is_what_the_guest_gets(appliance, isolated_network):
    name, octet = isolated_network
    ip = f"10.199.{octet}.42"
    appliance.create_vm("fixed1", network={"type": "network", "name": name, "ip": ip})
    out = appliance.wait_console("fixed1", READY_LINE, 90)
    assert f"eth0 {ip}/24" in out
    conn = libvirt.open(appliance.libvirt_uri)
    assert f"ip='{ip}'" in conn.networkLookupByName(name).XMLDesc()
    # The same address for another VM on that network is refused up front.
    resp = appliance.api("POST", "/v1/vms", json={"name": "fixed2", "network": {"type": "network", "name": name,
                                                                               "ip": ip}})
    assert resp.status_code == 409 and resp.json()["field"] == "network.ip"
    assert appliance.api("DELETE", "/v1/vms/fixed1", params={"force": "true"}).status_code == 204
    assert f"ip='{ip}'" not in conn.networkLookupByName(name).XMLDesc()  # reservation released
    conn.close()


def dhcp_hosts(conn, network: str) -> list[dict]:
    return [dict(h.attrib) for h in ET.fromstring(conn.networkLookupByName(network).XMLDesc()).iter("host")]


def test_only_the_appliances_own_reservations_are_released(appliance, isolated_network):
    """Issue 9, finding 10: a reservation someone else made in a shared network
    survives a VM of ours with the same MAC, and a MAC one VM has is refused to
    another, which would otherwise take the first one's reservation with it."""
    name, octet = isolated_network
    conn = libvirt.open(appliance.libvirt_uri)
    theirs = {"mac": "52:54:00:ee:00:01", "name": "someone-else", "ip": f"10.199.{octet}.77"}
    conn.networkLookupByName(name).update(
        libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1,
        ET.tostring(ET.Element("host", theirs), encoding="unicode"), libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE)
    appliance.create_vm("mac1", state="stopped", network={"type": "network", "name": name, "mac": theirs["mac"]})
    assert dhcp_hosts(conn, name) == [theirs]
    assert appliance.api("DELETE", "/v1/vms/mac1").status_code == 204
    assert dhcp_hosts(conn, name) == [theirs]

    ours = {"mac": "52:54:00:ee:00:02", "name": "mac2", "ip": f"10.199.{octet}.42"}
    appliance.create_vm("mac2", state="stopped", network={"type": "network", "name": name, "mac": ours["mac"],
                                                          "ip": ours["ip"]})
    assert dhcp_hosts(conn, name) == [theirs, ours]
    for body in ({"name": "mac3", "state": "stopped", "network": {"type": "network", "name": name,
                                                                  "mac": ours["mac"]}},
                 {"name": "mac3", "state": "stopped", "network": {"type": "user", "mac": ours["mac"]}}):
        resp = appliance.api("POST", "/v1/vms", json=body)
        assert resp.status_code == 409 and resp.json()["field"] == "network.mac", resp.text
    assert appliance.api("GET", "/v1/vms/mac3").status_code == 404
    assert dhcp_hosts(conn, name) == [theirs, ours]
    assert appliance.api("DELETE", "/v1/vms/mac2").status_code == 204
    assert dhcp_hosts(conn, name) == [theirs]
    conn.close()

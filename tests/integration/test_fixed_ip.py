"""Fixed IPs on a libvirt network: the guest's own DHCP client gets the address we chose.

The network is isolated (no forward), made by the test; nothing is sent to the
guest from the host: the guest reports its lease on the serial console.
"""
import uuid

import libvirt
import pytest

from tests.appliance_process import READY_LINE

pytestmark = pytest.mark.integration

NETWORK_XML = """<network>
  <name>{name}</name>
  <bridge name='{bridge}' stp='off'/>
  <ip address='10.199.{octet}.1' netmask='255.255.255.0'>
    <dhcp><range start='10.199.{octet}.100' end='10.199.{octet}.200'/></dhcp>
  </ip>
</network>"""


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

"""Issue 9, findings 10, 11 and 16: MACs, DHCP reservations, port forwards and a
guest's way to the host, checked on the service (a real SQLite file) and the
controller driving libvirt's test driver."""
from __future__ import annotations

import ipaddress
import socket
import threading
import time
import uuid
import xml.etree.ElementTree as ET

import libvirt
import pytest

from appliance import spec as specs
from appliance.errors import Conflict, Failed, Invalid
from appliance.files import VM_FILES
from appliance.service import Service
from appliance.store import Store
from appliance.virt import domain, portforward
from tests.unit.appliance.virt.test_domain import plan

MAC_A = "52:54:00:aa:00:01"
MAC_B = "52:54:00:aa:00:02"


def user_net(mac: str | None = None, **extra) -> dict:
    return {"type": "user", **({"mac": mac} if mac else {}), **extra}


# -- finding 10: a MAC belongs to one VM ------------------------------------------------------
def test_a_mac_in_use_is_refused_at_create_and_changes_nothing(service):
    service.create_vm({"name": "web1", "state": "stopped", "network": user_net(MAC_A)})
    before = (service.list_vms(), service.list_operations())
    with pytest.raises(Conflict) as err:
        service.create_vm({"name": "web2", "state": "stopped", "network": user_net(MAC_A.upper())})
    assert err.value.field == "network.mac" and "web1" in err.value.reason
    assert (service.list_vms(), service.list_operations()) == before


def test_a_mac_another_vm_was_given_is_refused_too(service):
    """The MAC the appliance generated for one VM cannot be claimed by another."""
    vm, _ = service.create_vm({"name": "web1", "state": "stopped"})
    generated = service.store.get_vm_by_id(vm["id"])["mac"]
    with pytest.raises(Conflict) as err:
        service.create_vm({"name": "web2", "state": "stopped", "network": user_net(generated)})
    assert err.value.field == "network.mac"


def test_generated_macs_never_collide(service):
    """The unit fixture's uuids share their first bytes, so the MAC derived from
    them is the same for every VM: the second and later VMs must get another."""
    for i in range(4):
        service.create_vm({"name": f"web{i}", "state": "stopped"})
    macs = [row["mac"] for row in service.store.list_vms(with_xml=False)]
    assert len(set(macs)) == 4, macs


def test_a_mac_in_use_is_refused_at_update(service):
    service.create_vm({"name": "web1", "state": "stopped", "network": user_net(MAC_A)})
    vm, _ = service.create_vm({"name": "web2", "state": "stopped", "network": user_net(MAC_B)})
    with pytest.raises(Conflict) as err:
        service.update_vm("web2", {"network": user_net(MAC_A)})
    assert err.value.field == "network.mac"
    assert service.get_vm("web2") == vm
    assert service.store.get_vm("web2")["mac"] == MAC_B


def test_a_new_mac_in_an_update_is_the_one_the_domain_gets(service, controller):
    service.finish(service.create_vm({"name": "web1", "state": "stopped", "network": user_net(MAC_A)})[1])
    service.finish(service.update_vm("web1", {"network": user_net(MAC_B)})[1])
    assert service.store.get_vm("web1")["mac"] == MAC_B
    assert f"<mac address='{MAC_B}'/>" in controller.host.conn.lookupByUUIDString(service.get_vm("web1")["id"]).XMLDesc()


def test_two_concurrent_creates_cannot_both_get_a_mac(service, config):
    """Two API workers (two connections to one SQLite file) race for one MAC:
    the check and the insert are one transaction, so exactly one wins."""
    other = Service(Store(config.db_path), config, uuidgen=uuid.uuid4)
    for round_ in range(5):
        mac = f"52:54:00:bb:00:{round_:02x}"
        barrier = threading.Barrier(2)
        results: list[str] = []

        def create(svc: Service, name: str) -> None:
            barrier.wait()
            try:
                svc.create_vm({"name": name, "state": "stopped", "network": user_net(mac)})
                results.append("created")
            except Conflict as err:
                results.append(err.field)

        threads = [threading.Thread(target=create, args=(svc, f"race{round_}{side}"))
                   for svc, side in ((service, "a"), (other, "b"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results) == ["created", "network.mac"], results
    macs = [row["mac"] for row in service.store.list_vms(with_xml=False)]
    assert len(macs) == len(set(macs)) == 5


# -- finding 10: only the appliance's own DHCP reservations are released -------------------------
NET_XML = """<network><name>{name}</name><bridge name='{bridge}'/>
  <ip address='10.77.{octet}.1' netmask='255.255.255.0'><dhcp><range start='10.77.{octet}.100'
  end='10.77.{octet}.200'/></dhcp></ip></network>"""


@pytest.fixture
def test_network(controller):
    """A network of the test driver's own (its state is per process), removed afterwards."""
    suffix = uuid.uuid4().hex[:6]
    octet = int(suffix, 16) % 200
    name = f"unit-{suffix}"
    conn = libvirt.open("test:///default")
    net = conn.networkCreateXML(NET_XML.format(name=name, bridge=f"vu{suffix}", octet=octet))
    try:
        yield net, octet
    finally:
        net.destroy()
        conn.close()


def dhcp_hosts(net) -> list[dict]:
    return [dict(h.attrib) for h in ET.fromstring(net.XMLDesc()).iter("host")]


def add_host(net, **attrs: str) -> None:
    xml = ET.tostring(ET.Element("host", attrs), encoding="unicode")
    net.update(libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, xml,
               libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE)


def test_a_reservation_the_appliance_did_not_make_survives(service, controller, test_network):
    """Someone else (an admin, another appliance) reserved an address for a MAC:
    a VM of ours with that MAC neither removes it when created nor when deleted."""
    net, octet = test_network
    theirs = {"mac": MAC_A, "name": "not-ours", "ip": f"10.77.{octet}.9"}
    add_host(net, **theirs)
    network = {"type": "network", "name": net.name(), "mac": MAC_A}
    service.finish(service.create_vm({"name": "web1", "state": "stopped", "network": network})[1])
    assert dhcp_hosts(net) == [theirs]
    service.finish(service.delete_vm("web1", force=True))
    assert dhcp_hosts(net) == [theirs]


def test_a_fixed_ip_reservation_follows_the_vm_and_goes_with_it(service, controller, test_network):
    net, octet = test_network
    theirs = {"mac": MAC_B, "name": "not-ours", "ip": f"10.77.{octet}.9"}
    add_host(net, **theirs)
    network = {"type": "network", "name": net.name(), "mac": MAC_A, "ip": f"10.77.{octet}.20"}
    service.finish(service.create_vm({"name": "web1", "state": "stopped", "network": network})[1])
    ours = {"mac": MAC_A, "name": "web1", "ip": f"10.77.{octet}.20"}
    assert dhcp_hosts(net) == [theirs, ours]
    # A new address: the old reservation goes, the new one comes; theirs stays.
    service.finish(service.update_vm("web1", {"network": {**network, "ip": f"10.77.{octet}.21"}})[1])
    assert dhcp_hosts(net) == [theirs, {**ours, "ip": f"10.77.{octet}.21"}]
    service.finish(service.delete_vm("web1", force=True))
    assert dhcp_hosts(net) == [theirs]


def test_a_fixed_ip_someone_else_reserved_fails_with_a_clear_reason(service, controller, test_network):
    net, octet = test_network
    theirs = {"mac": MAC_B, "name": "not-ours", "ip": f"10.77.{octet}.30"}
    add_host(net, **theirs)
    network = {"type": "network", "name": net.name(), "mac": MAC_A, "ip": f"10.77.{octet}.30"}
    with pytest.raises(Failed) as err:
        service.finish(service.create_vm({"name": "web1", "state": "stopped", "network": network})[1])
    assert f"10.77.{octet}.30" in err.value.reason and "reservation" in err.value.reason
    assert dhcp_hosts(net) == [theirs]


# -- finding 11: port forwards ----------------------------------------------------------------
def forward(**extra) -> dict:
    return {"type": "user", "port_forwards": [{"host_port": 18080, "guest_port": 80, **extra}]}


@pytest.mark.parametrize("address", ["::1", "0:0:0:0:0:0:0:1"])
def test_an_ipv6_host_address_is_refused(address):
    """QEMU 7.2's slirp cannot bind IPv6 forwards ("Bad host address" for [::1])."""
    with pytest.raises(Invalid) as err:
        specs.validate({"name": "web1", "image": "demo", "network": forward(host_address=address)})
    assert err.value.field == "network.port_forwards[0].host_address" and "IPv6" in err.value.reason


def test_the_hostfwd_rule_is_what_qemu_parses():
    fwd = specs.validate({"name": "web1", "image": "demo",
                          "network": forward(host_address="127.0.0.2", protocol="udp")})["network"]["port_forwards"][0]
    assert portforward.rule(fwd) == "udp:127.0.0.2:18080-:80"


def test_privileged_host_ports_are_refused_unless_the_admin_allows(service, config):
    low = {"type": "user", "port_forwards": [{"host_port": 80, "guest_port": 80}]}
    with pytest.raises(Invalid) as err:
        service.create_vm({"name": "web1", "state": "stopped", "network": low})
    assert err.value.field == "network.port_forwards[0].host_port" and "1024" in err.value.reason
    assert service.list_vms() == []
    service.create_vm({"name": "web1", "state": "stopped", "network": forward()})
    with pytest.raises(Invalid) as err:
        service.update_vm("web1", {"network": low})
    assert err.value.field == "network.port_forwards[0].host_port"
    assert service.get_vm("web1")["spec"]["network"]["port_forwards"][0]["host_port"] == 18080
    config.allow_privileged_ports = True
    service.update_vm("web1", {"network": low})
    assert service.get_vm("web1")["spec"]["network"]["port_forwards"][0]["host_port"] == 80


def test_a_port_in_use_is_found_before_start():
    with pytest.raises(Failed) as err, socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        portforward.check_free([{"protocol": "tcp", "host_address": "127.0.0.1", "host_port": port,
                                 "guest_port": 80}])
    assert f"127.0.0.1:{port}" in err.value.reason and "in use" in err.value.reason


def test_info_usernet_is_read_as_the_forwards_in_place():
    text = ("Hub -1 (hostua-net0):\r\n  Protocol[State]    FD  Source Address  Port   Dest. Address  Port RecvQ SendQ\r\n"
            "  TCP[HOST_FORWARD]  13       127.0.0.2 18995       10.0.2.15    22     0     0\r\n"
            "  UDP[HOST_FORWARD]  12       127.0.0.1 18996       10.0.2.15    53     0     0\r\n"
            "  TCP[ESTABLISHED]   21       127.0.0.1 41234       10.0.2.15    22     0     0\r\n")
    assert portforward.parse_usernet(text) == {("tcp", "127.0.0.2", 18995, 22), ("udp", "127.0.0.1", 18996, 53)}


def test_a_forward_that_fails_after_start_leaves_the_vm_stopped(service, controller):
    """libvirt's test driver has no QEMU monitor, so adding the forward fails
    after the domain started: the domain must not be left running without it.
    Run strategy Manual: under Always the controller starts it again after its
    back-off, and a check that landed in that retry's moment saw it active."""
    vm, op = service.create_vm({"name": "web1", "network": forward(), "run_strategy": "Manual", "state": "running"})
    with pytest.raises(Failed) as err:
        service.finish(op)
    assert "18080" in err.value.reason
    dom = controller.host.lookup(vm["id"])
    assert dom is not None and not dom.is_active()
    failed = [o for o in service.list_operations(vm="web1") if o["kind"] == "create"]
    assert failed[0]["status"] == "failed" and "18080" in failed[0]["error"]
    assert any(e["kind"] == "operation-failed" and "18080" in e["message"] for e in service.list_events("web1"))
    assert service.get_vm("web1")["state"] == "stopped"


# -- finding 16: a guest's way to the host -----------------------------------------------------
def test_outbound_is_internet_by_default_and_none_is_kept():
    base = {"name": "web1", "image": "demo"}
    assert specs.validate(base)["network"] == {"type": "user", "port_forwards": []}  # stored specs unchanged
    assert specs.validate({**base, "network": {"type": "user", "outbound": "internet"}})["network"] == \
        {"type": "user", "port_forwards": []}
    assert specs.validate({**base, "network": {"type": "user", "outbound": "none"}})["network"]["outbound"] == "none"
    with pytest.raises(Invalid) as err:
        specs.validate({**base, "network": {"type": "user", "outbound": "host"}})
    assert err.value.field == "network.outbound"
    with pytest.raises(Invalid) as err:
        specs.validate({**base, "network": {"type": "network", "name": "n1", "outbound": "none"}})
    assert err.value.field == "network.outbound"


def test_outbound_none_gives_a_restricted_nic_libvirt_accepts(tmp_path):
    """libvirt 9.0 has no 'restrict' for <interface type='user'>: the NIC is
    given to QEMU directly, with the netdev id the port forwards use."""
    xml = domain.build(plan(tmp_path, network={"type": "user", "outbound": "none"}))
    assert "<interface" not in xml
    root = ET.fromstring(xml)
    args = [a.get("value") for a in root.iter(f"{{{domain.QEMU_NS}}}arg")]
    netdev = args[args.index("-netdev") + 1]
    device = args[args.index("-device") + 1]
    assert '"restrict":true' in netdev.replace(" ", "") and portforward.NETDEV in netdev
    assert "52:54:00:0f:8f:ad" in device and '"bus":"pcie.0"' in device.replace(" ", "")
    conn = libvirt.open("test:///default")
    conn.defineXML(xml).undefine()
    conn.close()


# -- review of issue 9's fixes: the API's own port is not a guest's ------------------------------
@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2"])
def test_a_forward_on_the_apis_own_port_is_refused(service, config, address):
    """A forward of the port the API listens on was accepted. While the API runs, the VM's
    start fails (port in use) and its run strategy retries; at the next start of `vmctl
    serve` the controller starts VMs before the API binds, so QEMU (root) could take the
    port: the API cannot start, and every client's bearer token (vmctl, Prometheus) goes to
    the guest. A mount-group member, who has no token, could set this up through spec.json."""
    config.listen = "127.0.0.1:18931"
    hijack = {"type": "user", "port_forwards": [{"host_port": 18931, "guest_port": 80, "host_address": address}]}
    with pytest.raises(Invalid) as err:
        service.create_vm({"name": "web1", "state": "stopped", "network": hijack})
    assert err.value.field == "network.port_forwards[0].host_port" and "API" in err.value.reason
    assert service.list_vms() == [] and service.list_operations() == []
    service.create_vm({"name": "web1", "state": "stopped", "network": forward()})
    before = service.get_vm("web1")
    with pytest.raises(Invalid) as err:
        service.update_vm("web1", {"network": hijack})
    assert err.value.field == "network.port_forwards[0].host_port"
    assert service.get_vm("web1") == before
    config.allow_privileged_ports = True  # not a privileged port: the admin's switch does not open it
    with pytest.raises(Invalid):
        service.update_vm("web1", {"network": hijack})


# -- review of issue 9's fixes: what a guest's agent says about its addresses ------------------------
def test_addresses_a_guest_agent_reports_are_checked_and_bounded(service, controller, monkeypatch):
    """Every domain has the org.qemu.guest_agent.0 channel, and the controller stored what
    interfaceAddresses(SRC_AGENT) returned as it was: libvirt copies the guest agent's
    interface names, MACs and "ip-address" strings unchecked. A guest (root inside it, no
    token) could put any text and any amount into the store, status.json and the addresses
    file, lines included. Only IP addresses are kept, at most 64, with names and MACs checked.
    (libvirt's test driver has no agent: interfaceAddresses answers here as a hostile one would.)"""
    hostile = {
        "eth0\n6.6.6.6/8": {"hwaddr": "x" * 5000, "addrs": [{"addr": "not-an-ip\n7.7.7.7", "prefix": 24, "type": 0}]},
        "eth1": {"hwaddr": "52:54:00:12:34:56",
                 "addrs": [{"addr": f"10.1.{i // 256}.{i % 256}", "prefix": 16, "type": 0} for i in range(5000)]},
        "eth2": {"hwaddr": None, "addrs": [{"addr": "10.2.0.1", "prefix": 999, "type": 0}]},
    }
    monkeypatch.setattr(libvirt.virDomain, "interfaceAddresses", lambda self, source, flags=0: hostile)
    service.finish(service.create_vm({"name": "web1"})[1])
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and not VM_FILES.read(service, "web1", "addresses").startswith("10.1."):
        time.sleep(0.1)
    text = VM_FILES.read(service, "web1", "addresses")
    status = service.status(service.store.get_vm("web1"))
    assert text.startswith("10.1.0.0/16\n"), text[:200]
    lines = text.splitlines()
    assert len(lines) <= 64 and all(line.startswith("10.1.") for line in lines), lines[:5]
    assert len(status["addresses"]) <= 64
    for entry in status["addresses"]:
        ipaddress.ip_address(entry["address"])
        assert entry["mac"] in (None, "52:54:00:12:34:56") and "\n" not in entry["interface"]
        assert 0 <= entry["prefix"] <= 128
    assert len(service.store.get_vm("web1")["addresses"]) < 16 * 1024


def test_one_name_in_two_projects_gets_two_reservations(service, controller, test_network):
    """libvirt refuses a second DHCP entry of one name in a network (checked here on
    the test driver, as on qemu:///system); names are unique per project only, so
    outside the default project the entry is NAME.PROJECT."""
    from appliance.access import SYSTEM, acting_as

    net, octet = test_network
    add_host(net, mac=MAC_B, name="clash", ip=f"10.77.{octet}.40")
    with pytest.raises(libvirt.libvirtError):
        add_host(net, mac=MAC_A, name="clash", ip=f"10.77.{octet}.41")
    service.store.insert_project({"name": "dev", "description": "", "quota": {}, "created": 0.0})
    network = {"type": "network", "name": net.name(), "ip": f"10.77.{octet}.50"}
    service.finish(service.create_vm({"name": "web1", "state": "stopped", "network": network})[1])
    with acting_as(SYSTEM.in_project("dev")):
        dev_net = {**network, "ip": f"10.77.{octet}.51"}
        service.finish(service.create_vm({"name": "web1", "state": "stopped", "network": dev_net})[1])
    names = {h["name"]: h["ip"] for h in dhcp_hosts(net)}
    assert names == {"clash": f"10.77.{octet}.40", "web1": f"10.77.{octet}.50",
                     "web1.dev": f"10.77.{octet}.51"}
    with acting_as(SYSTEM.in_project("dev")):
        service.finish(service.delete_vm("web1", force=True))
    assert {h["name"] for h in dhcp_hosts(net)} == {"clash", "web1"}

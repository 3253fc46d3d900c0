"""Appliance networks with real guests, on a libvirt host in a network namespace
of its own (issue 15): packaging/local-hosts `up --netns`. The nat network's
bridge, its dnsmasq and firewall rules, and the guests' taps exist only inside
that namespace and vanish with it; nothing is sent outside the machine, nor on
the machine's own network. The guests are reached through their serial console.
"""
from __future__ import annotations

import itertools
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import libvirt
import pytest

from tests.appliance_process import READY_LINE, Appliance, wait_for
from tests.fs.conftest import wait_mounted
from tests.integration.netns_lab import netns_appliance
from tests.local_hosts import LocalHost, LocalHostError

pytestmark = pytest.mark.integration

SUBNET, DOMAIN = "10.77.0.0/24", "lab.internal"
WEB1_IP = "10.77.0.10"
BOOT_TIMEOUT = 240  # TCG guests on a loaded machine
_tags = itertools.count(300)


def root_has_link(name: str) -> bool:
    return Path("/sys/class/net", name).exists()


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] not in "ZX"
    except OSError:
        return False


def guest(app: Appliance, vm: str, command: str, timeout: float = 180) -> str:
    """Run a shell command in the guest's console shell and return its output (one
    line): the typed line reads $((N+1)), the answer N+1, so the echo never matches.
    Typed again every 30 s while unanswered (a line typed as the shell starts is lost)."""
    n = next(_tags)
    typed = f'echo "OUT-$(({n}+1))-$({command} 2>&1 | tr "\\n" " ")-END"\n'
    pattern = re.compile(rf"OUT-{n + 1}-(.*?)-END")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = app.api("PUT", f"/v1/vms/{vm}/console", data=typed.encode(),
                       headers={"Content-Type": "text/plain"})
        assert resp.status_code == 200, resp.text
        retype = min(deadline, time.monotonic() + 30)
        while time.monotonic() < retype:
            found = pattern.search(app.console(vm))
            if found:
                return found.group(1).strip()
            time.sleep(0.5)
    raise AssertionError(f"no answer to {command!r} from {vm}:\n{app.console(vm)[-2000:]}")


def test_a_netns_host_is_refused_without_its_namespace_and_leaves_nothing():
    host = LocalHost(netns=True)
    with host:
        assert host.status().endswith("netns=own")
        inside = host.exec("ip", "-o", "link").stdout
        assert "lo:" in inside and "LOWER_UP" in inside  # loopback up, nothing else
        assert len(inside.splitlines()) == 1, inside
        with pytest.raises(LocalHostError, match="network namespace of its own"):
            LocalHost(host.name).up()  # the same host without --netns
        holder = int((host.base / "holder.pid").read_text())
        netns = Path(f"/proc/{holder}/ns/net").readlink()
        assert netns != Path("/proc/self/ns/net").readlink()
    assert not host.base.exists()
    assert not alive(holder)  # the namespace's last process: the namespace is gone


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """A host in its own network namespace, an appliance on it, the nat network lab."""
    with netns_appliance(tmp_path_factory.mktemp("home"), metadata=True, network={
            "name": "lab", "kind": "nat", "subnet": SUBNET, "domain": DOMAIN}) as (host, app):
        yield host, app


def libvirt_network(host: LocalHost, name: str) -> ET.Element:
    conn = libvirt.open(host.uri)
    try:
        return ET.fromstring(conn.networkLookupByName(name).XMLDesc())
    finally:
        conn.close()


def test_fixed_ip_and_dns_names_on_a_nat_network(lab):
    host, app = lab
    net = app.api("GET", "/v1/networks/lab").json()
    app.create_vm("web1", memory="128M", network={"type": "network", "name": "lab", "ip": WEB1_IP})
    app.create_vm("client", memory="128M", network={"type": "network", "name": "lab"})
    # The network, as the appliance made it on the host: the domain, web1's reservation by name.
    xml = libvirt_network(host, net["libvirt_name"])
    assert xml.find("domain").get("name") == DOMAIN
    assert {(h.get("name"), h.get("ip")) for h in xml.iter("host")} == {("web1", WEB1_IP)}
    # Its bridge is in the host's namespace only, never in the machine's own.
    bridge = xml.find("bridge").get("name")
    assert f"{bridge}:" in host.exec("ip", "-o", "link").stdout
    assert not root_has_link(bridge)

    out = app.wait_console("web1", READY_LINE, BOOT_TIMEOUT)
    assert f"eth0 {WEB1_IP}/24" in out
    assert f"inet {WEB1_IP}/24" in guest(app, "web1", "ip -o -4 addr show dev eth0")
    app.wait_console("client", READY_LINE, BOOT_TIMEOUT)
    # client resolves web1 through the network's dnsmasq, and reaches its port 8000.
    answer = guest(app, "client", f"nslookup web1.{DOMAIN}")
    assert re.search(rf"Address( 1)?:\s*{re.escape(WEB1_IP)}", answer), answer
    assert guest(app, "client", f"timeout 20 nc web1.{DOMAIN} 8000 </dev/null") == "ok"
    # An unknown name does not resolve: the answer above is not any name's.
    assert WEB1_IP not in guest(app, "client", f"nslookup nothere.{DOMAIN}")
    # client has no fixed IP: its name comes from its DHCP request (the hostname the
    # appliance's NoCloud seed gave it), and resolves to its lease in the DHCP range.
    answer = guest(app, "web1", f"nslookup client.{DOMAIN}")
    assert re.search(r"Address( 1)?:\s*10\.77\.0\.(12[89]|1[3-9][0-9]|2[0-4][0-9]|25[0-4])\b", answer), answer



def test_each_guest_reads_its_own_metadata(lab):
    """The metadata service on the nat network (issue 15): web1 by its fixed IP, client by
    its DHCP lease; each gets its own name and id, never the other's. (User mode, and a
    change seen at the next request: tests/integration/test_netns_metadata.py, slow.)"""
    _host, app = lab
    for vm in ("web1", "client"):
        app.wait_console(vm, READY_LINE, BOOT_TIMEOUT)
        text = guest(app, vm, "wget -qO- http://169.254.169.254/openstack/latest/meta_data.json")
        meta = json.loads(text)
        assert (meta["name"], meta["uuid"]) == (vm, app.api("GET", f"/v1/vms/{vm}").json()["id"])
    assert guest(app, "web1", "wget -qO- http://169.254.169.254/latest/meta-data/local-ipv4") == WEB1_IP


BACK_SUBNET, BACK_IP = "10.78.0.0/24", "10.78.0.20"


def links(app: Appliance, vm: str) -> list[str]:
    """The guest's network interfaces (`ip -o link`), loopback aside."""
    return sorted(n for n in re.findall(r"\d+: (\w+)[:@]", guest(app, vm, "ip -o link")) if n != "lo")


def test_a_second_nic_with_its_fixed_ip_is_plugged_out_and_in_live(lab):
    host, app = lab
    resp = app.api("POST", "/v1/networks", json={"name": "back", "kind": "isolated",
                                                 "subnet": BACK_SUBNET})
    assert resp.status_code == 201, resp.text
    app.create_vm("multi", memory="128M", networks=[
        {"network": "lab", "ip": "10.77.0.20"}, {"network": "back", "ip": BACK_IP}])
    out = app.wait_console("multi", READY_LINE, BOOT_TIMEOUT)
    assert "eth0 10.77.0.20/24" in out and f"eth1 {BACK_IP}/24" in out
    # The mount's spec.json shows both NICs, the further one with the MAC it was given.
    wait_mounted(app.home / "mnt", None, app.home / "logs" / "mount.log")
    spec = json.loads((app.home / "mnt" / "vms" / "multi" / "spec.json").read_text())
    assert spec["network"] == {"type": "network", "name": "lab", "ip": "10.77.0.20"}
    [nic] = spec["networks"]
    mac = nic["mac"]
    assert nic == {"network": "back", "ip": BACK_IP, "mac": mac}
    assert links(app, "multi") == ["eth0", "eth1"]

    # Unplugged from the running guest: no restart, the guest has one NIC left.
    resp = app.api("PATCH", "/v1/vms/multi", json={"networks": []})
    assert resp.status_code in (200, 202), resp.text
    wait_for("eth1 unplugged", lambda: links(app, "multi") == ["eth0"], 120, interval=1)
    vm = app.api("GET", "/v1/vms/multi").json()
    assert vm["restart_required"] is False and vm["pending_changes"] == []

    # Plugged in again, with no MAC given: the one derived for the VM on that network again;
    # DHCP in the guest gets the NIC's fixed IP from the network's reservation.
    resp = app.api("PATCH", "/v1/vms/multi", json={"networks": [{"network": "back",
                                                                 "ip": BACK_IP}]})
    assert resp.status_code in (200, 202), resp.text
    assert app.api("GET", "/v1/vms/multi").json()["spec"]["networks"] == [
        {"network": "back", "ip": BACK_IP, "mac": mac}]
    wait_for("eth1 plugged in", lambda: len(links(app, "multi")) == 2, 120, interval=1)
    [new] = [n for n in links(app, "multi") if n != "eth0"]
    assert mac in guest(app, "multi", f"cat /sys/class/net/{new}/address")
    guest(app, "multi", f"ip link set {new} up; udhcpc -i {new} -n -q -t 5 -s /etc/udhcpc.script")
    assert f"inet {BACK_IP}/24" in guest(app, "multi", f"ip -o -4 addr show dev {new}")
    assert app.console("multi").count("demo guest: booted") == 1  # never restarted
    vm = app.api("GET", "/v1/vms/multi").json()
    assert vm["restart_required"] is False and vm["pending_changes"] == []
    events = [e["kind"] for e in app.api("GET", "/v1/vms/multi/events").json()["items"]]
    assert "nic-removed" in events and "nic-added" in events

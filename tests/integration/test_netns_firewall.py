"""The guest firewall and anti-spoofing (issue 15) with real guests, on a libvirt
host in a network namespace of its own (packaging/local-hosts `up --netns`): two
demo guests on an appliance nat network, driven through their serial consoles.
All traffic stays inside that namespace (its bridge, the guests' taps).

web answers on port 8000 (the demo guest's service, "ok") and on 8001 (started
here, "two"); client connects to both. Rules given by PATCH apply to the running
guest (libvirt re-instantiates the redefined filter on its NICs). A client that
takes another address, or another MAC, is not heard from it. A server group's
rules reach its member the same way.
"""
from __future__ import annotations

import errno
import json
import re
import time

import libvirt
import pytest

from tests.appliance_process import READY_LINE, wait_for
from tests.fs.conftest import wait_mounted
from tests.integration.test_netns_networks import BOOT_TIMEOUT, guest, lab  # noqa: F401
from tests.local_hosts import LocalHost

pytestmark = [pytest.mark.integration, pytest.mark.slow]

WEB, CLIENT, SPOOFED = "10.77.0.10", "10.77.0.11", "10.77.0.50"
ANSWER = {8000: "ok", 8001: "two"}


def reach(app, port: int) -> bool:
    """Whether client gets web's answer on `port`."""
    return guest(app, "client", f"timeout 8 nc {WEB} {port} </dev/null") == ANSWER[port]


def pings(app, source: str) -> bool:
    """Whether web answers client's ping sent from `source` (busybox ping -I ADDRESS)."""
    out = guest(app, "client", f"ping -c 2 -W 3 -I {source} {WEB}")
    found = re.search(r"(\d+) packets received", out)
    assert found, out
    return int(found.group(1)) > 0


def patch_firewall(app, rules: list[dict], vm: str = "web") -> None:
    """The VM's rules replaced; the PATCH answers once its update is done."""
    resp = app.api("PATCH", f"/v1/vms/{vm}", json={"firewall": rules})
    assert resp.status_code == 200, resp.text
    got = app.api("GET", f"/v1/vms/{vm}").json()
    assert got["spec"]["firewall"] == rules and got["restart_required"] is False


def filter_xml(host: LocalHost, vm_id: str) -> str | None:
    conn = libvirt.open(host.uri)
    try:
        return conn.nwfilterLookupByName(f"vmappliance-{vm_id}").XMLDesc()
    except libvirt.libvirtError:
        return None
    finally:
        conn.close()


def until(what: str, condition, timeout: float = 90) -> None:
    """A condition on guest traffic: rules take effect at once, but a guest under TCG
    on a loaded machine answers slowly; asked again until true or timed out."""
    wait_for(what, condition, timeout, interval=1)


def test_rules_block_and_allow_ports_and_spoofed_traffic_is_dropped(lab):  # noqa: F811
    host, app = lab
    web = app.create_vm("web", memory="128M", network={"type": "network", "name": "lab",
                                                        "ip": WEB})
    client = app.create_vm("client", memory="128M", network={"type": "network", "name": "lab",
                                                              "ip": CLIENT})
    # Every NIC has the VM's filter, with the NIC's MAC and fixed IP.
    xml = filter_xml(host, web["id"])
    # no rules: open, but for the one rule every filter has (no guest answers DHCP)
    assert xml is not None and "clean-traffic" in xml and xml.count("<rule") == 1
    assert "<rule action='drop' direction='out' priority='90'>" in xml, xml
    conn = libvirt.open(host.uri)
    try:
        dom_xml = conn.lookupByUUIDString(client["id"]).XMLDesc()
    finally:
        conn.close()
    assert f"filterref filter='vmappliance-{client['id']}'" in dom_xml
    assert f"name='IP' value='{CLIENT}'" in dom_xml

    app.wait_console("web", READY_LINE, BOOT_TIMEOUT)
    app.wait_console("client", READY_LINE, BOOT_TIMEOUT)
    guest(app, "web", "{ nc -ll -p 8001 -e echo two </dev/null >/dev/null 2>&1 & } ; echo started")
    until("8000 and 8001 open", lambda: reach(app, 8000) and reach(app, 8001))

    # One port allowed in: the other is dropped (the guest runs on, not restarted).
    patch_firewall(app, [{"direction": "in", "proto": "tcp", "port": 8001}])
    assert "dstportstart='8001'" in (filter_xml(host, web["id"]) or "")
    until("8000 closed", lambda: not reach(app, 8000))
    assert reach(app, 8001)
    # A source range that is not client's: both closed.
    patch_firewall(app, [{"direction": "in", "proto": "tcp", "port": "8000-8001",
                          "from": "10.77.0.128/25"}])
    until("8001 closed", lambda: not reach(app, 8001))
    assert not reach(app, 8000)
    # client's range, through the mount's spec.json: both open. A bad rule there is
    # refused (EINVAL) and changes nothing.
    wait_mounted(app.home / "mnt", None, app.home / "logs" / "mount.log")
    spec_file = app.home / "mnt" / "vms" / "web" / "spec.json"
    spec = json.loads(spec_file.read_text())
    with pytest.raises(OSError) as refused:
        spec_file.write_text(json.dumps({**spec, "firewall": [{"direction": "in", "proto": "tcp",
                                                                "port": "8000-80001"}]}))
    assert refused.value.errno == errno.EINVAL
    rules = [{"direction": "in", "proto": "tcp", "port": "8000-8001", "from": "10.77.0.0/25"}]
    spec_file.write_text(json.dumps({**spec, "firewall": rules}))
    assert app.api("GET", "/v1/vms/web").json()["spec"]["firewall"] == rules
    until("8000 and 8001 open again", lambda: reach(app, 8000) and reach(app, 8001))
    # Outbound rules on client's side: only web's 8000 may be reached.
    patch_firewall(app, [{"direction": "out", "proto": "tcp", "port": 8000,
                          "to": f"{WEB}/32"}], vm="client")
    until("client's 8001 out closed", lambda: not reach(app, 8001))
    assert reach(app, 8000)
    patch_firewall(app, [], vm="client")
    until("client's rules gone", lambda: reach(app, 8001))
    assert app.console("web").count("demo guest: booted") == 1

    # ICMP allowed in as well: web answers client's ping.
    patch_firewall(app, [{"direction": "in", "proto": "tcp", "port": "8000-8001",
                          "from": "10.77.0.0/25"}, {"direction": "in", "proto": "icmp"}])
    until("web answers pings", lambda: pings(app, CLIENT))
    # Anti-spoofing: client takes another address on its NIC; from it, nothing reaches
    # web, from its own it still does.
    guest(app, "client", f"ip addr add {SPOOFED}/24 dev eth0; echo added")
    assert f"inet {SPOOFED}/24" in guest(app, "client", "ip -o -4 addr show dev eth0")
    assert not pings(app, SPOOFED)
    assert pings(app, CLIENT)
    guest(app, "client", f"ip addr del {SPOOFED}/24 dev eth0; echo removed")
    # Another MAC: nothing leaves the NIC (ARP and IP need the NIC's own MAC).
    mac = guest(app, "client", "cat /sys/class/net/eth0/address")
    guest(app, "client", "ip link set eth0 address 52:54:00:de:ad:01; ip neigh flush all >/dev/null 2>&1; "
                         "echo changed")
    assert not reach(app, 8000)
    guest(app, "client", f"ip link set eth0 address {mac}; ip neigh flush all >/dev/null 2>&1; echo back")
    until("client heard again with its MAC", lambda: reach(app, 8000))

    # A server group's rules, shared by its members: web joins one, its own rules gone.
    resp = app.api("POST", "/v1/groups", json={"name": "fw", "policy": "affinity", "firewall": [
        {"direction": "in", "proto": "tcp", "port": 8001}]})
    assert resp.status_code == 201, resp.text
    resp = app.api("PATCH", "/v1/vms/web", json={"group": "fw", "firewall": []})
    assert resp.status_code == 200, resp.text
    until("the group's rule: 8000 closed", lambda: not reach(app, 8000))
    assert reach(app, 8001)
    resp = app.api("PATCH", "/v1/groups/fw", json={"firewall": []})  # each member's filter follows
    assert resp.status_code == 200, resp.text
    until("no rules left: 8000 open", lambda: reach(app, 8000))

    # The filter goes with the VM.
    resp = app.api("DELETE", "/v1/vms/web", params={"force": "true"})
    assert resp.status_code in (200, 202, 204), resp.text
    wait_for("web deleted", lambda: app.api("GET", "/v1/vms/web").status_code == 404, 120)
    deadline = time.monotonic() + 30
    while filter_xml(host, web["id"]) is not None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert filter_xml(host, web["id"]) is None

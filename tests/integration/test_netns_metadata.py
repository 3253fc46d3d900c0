"""The metadata service (issue 15) with real guests, on a libvirt host in a network
namespace of its own (packaging/local-hosts `up --netns`): 169.254.169.254 is put on
that namespace's lo and served there only; the guests are reached through their
serial console. Two guests on a nat network (one with a fixed IP, one by its DHCP
lease) and one with a user-mode NIC (QEMU's slirp connects for it), each reading
its own documents, a change visible at the next request, and a process of the
host that is no guest's QEMU served nothing.
"""
from __future__ import annotations

import json

import pytest

from tests.appliance_process import READY_LINE, Appliance
from tests.integration.test_netns_networks import BOOT_TIMEOUT, guest
from tests.integration.netns_lab import netns_appliance

pytestmark = [pytest.mark.integration, pytest.mark.slow]  # ~100 s: make test-slow

SUBNET, FIXED_IP = "10.79.0.0/24", "10.79.0.10"
URL = "http://169.254.169.254"


def fetch(app: Appliance, vm: str, path: str) -> str:
    return guest(app, vm, f"wget -qO- {URL}{path}")


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with netns_appliance(tmp_path_factory.mktemp("home"), metadata=True, network={
            "name": "meta", "kind": "nat", "subnet": SUBNET}) as (host, app):
        vms = {
            "alpha": app.create_vm(
                "alpha", memory="128M", labels={"role": "web"},
                network={"type": "network", "name": "meta", "ip": FIXED_IP},
                cloud_init={"user_data": "#cloud-config\n# alpha first\n"}),
            "beta": app.create_vm("beta", memory="128M",
                                  network={"type": "network", "name": "meta"}),
            "gamma": app.create_vm("gamma", memory="128M", network={"type": "user"},
                                   cloud_init={"user_data": "#cloud-config\n# gamma\n"}),
        }
        for name in vms:
            app.wait_console(name, READY_LINE, BOOT_TIMEOUT)
        yield host, app, {name: vm["id"] for name, vm in vms.items()}


def meta_data(app: Appliance, vm: str) -> dict:
    text = fetch(app, vm, "/openstack/latest/meta_data.json")
    try:
        return json.loads(text)
    except ValueError:
        raise AssertionError(f"{vm}: not JSON: {text!r}") from None


def test_each_guest_reads_its_own_openstack_and_ec2_documents(lab):
    _host, app, ids = lab
    for vm in ("alpha", "beta", "gamma"):  # nat by fixed IP, nat by lease, user mode
        meta = meta_data(app, vm)
        assert (meta["name"], meta["uuid"]) == (vm, ids[vm]), meta
        assert fetch(app, vm, "/latest/meta-data/instance-id") == ids[vm]
        assert fetch(app, vm, "/latest/meta-data/hostname") == vm
    assert meta_data(app, "alpha")["meta"] == {"role": "web"}
    assert fetch(app, "alpha", "/latest/meta-data/local-ipv4") == FIXED_IP
    assert fetch(app, "gamma", "/latest/meta-data/local-ipv4") == "10.0.2.15"
    beta_ip = fetch(app, "beta", "/latest/meta-data/local-ipv4")
    assert beta_ip.startswith("10.79.0.") and beta_ip != FIXED_IP
    assert beta_ip in guest(app, "beta", "ip -o -4 addr show dev eth0")
    # The version lists, and network_data.json with alpha's fixed IP.
    assert fetch(app, "alpha", "/openstack").split() == ["2012-08-10", "2015-10-15", "latest"]
    assert "latest" in fetch(app, "alpha", "/").split()
    assert FIXED_IP in fetch(app, "alpha", "/openstack/latest/network_data.json")
    assert fetch(app, "gamma", "/latest/user-data") == "#cloud-config # gamma"
    # beta has no user data: 404, and wget says so (nothing printed).
    assert "404" in guest(app, "beta", f"wget -O- {URL}/openstack/latest/user_data")


def test_a_change_to_user_data_and_labels_shows_at_the_next_request(lab):
    _host, app, _ids = lab
    assert fetch(app, "alpha", "/openstack/latest/user_data") == "#cloud-config # alpha first"
    resp = app.api("PATCH", "/v1/vms/alpha", json={
        "cloud_init": {"user_data": "#cloud-config\n# alpha second\n"},
        "labels": {"role": "db"}})
    assert resp.status_code in (200, 202), resp.text
    assert fetch(app, "alpha", "/openstack/latest/user_data") == "#cloud-config # alpha second"
    assert fetch(app, "alpha", "/latest/user-data") == "#cloud-config # alpha second"
    assert meta_data(app, "alpha")["meta"] == {"role": "db"}
    assert fetch(app, "alpha", "/latest/meta-data/tags/instance/role") == "db"
    # The others' documents did not change: never alpha's.
    assert "alpha" not in fetch(app, "beta", "/openstack/latest/meta_data.json")
    assert fetch(app, "gamma", "/openstack/latest/user_data") == "#cloud-config # gamma"


def test_a_process_of_the_host_that_is_no_guest_gets_nothing(lab):
    host, _app, _ids = lab
    # From the host's own namespace (a local address, as slirp's), but not a QEMU's socket.
    out = host.exec("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                    f"{URL}/openstack/latest/meta_data.json", check=False).stdout
    assert out == "404"

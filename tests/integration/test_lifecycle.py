"""Every lifecycle operation on a real TCG guest, and the events each leaves."""
import socket
import time

import libvirt
import pytest

from tests.appliance_process import BOOT_LINE, READY_LINE, free_port

pytestmark = pytest.mark.integration


def kinds(appliance, name):
    return [e["kind"] for e in appliance.api("GET", f"/v1/vms/{name}/events").json()["items"]]


def test_create_boots_with_cloud_init(appliance):
    vm = appliance.create_vm("ci1", cloud_init={"user_data": "#!/bin/sh\necho user-data-ran-$((6*7))\n"})
    assert vm["state"] == "running" and vm["host"] == "local"
    out = appliance.wait_console("ci1", READY_LINE)
    assert BOOT_LINE in out
    assert "vm-appliance demo guest: hostname ci1" in out
    assert "user-data-ran-42" in out and "user-data done rc=0" in out
    assert appliance.domain_names() == [appliance.prefix + "ci1"]
    xml = appliance.api("GET", "/v1/vms/ci1/domain.xml").text
    assert "<domain type='qemu'" in xml and "vm-appliance" in xml
    appliance.api("DELETE", "/v1/vms/ci1", params={"force": "true"})


def test_pause_resume_reboot_stop_force_stop(appliance):
    appliance.create_vm("life1", termination_grace_period=20)
    appliance.wait_console("life1", READY_LINE)

    def put(state):
        resp = appliance.api("PUT", "/v1/vms/life1/state", json={"state": state})
        assert resp.status_code == 200, resp.text
        return resp.json()

    assert put("paused")["state"] == "paused"
    conn = libvirt.open(appliance.libvirt_uri)
    dom = conn.lookupByName(appliance.prefix + "life1")
    assert dom.state()[0] == libvirt.VIR_DOMAIN_PAUSED
    assert put("running")["state"] == "running"
    assert put("reboot")["state"] == "running"
    deadline = time.monotonic() + 60
    while appliance.console("life1").count(READY_LINE) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert appliance.console("life1").count(BOOT_LINE) == 2  # rebooted: a second boot
    started = time.monotonic()
    assert put("stopped")["state"] == "stopped"
    assert time.monotonic() - started < 15  # ACPI shutdown honoured, not the 20 s grace
    assert "powering off" in appliance.console("life1")
    assert "forced-off" not in kinds(appliance, "life1")
    assert put("running")["state"] == "running"
    assert put("force-stop")["state"] == "stopped"
    assert dom.isActive() == 0
    seen = kinds(appliance, "life1")
    assert seen.count("state-requested") == 6 and "created" in seen
    conn.close()


def test_rename_then_delete_removes_domain_and_disks(appliance):
    vm = appliance.create_vm("old1", state="stopped")
    vm_dir = appliance.home / "vms" / vm["id"]
    assert (vm_dir / "root.qcow2").exists()
    resp = appliance.api("PATCH", "/v1/vms/old1", json={"name": "new1"})
    assert resp.status_code == 200, resp.text
    assert appliance.domain_names() == [appliance.prefix + "new1"] or appliance.prefix + "new1" in appliance.domain_names()
    assert appliance.api("GET", "/v1/vms/old1").status_code == 404
    appliance.api("PUT", "/v1/vms/new1/state", json={"state": "running"})
    assert appliance.api("PATCH", "/v1/vms/new1", json={"name": "newer"}).status_code == 409
    assert appliance.api("DELETE", "/v1/vms/new1").status_code == 409
    assert appliance.api("DELETE", "/v1/vms/new1", params={"force": "true"}).status_code == 204
    assert appliance.prefix + "new1" not in appliance.domain_names()
    assert not vm_dir.exists()


def test_port_forward_reaches_the_guest_on_loopback(appliance):
    port = free_port()
    appliance.create_vm("fwd1", network={"type": "user", "port_forwards": [{"host_port": port, "guest_port": 8000}]})
    appliance.wait_console("fwd1", READY_LINE)
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        assert conn.recv(16).strip() == b"ok"
    assert appliance.api("GET", "/v1/vms/fwd1/addresses").text == "10.0.2.15/24\n"
    appliance.api("DELETE", "/v1/vms/fwd1", params={"force": "true"})


def test_run_strategy_always_restarts_a_guest_killed_behind_our_back(appliance):
    appliance.create_vm("always1")
    appliance.wait_console("always1", READY_LINE)
    conn = libvirt.open(appliance.libvirt_uri)
    conn.lookupByName(appliance.prefix + "always1").destroy()
    deadline = time.monotonic() + 60
    while appliance.console("always1").count(BOOT_LINE) < 2 and time.monotonic() < deadline:
        time.sleep(0.3)
    assert appliance.console("always1").count(BOOT_LINE) == 2
    assert "converging" in kinds(appliance, "always1")
    conn.close()
    appliance.api("DELETE", "/v1/vms/always1", params={"force": "true"})


def test_async_write_and_operation_long_poll(appliance):
    appliance.create_vm("async1", state="stopped")
    resp = appliance.api("PUT", "/v1/vms/async1/state", json={"state": "running"}, params={"wait": "false"})
    assert resp.status_code == 202
    op = appliance.api("GET", resp.headers["Location"], params={"wait": "60"}).json()
    assert op["status"] == "succeeded" and op["kind"] == "start"
    assert appliance.api("GET", "/v1/vms/async1/state").json() == {"state": "running"}
    appliance.api("DELETE", "/v1/vms/async1", params={"force": "true"})


BAD_WRITES = [
    ("POST", "/v1/vms", {"name": "UPPER"}, 422, "name"),
    ("POST", "/v1/vms", {"name": "ok1", "cpus": 0}, 422, "cpus"),
    ("POST", "/v1/vms", {"name": "ok1", "image": "nope"}, 404, "image"),
    ("POST", "/v1/vms", {"name": "ok1", "network": {"type": "user", "port_forwards": [
        {"host_port": 1, "guest_port": 99999}]}}, 422, "network.port_forwards[0].guest_port"),
    ("PATCH", "/v1/vms/bad1", {"memory": "huge"}, 422, "memory"),
    ("PATCH", "/v1/vms/bad1", {"image": "other"}, 422, "image"),
    ("PUT", "/v1/vms/bad1/state", {"state": "sideways"}, 422, "state"),
    ("PUT", "/v1/vms/bad1/state", {"state": "paused"}, 409, "state"),
    ("PUT", "/v1/vms/bad1/cpus", {"cpus": "many"}, 422, "cpus"),
    ("PUT", "/v1/vms/bad1/memory", {"memory": 1}, 422, "memory"),
    ("PUT", "/v1/vms/bad1/spec.json", {"name": "bad1", "image": "demo", "disks": "x"}, 422, "disks"),
    ("PUT", "/v1/vms/bad1/status.json", {}, 403, "status.json"),
    ("PUT", "/v1/vms/missing/state", {"state": "running"}, 404, "name"),
    ("POST", "/v1/images", {"name": "x1", "path": "/etc/hostname"}, 422, "path"),  # outside the import directory
    ("PUT", "/v1/vms/bad1/host", {"host": "elsewhere"}, 404, "host"),  # no such host
    ("PUT", "/v1/vms/bad1/host", {"host": "local", "bandwidth": 0}, 422, "bandwidth"),
]


@pytest.mark.parametrize("method, path, body, status, field", BAD_WRITES)
def test_bad_input_on_every_write_route_changes_nothing(appliance, method, path, body, status, field):
    if appliance.api("GET", "/v1/vms/bad1").status_code == 404:
        appliance.create_vm("bad1", state="stopped")
    before = appliance.api("GET", "/v1/vms/bad1").json()
    names_before = [vm["name"] for vm in appliance.api("GET", "/v1/vms").json()["items"]]
    resp = appliance.api(method, path, json=body)
    assert resp.status_code == status, resp.text
    assert resp.json()["field"] == field and resp.json()["reason"]
    after = appliance.api("GET", "/v1/vms/bad1").json()
    assert after["generation"] == before["generation"] and after["spec"] == before["spec"]
    assert [vm["name"] for vm in appliance.api("GET", "/v1/vms").json()["items"]] == names_before

"""The appliance restarted, or killed, while VMs run: nothing is lost."""
import time

import libvirt
import pytest

from tests.appliance_process import BOOT_LINE, READY_LINE

pytestmark = pytest.mark.integration


def test_restart_adopts_running_vms(fresh_appliance):
    app = fresh_appliance.start()
    app.create_vm("keep1")
    app.create_vm("keep2", state="stopped")
    app.wait_console("keep1", READY_LINE)
    ids = {vm["name"]: vm["id"] for vm in app.api("GET", "/v1/vms").json()["items"]}
    assert app.stop() == 0  # SIGTERM: clean exit
    conn = libvirt.open(app.libvirt_uri)
    assert conn.lookupByName(app.prefix + "keep1").isActive()  # VMs belong to libvirt
    app.start()
    vms = {vm["name"]: vm for vm in app.api("GET", "/v1/vms").json()["items"]}
    assert {n: v["id"] for n, v in vms.items()} == ids
    assert vms["keep1"]["state"] == "running" and vms["keep2"]["state"] == "stopped"
    assert app.console("keep1").count(BOOT_LINE) == 1  # adopted, not restarted
    assert app.api("PUT", "/v1/vms/keep1/state", json={"state": "stopped"}).json()["state"] == "stopped"
    assert sorted(app.domain_names()) == sorted(app.prefix + n for n in ids)
    conn.close()


def test_sigkill_mid_start_converges_after_restart(fresh_appliance):
    app = fresh_appliance.start()
    resp = app.api("POST", "/v1/vms", json={"name": "crash1"}, params={"wait": "false"})
    assert resp.status_code == 202
    app.kill()  # the create is pending or under way
    app.start()
    app.wait_state("crash1", "running", 60)
    app.wait_console("crash1", READY_LINE)
    assert app.domain_names() == [app.prefix + "crash1"]
    vm_dirs = [p.name for p in (app.home / "vms").iterdir()]
    assert vm_dirs == [app.api("GET", "/v1/vms/crash1").json()["id"]]
    ops = app.api("GET", "/v1/operations", params={"vm": "crash1"}).json()["items"]
    assert all(op["status"] in ("succeeded", "cancelled") for op in ops), ops


def test_sigkill_mid_delete_leaves_no_orphans(fresh_appliance):
    app = fresh_appliance.start()
    vm = app.create_vm("gone1")
    resp = app.api("DELETE", "/v1/vms/gone1", params={"force": "true", "wait": "false"})
    assert resp.status_code == 202
    app.kill()
    app.start()
    deadline = time.monotonic() + 30
    while app.api("GET", "/v1/vms/gone1").status_code != 404 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert app.api("GET", "/v1/vms/gone1").status_code == 404
    assert app.domain_names() == []
    assert not (app.home / "vms" / vm["id"]).exists()


def test_gunicorn_leaves_with_the_supervisor(fresh_appliance):
    import subprocess

    app = fresh_appliance.start()
    children = subprocess.run(["pgrep", "-P", str(app.proc.pid)], capture_output=True, text=True).stdout.split()
    assert children, "the API runs in a child process"
    app.kill()
    deadline = time.monotonic() + 10
    alive = children
    while alive and time.monotonic() < deadline:
        alive = [pid for pid in children if subprocess.run(["kill", "-0", pid], capture_output=True).returncode == 0]
        time.sleep(0.2)
    assert alive == [], "no orphan API process after SIGKILL"

"""Cancelling a clone while it copies, over REST, on a real appliance (issue 13:
"Cancel works"). The source is stopped (nothing boots): its 1 GiB data disk
holds 768 MiB of data, so qemu-img is still copying when the cancel comes.
The operation ends cancelled, the new VM is deleted with its folder, and the
source is intact and free for its next operation."""
from __future__ import annotations

import subprocess

import pytest

from appliance.config import Config
from tests.appliance_process import wait_for

pytestmark = pytest.mark.integration

WRITTEN = 768 << 20


def test_a_clone_cancelled_mid_copy_leaves_no_vm_behind(appliance):
    config = Config.load(appliance.home)
    source = appliance.create_vm("cxl-src", state="stopped", disks=[{"name": "data", "size": 1024}])
    data = config.vm_dir(source["id"]) / "disk-data.qcow2"
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {WRITTEN}", str(data)],
                   check=True, capture_output=True, timeout=120)
    resp = appliance.api("POST", "/v1/vms/cxl-src/clone", json={"name": "cxl-dst"},
                         params={"wait": "false"})
    assert resp.status_code == 202, resp.text
    clone, op = resp.json()["vm"], resp.json()["operation"]
    assert op["kind"] == "create"

    def running():
        now = appliance.api("GET", f"/v1/operations/{op['id']}").json()
        assert now["status"] in ("pending", "running"), now  # not done before the cancel
        return now["status"] == "running"

    wait_for("the copy running", running, 120, interval=0.1)
    resp = appliance.api("DELETE", f"/v1/operations/{op['id']}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["params"]["cancel"] is True  # the controller aborts the copy
    ended = appliance.api("GET", f"/v1/operations/{op['id']}", params={"wait": 60}).json()
    assert ended["status"] == "cancelled", ended
    assert ended["bytes_done"] < ended["bytes_total"]  # stopped mid-copy
    wait_for("the clone deleted", lambda: appliance.api("GET", "/v1/vms/cxl-dst").status_code == 404,
             120, interval=0.1)
    assert not config.vm_dir(clone["id"]).exists()
    events = [e["message"] for e in appliance.api(
        "GET", "/v1/events", params={"limit": 1000}).json()["items"] if e["vm_id"] == clone["id"]]
    assert "create: cancel requested" in events
    assert "its creation was cancelled: the VM is deleted" in events
    # the source is as it was, and free: its delete runs at once
    check = subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"read -P 0x5a {WRITTEN - 65536} 64k",
                            str(data)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0 and "verification failed" not in check.stdout
    resp = appliance.api("DELETE", "/v1/vms/cxl-src")  # waits for its operation
    assert resp.status_code in (200, 204), resp.text
    wait_for("the source deleted", lambda: appliance.api("GET", "/v1/vms/cxl-src").status_code == 404,
             60, interval=0.1)

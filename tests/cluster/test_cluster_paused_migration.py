"""A paused VM migrated to another host and back (issue 17, found by the soak):
QEMU 7.2 keeps the disks of a guest that arrived paused inactive until it runs,
so its next migration crashed it (source QEMU's bdrv_inactivate_recurse
assertion, a 500) and its snapshots were refused. The appliance now resumes and
at once pauses such a guest on arrival: both migrations and a snapshot succeed,
the guest stays paused and alive, never rebooted."""
from __future__ import annotations

import libvirt
import pytest

from tests.appliance_process import BOOT_LINE, READY_LINE
from tests.cluster_helpers import final_operation
from tests.snapshot_helpers import ask

# slow (~35 s, two local hosts, a TCG boot): `make test-slow`, not `make test` (CI under 30 min);
# the fake-driver unit test (test_controller_paused_migration.py) runs in CI
pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOT_SECONDS = 120


def paused_on(cluster, host: str, vm_id: str) -> bool:
    conn = cluster.conn(host)
    try:
        return conn.lookupByUUIDString(vm_id).state()[0] == libvirt.VIR_DOMAIN_PAUSED
    finally:
        conn.close()


def put_host(app, name: str, host: str) -> None:
    resp = app.api("PUT", f"/v1/vms/{name}/host", json={"host": host}, timeout=300)
    assert resp.status_code == 200, resp.text


def test_a_paused_vm_migrates_there_and_back_and_takes_a_snapshot(cluster):
    app = cluster.app
    vm = app.create_vm("pm", host="local")
    app.wait_console("pm", READY_LINE, BOOT_SECONDS)
    resp = app.api("PUT", "/v1/vms/pm/state", data="paused", timeout=90)
    assert resp.status_code == 200, resp.text
    assert paused_on(cluster, "local", vm["id"])

    put_host(app, "pm", "h2")
    assert cluster.active_on(vm["id"]) == ["h2"] and paused_on(cluster, "h2", vm["id"])
    put_host(app, "pm", "local")  # a 500 before, the guest gone (crashed)
    assert cluster.active_on(vm["id"]) == ["local"] and paused_on(cluster, "local", vm["id"])
    assert cluster.defined_on(vm["id"]) == ["local"]

    resp = app.api("POST", "/v1/vms/pm/snapshots", json={"name": "s1"}, timeout=120)
    assert resp.status_code in (200, 201, 202), resp.text
    op_id = (resp.json().get("operation") or {}).get("id")
    if op_id:
        op = final_operation(app, op_id, 120)
        assert op["status"] == "succeeded", op
    snap = app.api("GET", "/v1/vms/pm/snapshots/s1").json()
    assert snap.get("state") in (None, "ready"), snap

    after = app.api("GET", "/v1/vms/pm").json()
    assert (after["host"], after["state"]) == ("local", "paused")
    assert paused_on(cluster, "local", vm["id"])
    items = app.api("GET", "/v1/events", params={"limit": 10000}).json()["items"]
    mine = [e for e in items if e["vm_name"] == "pm"]
    assert sum(e["kind"] == "disks-activated" for e in mine) == 2, mine
    assert not [e for e in mine if e["kind"] == "state-changed" and "crashed" in e["message"]]
    assert app.console("pm").count(BOOT_LINE) == 1  # never restarted
    resp = app.api("PUT", "/v1/vms/pm/state", data="running", timeout=90)
    assert resp.status_code == 200, resp.text
    assert ask(app, "pm", "echo alive") == "alive"  # the same guest, answering

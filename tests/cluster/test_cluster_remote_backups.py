"""Backups of a running VM on a host with storage of its own (issue 13:
"back a running VM up ... restore it anywhere"). h2 gets a disk of its own
(inside its namespace the appliance's home is an empty folder of h2's, as in
test_cluster.py); its VM's backup files are written there by libvirt's job and
downloaded by the controller through the storage API; the chain, restored
into a new VM on the appliance's own host, holds the same data, checksummed
inside both guests; restored in place on h2, the VM reads the full backup's
data again."""
from __future__ import annotations

import pytest

from appliance import backup_chain
from tests.appliance_process import READY_LINE
from tests.cluster_helpers import (
    add_backup_target,
    backed_up,
    create_with_data_disk,
    final_operation,
    start_cluster,
    wait_for,
)
from tests.integration.test_clone_restore import checksum, guest

# slow (2-3 min, several local hosts): `make test-slow`, not `make test` (CI stays under 30 min)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOT_SECONDS = 180
OP_SECONDS = 300


def finished(app, op_id: str) -> dict:
    op = final_operation(app, op_id, OP_SECONDS, interval=0.5)
    assert op["status"] == "succeeded", (op["kind"], op["error"])
    return op


def host_copies(h2, folder: str) -> list[str]:
    listing = h2.exec("ls", "-a", folder).stdout.split()
    return [name for name in listing if name.startswith(".backup-")]


def test_a_running_vm_on_its_hosts_own_storage_is_backed_up_and_restored_elsewhere(
        tmp_path, hosts):
    cluster = start_cluster(tmp_path, hosts)
    app, h2 = cluster.app, cluster.hosts["h2"]
    private = h2.base / "own-disk"
    h2.exec("sh", "-c", f"mkdir -p {private} && mount --bind {private} {app.home}")
    try:
        resp = app.api("PATCH", "/v1/hosts/h2", json={"storage": "h2-disk"})
        assert resp.status_code == 200, resp.text
        nas = add_backup_target(app, tmp_path / "nas")
        vm = create_with_data_disk(app, "far", "h2")
        app.wait_console("far", READY_LINE, BOOT_SECONDS)
        there = f"{app.home}/vms/{vm['id']}"
        assert h2.exec("test", "-s", f"{there}/disk-data.qcow2", check=False).returncode == 0
        assert not (app.home / "vms" / vm["id"] / "disk-data.qcow2").exists()  # h2's only
        assert guest(app, "far", "dd if=/dev/urandom of=/dev/vdb bs=1M count=8 "
                                 "conv=fsync 2>/dev/null && sync && echo written") == "written"

        op, full = backed_up(app, "far")
        assert full["kind"] == "full" and full["status"] == "good"
        assert op["bytes_done"] == full["size"] > 8 << 20
        assert host_copies(h2, there) == []
        at_full = checksum(app, "far")
        assert guest(app, "far", "dd if=/dev/urandom of=/dev/vdb bs=1M count=1 seek=32 "
                                 "conv=fsync 2>/dev/null && sync && echo written") == "written"
        _op, inc = backed_up(app, "far")
        assert inc["kind"] == "incremental" and inc["parent"] == full["id"]
        assert inc["size"] < full["size"] // 2  # the changed blocks, not the disk
        assert host_copies(h2, there) == []
        assert not list((app.home / "vms" / vm["id"]).glob(".backup-*"))
        chain = backup_chain.verify_chain(nas, vm["id"], inc["id"])
        assert [m["id"] for m in chain] == [full["id"], inc["id"]]
        assert app.api("GET", "/v1/vms/far").json()["state"] == "running"  # never stopped

        resp = app.api("POST", f"/v1/backups/{inc['id']}/restore", params={"wait": "false"},
                       json={"name": "near", "host": "local"})
        assert resp.status_code == 202, resp.text
        finished(app, resp.json()["operation"]["id"])
        assert app.api("GET", "/v1/vms/near").json()["host"] == "local"
        app.wait_console("near", READY_LINE, BOOT_SECONDS)
        now = checksum(app, "far")
        assert checksum(app, "near") == now != at_full

        # In place, on h2: the full backup's disks staged here, uploaded over far's.
        resp = app.api("PUT", "/v1/vms/far/state", json={"state": "stopped"})
        assert resp.status_code == 200, resp.text
        resp = app.api("POST", f"/v1/backups/{full['id']}/restore", params={"wait": "false"},
                       json={})
        assert resp.status_code == 202, resp.text
        finished(app, resp.json()["operation"]["id"])
        assert host_copies(h2, there) == [] and not list(
            (app.home / "vms" / vm["id"]).glob(".*.restore"))
        boots = app.console("far").count(READY_LINE)
        resp = app.api("PUT", "/v1/vms/far/state", json={"state": "running"})
        assert resp.status_code == 200, resp.text
        wait_for("far boots on its restored disks",
                 lambda: app.console("far").count(READY_LINE) > boots, BOOT_SECONDS, interval=1)
        assert checksum(app, "far") == at_full
    finally:
        app.cleanup()
        cluster.remove_domains()
        h2.exec("umount", str(app.home), check=False)

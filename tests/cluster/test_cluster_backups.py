"""Backups across hosts (issue 13, part B): libvirt 9.0 migrates a domain with
checkpoints, the dirty bitmaps travelling in the qcow2 files on shared
storage, but leaves libvirt's checkpoint records behind (and a plain undefine
of a stopped domain with checkpoints is refused). The backup handler redefines
its base checkpoint from the bitmaps, so the chain goes on incrementally after
a live migration and after an offline move, and a move is not refused."""
from __future__ import annotations

import libvirt
import pytest

from appliance import backup_chain
from tests.appliance_process import READY_LINE
from tests.cluster_helpers import add_backup_target, backed_up, create_with_data_disk, wait_for

# slow (2-3 min, several local hosts): `make test-slow`, not `make test` (CI stays under 30 min)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOT_SECONDS = 120


def backup(app) -> dict:
    return backed_up(app, "bk")[1]


def move(app, host: str) -> None:
    resp = app.api("PUT", "/v1/vms/bk/host", json={"host": host})
    assert resp.status_code == 200, resp.text
    assert app.api("GET", "/v1/vms/bk").json()["host"] == host


def test_the_chain_goes_on_after_a_migration_and_a_move(cluster, tmp_path):
    app = cluster.app
    nas = add_backup_target(app, tmp_path / "nas")
    vm = create_with_data_disk(app, "bk", "local")
    app.wait_console("bk", READY_LINE, BOOT_SECONDS)
    full = backup(app)
    assert full["kind"] == "full"

    move(app, "h2")  # live
    assert cluster.active_on(vm["id"]) == ["h2"]
    dom = cluster.conn("h2").lookupByUUIDString(vm["id"])
    assert dom.listAllCheckpoints() == []  # libvirt's record stayed behind
    after_migration = backup(app)
    assert after_migration["kind"] == "incremental" and after_migration["parent"] == full["id"]
    # the redefined older checkpoint is dropped right after the operation succeeded
    wait_for("one checkpoint", lambda: len(dom.listAllCheckpoints()) == 1, 30, 0.05)
    assert [c.getName() for c in dom.listAllCheckpoints()] == [after_migration["id"]]

    resp = app.api("PUT", "/v1/vms/bk/state", json={"state": "stopped"})
    assert resp.status_code == 200, resp.text
    move(app, "local")  # offline: the stopped domain with a checkpoint is undefined on h2
    assert cluster.defined_on(vm["id"]) == ["local"]
    after_move = backup(app)  # a stopped VM: started paused for it, destroyed after
    assert after_move["kind"] == "incremental" and after_move["parent"] == after_migration["id"]
    assert cluster.active_on(vm["id"]) == []
    assert app.api("GET", "/v1/vms/bk").json()["state"] == "stopped"
    chain = backup_chain.verify_chain(nas, vm["id"], after_move["id"])
    assert [m["id"] for m in chain] == [full["id"], after_migration["id"], after_move["id"]]
    local = cluster.conn("local").lookupByUUIDString(vm["id"])
    assert [c.getName() for c in local.listAllCheckpoints()] == [after_move["id"]]
    assert local.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF

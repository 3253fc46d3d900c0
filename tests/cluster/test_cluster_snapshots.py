"""Snapshots between two real libvirt hosts (issue 13, part A): a live
migration carries them (libvirt refuses to migrate a domain with snapshots:
the appliance drops the metadata, migrates, and redefines it on the target),
they survive a restart of the target's libvirtd, and a migration that would
copy the disks (and lose them) is refused with the reason."""
from __future__ import annotations

import time

import pytest

from tests.appliance_process import READY_LINE
from tests.snapshot_helpers import SnapshotClient, ask, type_line

# slow (2-3 min, several local hosts): `make test-slow`, not `make test` (CI stays under 30 min)
pytestmark = [pytest.mark.integration, pytest.mark.slow]

BOOT_SECONDS = 120
OFFSET = 2 * 1024 * 1024
TREE = {"disks": None, "whole": "disks"}  # the second snapshot's parent is the first


def libvirt_snapshots(cluster, host: str, vm_id: str) -> dict[str, str | None]:
    """name -> parent of each snapshot libvirt knows on that host."""
    conn = cluster.conn(host)
    try:
        snaps = conn.lookupByUUIDString(vm_id).listAllSnapshots()
        return {s.getName(): s.getParent().getName() if "<parent>" in s.getXMLDesc() else None
                for s in snaps}
    finally:
        conn.close()


def marker(app, vm: str) -> str:
    return ask(app, vm, f"dd if=/dev/vdb bs=1 skip={OFFSET} count=8 2>/dev/null")


def test_snapshots_move_with_a_live_migration_and_survive_libvirtd_restarts(cluster):
    app, snaps = cluster.app, SnapshotClient(cluster.app)
    vm = app.create_vm("roamer", host="local", disks=[{"name": "data", "size": 16}])
    app.wait_console("roamer", READY_LINE, BOOT_SECONDS)
    type_line(app, "roamer", f"printf KEEP-ME1 | dd of=/dev/vdb bs=1 seek={OFFSET} conv=notrunc 2>/dev/null; sync")
    assert marker(app, "roamer") == "KEEP-ME1"
    snaps.take("roamer", "disks")
    snaps.take("roamer", "whole", memory=True)
    type_line(app, "roamer", f"printf CHANGED1 | dd of=/dev/vdb bs=1 seek={OFFSET} conv=notrunc 2>/dev/null; sync")
    assert marker(app, "roamer") == "CHANGED1"

    resp = app.api("PUT", "/v1/vms/roamer/host", json={"host": "h2"})
    assert resp.status_code == 200, resp.text
    assert cluster.active_on(vm["id"]) == ["h2"]
    assert libvirt_snapshots(cluster, "h2", vm["id"]) == TREE
    assert cluster.defined_on(vm["id"]) == ["h2"]  # the source forgot it, metadata and all

    cluster.hosts["h2"].restart_libvirtd()
    assert libvirt_snapshots(cluster, "h2", vm["id"]) == TREE

    # The disk-only revert, on the target: powered off, booted on the reverted disks.
    boots = app.console("roamer").count(READY_LINE)
    snaps.revert("roamer", "disks")
    app.wait_state("roamer", "running")
    deadline = time.monotonic() + BOOT_SECONDS
    while app.console("roamer").count(READY_LINE) < boots + 1:
        assert time.monotonic() < deadline, app.console("roamer")[-2000:]
        time.sleep(0.3)
    assert marker(app, "roamer") == "KEEP-ME1"
    assert cluster.active_on(vm["id"]) == ["h2"]

    # A host with storage of its own: the disks would be copied without their snapshots.
    resp = app.api("PATCH", "/v1/hosts/local", json={"storage": "local-disk"})
    assert resp.status_code == 200, resp.text
    resp = app.api("PUT", "/v1/vms/roamer/host", json={"host": "local"})
    assert resp.status_code == 409, resp.text
    assert resp.json()["field"] == "host"
    assert "does not carry the snapshots" in resp.json()["reason"]
    assert cluster.active_on(vm["id"]) == ["h2"]
    assert libvirt_snapshots(cluster, "h2", vm["id"]) == TREE

"""Snapshots of real TCG guests under a real `vmctl serve` (issue 13, part A):
a marker written with dd on a data disk comes back with a disk-only revert; a
counter loop in the guest continues from the snapshot's value after a memory
revert; snapshots survive a restart of the appliance."""
from __future__ import annotations

import time

import libvirt
import pytest

from tests.appliance_process import READY_LINE
from tests.snapshot_helpers import SnapshotClient, ask, type_line

pytestmark = pytest.mark.integration

BOOT_SECONDS = 120
OFFSET = 3 * 1024 * 1024  # where the markers go on the data disk (/dev/vdb)


@pytest.fixture(scope="module")
def app(unmounted_appliance):
    return unmounted_appliance


@pytest.fixture(scope="module")
def snaps(app):
    return SnapshotClient(app)


def wait_boots(app, vm: str, count: int) -> None:
    """Until the guest's shell is up for the count-th time (its console keeps every boot)."""
    deadline = time.monotonic() + BOOT_SECONDS
    while app.console(vm).count(READY_LINE) < count:
        assert time.monotonic() < deadline, f"{vm} did not boot {count} times:\n{app.console(vm)[-2000:]}"
        time.sleep(0.3)


def write_marker(app, vm: str, text: str) -> None:
    type_line(app, vm, f"printf {text} | dd of=/dev/vdb bs=1 seek={OFFSET} conv=notrunc 2>/dev/null; sync")


def read_marker(app, vm: str) -> str:
    return ask(app, vm, f"dd if=/dev/vdb bs=1 skip={OFFSET} count=8 2>/dev/null")


@pytest.fixture(scope="module")
def guest(app):
    """One running guest with a data disk, shared by the tests of this module."""
    app.create_vm("disk1", disks=[{"name": "data", "size": 16}])
    app.wait_console("disk1", READY_LINE, BOOT_SECONDS)
    return "disk1"


def test_a_disk_only_revert_brings_a_marker_back_on_a_running_guest(app, snaps, guest):
    write_marker(app, "disk1", "MARKER-1")
    assert read_marker(app, "disk1") == "MARKER-1"
    taken = snaps.take("disk1", "before")
    assert taken["state"] == "ready" and taken["memory"] is False and taken["vm_state"] == "running"
    assert taken["size"] > 0 and taken["current"]
    write_marker(app, "disk1", "MARKER-2")
    assert read_marker(app, "disk1") == "MARKER-2"

    snaps.revert("disk1", "before")
    # Powered off and booted on the reverted disks: a second boot, the first marker.
    vm = app.wait_state("disk1", "running")
    assert vm["desired_state"] == "running"
    wait_boots(app, "disk1", 2)
    assert read_marker(app, "disk1") == "MARKER-1"

    # A second snapshot's parent is the first; deleting the first keeps the second usable.
    second = snaps.take("disk1", "after")
    assert second["parent"] == "before"
    snaps.ok(snaps.service.delete_snapshot("disk1", "before"))
    assert [s["name"] for s in snaps.service.list_snapshots("disk1")] == ["after"]
    assert snaps.service.get_snapshot("disk1", "after")["parent"] is None


def counter(app, vm: str, timeout: float = 60) -> int:
    """The guest's counter; asked again while the loop has not written its first value
    (typed in the background, it may not have run yet on a loaded machine: ci1 read '')."""
    deadline = time.monotonic() + timeout
    while True:
        value = ask(app, vm, "cat /tmp/count 2>/dev/null")
        if value.isdigit() or time.monotonic() > deadline:
            return int(value)
        time.sleep(0.5)


def test_a_memory_revert_continues_the_counter_from_the_snapshot(app, snaps, guest):
    wait_boots(app, "disk1", 1)
    type_line(app, "disk1", "(i=0; while :; do i=$((i+1)); echo $i > /tmp/count; sleep 1; done) &")
    before = counter(app, "disk1")
    taken = snaps.take("disk1", "counting", memory=True)
    assert taken["memory"] is True and taken["size"] > 0
    after = counter(app, "disk1")
    time.sleep(6)
    later = counter(app, "disk1")
    assert later >= after + 3

    snaps.revert("disk1", "counting")
    vm = app.wait_state("disk1", "running")
    assert vm["restart_required"] is False  # the same hardware as the snapshot's
    resumed = counter(app, "disk1")
    assert before <= resumed < later  # back to the snapshot's value, not a reboot's 1 ...
    time.sleep(3)
    assert counter(app, "disk1") > resumed  # ... and the loop runs on: its process came back


def test_snapshots_survive_a_restart_of_the_appliance(app, snaps):
    app.create_vm("keep1", state="stopped")
    app.wait_state("keep1", "stopped")
    snaps.take("keep1", "s1", description="kept")
    app.stop()
    app.start()
    shown = SnapshotClient(app).service.get_snapshot("keep1", "s1")
    assert shown["state"] == "ready" and shown["description"] == "kept"
    snaps.revert("keep1", "s1")
    assert app.api("GET", "/v1/vms/keep1").json()["state"] == "stopped"


def test_a_renamed_vm_keeps_its_snapshots(app, snaps):
    """libvirt 9.0 renames a stopped domain with snapshots and moves their metadata."""
    resp = app.api("PATCH", "/v1/vms/keep1", json={"name": "keep2"})
    assert resp.status_code == 200, resp.text
    names = app.domain_names()
    assert app.prefix + "keep2" in names and app.prefix + "keep1" not in names
    snaps.revert("keep2", "s1")
    snaps.take("keep2", "s2")
    conn = libvirt.open(app.libvirt_uri)
    try:
        dom = conn.lookupByName(app.prefix + "keep2")
        assert sorted(s.getName() for s in dom.listAllSnapshots()) == ["s1", "s2"]
    finally:
        conn.close()

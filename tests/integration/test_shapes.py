"""Suspend (libvirt's managed save) and rebuild of one real TCG guest under a
real `vmctl serve` (issue 14, part E), looked at through its serial console:
a counter loop and the uptime carry on after a resume (no second boot), the
suspended guest's QEMU is gone and its RAM released from the host's claim;
a rebuild wipes what was written on the root disk, keeps the data disk and
the MAC, and cloud-init sees a new instance-id."""
from __future__ import annotations

import os
import re
import time

import libvirt
import pytest

from tests.appliance_process import BOOT_LINE, LIBVIRT_URI, READY_LINE
from tests.snapshot_helpers import ask, type_line

pytestmark = pytest.mark.integration

BOOT_SECONDS = 120
ROOT_OFFSET = 60 * 1024 * 1024  # past the demo image's files on its 64 MiB FAT root disk
DATA_OFFSET = 3 * 1024 * 1024


@pytest.fixture(scope="module")
def app(unmounted_appliance):
    return unmounted_appliance


@pytest.fixture(scope="module")
def guest(app):
    """One running guest with a data disk, shared by this module's tests."""
    app.create_vm("life1", disks=[{"name": "data", "size": 16}])
    app.wait_console("life1", READY_LINE, BOOT_SECONDS)
    return "life1"


def put_state(app, vm: str, state: str) -> dict:
    resp = app.api("PUT", f"/v1/vms/{vm}/state", json={"state": state})
    assert resp.status_code == 200, resp.text
    return resp.json()


def domain(app, vm: str) -> libvirt.virDomain:
    conn = libvirt.open(LIBVIRT_URI)
    return conn.lookupByName(app.prefix + vm)


def allocated_mib(app) -> int:
    return app.api("GET", "/v1/hosts/local").json()["allocated"]["memory_mib"]


def counter(app, vm: str) -> int:
    return int(ask(app, vm, "cat /tmp/c"))


def counted_until(app, vm: str, past: int, timeout: float = 30) -> int:
    """Ask the guest's counter until it is above `past` (it counts once a second)."""
    deadline = time.monotonic() + timeout
    while True:
        seen = ask(app, vm, "cat /tmp/c 2>/dev/null")
        if seen.isdigit() and int(seen) > past:
            return int(seen)
        assert time.monotonic() < deadline, f"the guest's counter stays at {seen!r}, not above {past}"
        time.sleep(0.3)


def uptime(app, vm: str) -> float:
    return float(ask(app, vm, "cut -d' ' -f1 /proc/uptime"))


def test_suspend_frees_the_ram_and_resume_continues_where_it_was(app, guest):
    type_line(app, guest, "(i=0; while true; do i=$((i+1)); echo $i > /tmp/c; sleep 1; done) &")
    counted_until(app, guest, 0)  # the loop runs
    assert allocated_mib(app) == 128
    before, up_before = counter(app, guest), uptime(app, guest)

    started = time.monotonic()
    vm = put_state(app, guest, "suspended")
    saved_in = time.monotonic() - started
    assert vm["state"] == "suspended" and vm["desired_state"] == "suspended"
    dom = domain(app, guest)
    assert not dom.isActive() and dom.hasManagedSaveImage(0)  # its QEMU is gone
    # libvirt keeps the save beside the domain's state, on the VM's host
    save = f"/var/lib/libvirt/qemu/save/{app.prefix}{guest}.save"
    assert os.path.getsize(save) > 1 << 20
    assert allocated_mib(app) == 0  # the host's RAM claim is released
    assert app.api("GET", "/v1/vms/life1/state", params={"format": "text"}).text == "suspended\n"
    # what does not fit a saved memory is refused with the reason
    resp = app.api("PATCH", "/v1/vms/life1", json={"cpus": 2})
    assert resp.status_code == 409 and resp.json()["field"] == "cpus", resp.text
    resp = app.api("POST", "/v1/vms/life1/snapshots", json={"name": "s1"})
    assert resp.status_code == 409 and "suspended" in resp.json()["reason"], resp.text
    time.sleep(3)

    started = time.monotonic()
    vm = put_state(app, guest, "running")
    resumed_in = time.monotonic() - started
    assert vm["state"] == "running" and allocated_mib(app) == 128
    after, up_after = counter(app, guest), uptime(app, guest)
    # where it was: the loop went on from its value and the kernel kept its uptime
    assert before <= after < before + 10, (before, after)
    assert up_after >= up_before
    assert app.console(guest).count(BOOT_LINE) == 1  # no second boot
    counted_until(app, guest, after)  # the loop runs on
    kinds = [e["kind"] for e in app.api("GET", "/v1/vms/life1/events",
                                        params={"format": "json"}).json()["items"]]
    assert "suspended" in kinds and "resumed" in kinds
    print(f"\nmanaged save {saved_in:.1f} s, restore {resumed_in:.1f} s (TCG, 128 MiB)")


def test_rebuild_reimages_the_root_disk_and_keeps_the_rest(app, guest):
    type_line(app, guest, f"printf ROOTMARK | dd of=/dev/vda bs=1 seek={ROOT_OFFSET} conv=notrunc "
              "2>/dev/null; printf DATAMARK | dd of=/dev/vdb bs=1 "
              f"seek={DATA_OFFSET} conv=notrunc 2>/dev/null; sync")
    read_root = f"dd if=/dev/vda bs=1 skip={ROOT_OFFSET} count=8 2>/dev/null | tr -cd A-Z"
    read_data = f"dd if=/dev/vdb bs=1 skip={DATA_OFFSET} count=8 2>/dev/null | tr -cd A-Z"
    assert ask(app, guest, read_root) == "ROOTMARK"
    assert ask(app, guest, read_data) == "DATAMARK"
    instance = ask(app, guest, "sed -n 's/^instance-id: //p' /mnt/cidata/meta-data")
    mac = ask(app, guest, "cat /sys/class/net/eth0/address")
    xml_mac = re.findall(r"<mac address='([^']+)'", app.api("GET", "/v1/vms/life1/domain.xml").text)
    boots = app.console(guest).count(READY_LINE)

    resp = app.api("POST", "/v1/vms/life1/rebuild", json={})
    assert resp.status_code == 200, resp.text
    assert resp.json()["state"] == "running" and resp.json()["spec"]["image"] == "demo"
    deadline = time.monotonic() + BOOT_SECONDS
    while app.console(guest).count(READY_LINE) <= boots:
        assert time.monotonic() < deadline, app.console(guest)[-2000:]
        time.sleep(0.3)
    assert ask(app, guest, read_root) == ""  # a new root disk: the marker is gone
    assert ask(app, guest, read_data) == "DATAMARK"  # the data disk is kept
    new_instance = ask(app, guest, "sed -n 's/^instance-id: //p' /mnt/cidata/meta-data")
    assert new_instance and new_instance != instance  # cloud-init sees a first boot
    assert ask(app, guest, "cat /sys/class/net/eth0/address") == mac
    assert re.findall(r"<mac address='([^']+)'",
                      app.api("GET", "/v1/vms/life1/domain.xml").text) == xml_mac
    # the file form: the image a rebuild uses; PATCH still never changes it
    assert app.api("GET", "/v1/vms/life1/rebuild", params={"format": "text"}).text == "demo\n"
    resp = app.api("PATCH", "/v1/vms/life1", json={"image": "other"})
    assert resp.status_code == 422 or resp.status_code == 400, resp.text

"""Backups of a real guest (issue 13, part B), through the REST API of a real
`vmctl serve`: a full then an incremental backup of a running guest (sizes,
chain, manifest, never paused), cancel, SIGKILL of the appliance in the middle
of a backup, and an in-place restore checked by a checksum read inside the guest.

One guest for the module: web1 with a 1 GiB data disk holding 768 MiB written
from the host before its first boot, so that a full backup runs long enough
to be cancelled or interrupted (RECIPES: ~3 s per GiB here).
"""
from __future__ import annotations

import itertools
import json
import re
import subprocess
import time
from pathlib import Path

import libvirt
import pytest

from appliance import backup_chain
from appliance.virt import images
from tests.appliance_process import READY_LINE, Appliance

pytestmark = pytest.mark.integration

MIB = 1 << 20
FILLED = 768 * MIB
OP_TIMEOUT = 300
_tags = itertools.count(500)


def guest(app: Appliance, vm: str, command: str, timeout: float = 180) -> str:
    """A shell command's one-line answer from the guest's root shell on its console
    (the typed line says `$((N+1))`, the answer N+1: the echo never matches)."""
    n = next(_tags)
    resp = app.api("PUT", f"/v1/vms/{vm}/console",
                   data=f'echo "OUT-$(({n}+1))-$({command})-END"\n'.encode(),
                   headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.text
    pattern = re.compile(rf"OUT-{n + 1}-(.*?)-END")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.search(app.console(vm))
        if found:
            return found.group(1).strip()
        time.sleep(0.5)
    raise AssertionError(f"no answer to {command!r} from {vm}:\n{app.console(vm)[-2000:]}")


def checksum(app: Appliance, offset_mib: int, count_mib: int) -> str:
    out = guest(app, "web1", f"dd if=/dev/vdb bs=1M skip={offset_mib} count={count_mib} "
                             "2>/dev/null | sha256sum")
    assert re.fullmatch(r"[0-9a-f]{64}", out.split()[0]), out
    return out.split()[0]


def write_random(app: Appliance, offset_mib: int, count_mib: int = 1) -> None:
    assert guest(app, "web1", f"dd if=/dev/urandom of=/dev/vdb bs=1M count={count_mib} "
                              f"seek={offset_mib} conv=fsync 2>/dev/null && sync && "
                              "echo written") == "written"


def operation(app: Appliance, op_id: str) -> dict:
    resp = app.api("GET", f"/v1/operations/{op_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def final(app: Appliance, op_id: str, timeout: float = OP_TIMEOUT) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        op = operation(app, op_id)
        if op["status"] in ("succeeded", "failed", "cancelled"):
            return op
        time.sleep(0.2)
    raise AssertionError(f"operation {op_id} not done in {timeout} s: {op}")


def start_backup(app: Appliance, **body) -> dict:
    resp = app.api("POST", "/v1/vms/web1/backups?wait=false", json=body)
    assert resp.status_code == 202, resp.text
    return resp.json()["operation"]


def backup(app: Appliance, **body) -> dict:
    op = final(app, start_backup(app, **body)["id"])
    assert op["status"] == "succeeded", op
    found = app.api("GET", f"/v1/backups/{op['params']['backup']}").json()
    assert found["status"] == "good", found
    return found


def listed(app: Appliance) -> list[dict]:
    return app.api("GET", "/v1/vms/web1/backups").json()["items"]


def wait_job_running(app: Appliance, op_id: str, folder: Path) -> dict:
    """The operation once libvirt's job writes into the backup's .partial folder."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        op = operation(app, op_id)
        backup_id = op["params"].get("backup")
        if backup_id and (folder / f"{backup_id}.partial" / "disk-data.qcow2").exists():
            return op
        assert op["status"] in ("pending", "running"), op
        time.sleep(0.05)
    raise AssertionError(f"the backup job never started: {operation(app, op_id)}")


def no_partial_and_every_good_one_complete(app: Appliance, folder: Path) -> None:
    assert not list(folder.glob("*.partial")), list(folder.iterdir())
    for item in listed(app):
        if item["status"] == "good":
            assert backup_chain.read_manifest(folder / item["id"])["id"] == item["id"]
        else:
            assert not (folder / item["id"]).exists()


@pytest.fixture(scope="module")
def target(appliance, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("nas")
    resp = appliance.api("POST", "/v1/backup-targets", json={"name": "nas", "path": str(path)})
    assert resp.status_code == 201, resp.text
    return path


@pytest.fixture(scope="module")
def web1(appliance, target) -> dict:
    vm = appliance.create_vm("web1", memory="128M", state="stopped",
                             disks=[{"name": "data", "size": "1G"}])
    appliance.wait_state("web1", "stopped", 120)
    data = appliance.home / "vms" / vm["id"] / "disk-data.qcow2"
    deadline = time.monotonic() + 60
    while not data.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    subprocess.run(["qemu-io", "-f", "qcow2", "-c", f"write -P 0x5a 0 {FILLED}", str(data)],
                   check=True, capture_output=True, timeout=300)
    set_state(appliance, "running")
    return vm


def set_state(app: Appliance, state: str) -> None:
    """Stopped, or running with its shell ready (this boot's ready line, not an earlier one's)."""
    boots = app.console("web1").count(READY_LINE)
    resp = app.api("PUT", "/v1/vms/web1/state", json={"state": state})
    assert resp.status_code == 200, resp.text
    app.wait_state("web1", state, 180)
    deadline = time.monotonic() + 180
    while state == "running" and app.console("web1").count(READY_LINE) <= boots:
        assert time.monotonic() < deadline, app.console("web1")[-2000:]
        time.sleep(0.5)


def only_checkpoint(dom: libvirt.virDomain, timeout: float = 30) -> str | None:
    """The domain's one checkpoint (None if it has another number of them), once the
    older ones are dropped: right after the operation succeeded (its follow-up)."""
    deadline = time.monotonic() + timeout
    while len(names := [c.getName() for c in dom.listAllCheckpoints()]) != 1:
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)
    return names[0]


def domain(app: Appliance) -> libvirt.virDomain:
    return libvirt.open(app.libvirt_uri).lookupByName(app.prefix + "web1")


def test_full_then_incremental_of_a_running_guest(appliance, target, web1):
    folder = target / "vm-appliance" / web1["id"]
    op = start_backup(appliance)
    dom = domain(appliance)
    states = set()
    while operation(appliance, op["id"])["status"] in ("pending", "running"):
        states.add(dom.state()[0])
        time.sleep(0.05)
    assert states == {libvirt.VIR_DOMAIN_RUNNING}  # never paused
    done = final(appliance, op["id"])
    assert done["status"] == "succeeded", done
    full = appliance.api("GET", f"/v1/backups/{done['params']['backup']}").json()
    assert full["kind"] == "full" and full["status"] == "good"
    data = next(d for d in full["disks"] if d["name"] == "data")
    assert data["virtual_size"] == 1024 * MIB and data["bytes"] >= FILLED
    assert done["bytes_total"] >= FILLED and done["bytes_done"] == full["size"]
    manifest = json.loads((folder / full["id"] / "manifest.json").read_text())
    assert manifest["kind"] == "full" and manifest["vm"]["name"] == "web1"
    assert [d["name"] for d in manifest["disks"]] == ["root", "data"]

    write_random(appliance, 900)
    inc = backup(appliance)
    assert inc["kind"] == "incremental" and inc["parent"] == full["id"]
    assert inc["depends_on"] == [full["id"]] and inc["chain"] == full["id"]
    inc_data = next(d for d in inc["disks"] if d["name"] == "data")
    assert inc_data["bytes"] < 8 * MIB  # the changed clusters, not the disk
    assert images.qcow2_backing(folder / inc["id"] / "disk-data.qcow2") == (
        f"../{full['id']}/disk-data.qcow2", "qcow2")
    assert [m["id"] for m in backup_chain.verify_chain(target, web1["id"], inc["id"])] == [
        full["id"], inc["id"]]
    assert only_checkpoint(dom) == inc["id"]
    assert appliance.api("GET", "/v1/vms/web1").json()["state"] == "running"


def test_cancel_aborts_and_leaves_nothing(appliance, target, web1):
    folder = target / "vm-appliance" / web1["id"]
    op = start_backup(appliance, full=True)
    running = wait_job_running(appliance, op["id"], folder)
    resp = appliance.api("DELETE", f"/v1/operations/{op['id']}")
    assert resp.status_code in (200, 202), resp.text
    done = final(appliance, op["id"])
    assert done["status"] == "cancelled", done
    cancelled = appliance.api("GET", f"/v1/backups/{running['params']['backup']}").json()
    assert cancelled["status"] == "failed" and cancelled["error"] == "cancelled"
    no_partial_and_every_good_one_complete(appliance, folder)
    assert not domain(appliance).jobInfo()[0]  # no job left on the domain
    after = backup(appliance)  # the next one works, still incremental on the last good one
    assert after["kind"] == "incremental"


def test_sigkill_mid_backup_then_restart(appliance, target, web1):
    folder = target / "vm-appliance" / web1["id"]
    op = start_backup(appliance, full=True)
    interrupted = wait_job_running(appliance, op["id"], folder)["params"]["backup"]
    appliance.kill()  # SIGKILL mid-job: libvirtd's job goes on without the appliance
    appliance.start()
    done = final(appliance, op["id"])
    assert done["status"] in ("succeeded", "failed"), done  # finished or failed cleanly
    old = appliance.api("GET", f"/v1/backups/{interrupted}").json()
    assert old["status"] == "failed" and "interrupted" in old["error"]
    no_partial_and_every_good_one_complete(appliance, folder)
    nxt = backup(appliance)  # the next one works
    assert backup_chain.verify_chain(target, web1["id"], nxt["id"])


def test_in_place_restore(appliance, target, web1):
    before = checksum(appliance, 0, 8)  # the 4 MiB written below and 4 MiB it leaves
    point = backup(appliance)
    write_random(appliance, 0, 4)
    assert checksum(appliance, 0, 8) != before
    set_state(appliance, "stopped")
    resp = appliance.api("POST", f"/v1/backups/{point['id']}/restore?wait=false", json={})
    assert resp.status_code == 202, resp.text
    done = final(appliance, resp.json()["operation"]["id"])
    assert done["status"] == "succeeded", done
    assert done["bytes_done"] == done["bytes_total"] >= 1024 * MIB
    set_state(appliance, "running")
    assert checksum(appliance, 0, 8) == before
    after = backup(appliance)  # the disks were replaced: a new chain
    assert after["kind"] == "full"


def test_a_bitmap_lost_in_qemu_makes_a_full_backup_that_says_why(appliance, target, web1):
    """The base checkpoint is on the domain but QEMU lost its bitmap on a disk
    (as a QEMU killed before storing it leaves it): libvirt's backupBegin says
    "checkpoint inconsistent"; the backup is a full one and its event says why."""
    import libvirt_qemu

    dom = domain(appliance)
    base = only_checkpoint(dom)
    assert base is not None
    nodes = json.loads(libvirt_qemu.qemuMonitorCommand(dom, json.dumps(
        {"execute": "query-named-block-nodes", "arguments": {"flat": True}}), 0))["return"]
    holders = [n["node-name"] for n in nodes
               if any(b.get("name") == base for b in n.get("dirty-bitmaps", []))]
    assert holders, nodes
    libvirt_qemu.qemuMonitorCommand(dom, json.dumps({"execute": "block-dirty-bitmap-remove",
                                                     "arguments": {"node": holders[0], "name": base}}), 0)
    again = backup(appliance)
    assert again["kind"] == "full" and again["parent"] is None
    events = appliance.api("GET", "/v1/events", params={"vm": "web1"}).json()["items"]
    why = [e["message"] for e in events if e["kind"] == "backup-full-instead"]
    assert why and "missing or broken bitmap" in why[-1], why
    assert images.qcow2_backing(target / "vm-appliance" / web1["id"] / again["id"]
                                / "disk-data.qcow2") == (None, None)
    nxt = backup(appliance)  # the chain goes on from the new full
    assert nxt["kind"] == "incremental" and nxt["parent"] == again["id"]

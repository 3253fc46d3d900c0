"""The demo guest's qemu-guest-agent, through a real `vmctl serve`: the
guest_agent_ping readiness probe, and backups quiesced by freezing the guest's
file systems (issue 13: "with the guest agent present the guest's filesystems
are frozen for the instant of the checkpoint").

One guest for the module: qga1 with a small data disk. Inside it, the agent's
fsfreeze hook logs "freeze" and "thaw" lines in /var/log/fsfreeze.log
(packaging/demo-guest/fsfreeze-hook): the agent runs it just before freezing
and just after thawing, so the log is the guest's own account of the freeze.
The tests run in order: no file system to freeze, then an ext2 file system on
the data disk frozen for a backup, then a freeze the hook vetoes, then a file
system the guest froze itself.
"""
from __future__ import annotations

import json
import time

import libvirt
import libvirt_qemu
import pytest

from tests.appliance_process import READY_LINE, Appliance
from tests.integration.test_backups import final, guest

pytestmark = pytest.mark.integration

VM = "qga1"


def agent(app: Appliance, command: str) -> object:
    """A guest agent command's "return", asked through libvirt as `virsh qemu-agent-command`."""
    conn = libvirt.open(app.libvirt_uri)
    try:
        dom = conn.lookupByName(app.prefix + VM)
        return json.loads(libvirt_qemu.qemuAgentCommand(
            dom, json.dumps({"execute": command}), 30, 0))["return"]
    finally:
        conn.close()


def back_up(app: Appliance) -> tuple[dict, list[str]]:
    """A backup of the guest and the backup-not-quiesced events it added."""
    before = len(not_quiesced(app))
    resp = app.api("POST", f"/v1/vms/{VM}/backups?wait=false", json={})
    assert resp.status_code == 202, resp.text
    op = final(app, resp.json()["operation"]["id"])
    assert op["status"] == "succeeded", op
    found = app.api("GET", f"/v1/backups/{op['params']['backup']}").json()
    assert found["status"] == "good", found
    return found, not_quiesced(app)[before:]


def not_quiesced(app: Appliance) -> list[str]:
    items = app.api("GET", f"/v1/vms/{VM}/events").json()["items"]
    return sorted((e["id"], e["message"]) for e in items if e["kind"] == "backup-not-quiesced")


def manifest_quiesced(found: dict) -> bool:
    with open(f"{found['path']}/manifest.json") as f:
        return json.load(f)["quiesced"]


def freeze_log(app: Appliance) -> list[str]:
    """The fsfreeze hook's lines ("UPTIME freeze|thaw"), as the guest logged them."""
    out = guest(app, VM, "cat /var/log/fsfreeze.log 2>/dev/null | tr '\\n' ,")
    return [line.split()[1] for line in out.split(",") if line.strip()]


@pytest.fixture(scope="module")
def qga1(appliance, tmp_path_factory) -> dict:
    resp = appliance.api("POST", "/v1/backup-targets",
                         json={"name": "nas", "path": str(tmp_path_factory.mktemp("nas"))})
    assert resp.status_code == 201, resp.text
    vm = appliance.create_vm(VM, memory="128M", disks=[{"name": "data", "size": "64M"}],
                             readiness_probe={"guest_agent_ping": {}, "period_seconds": 1})
    appliance.wait_console(VM, READY_LINE, 180)
    return vm


def test_the_agent_ping_makes_the_guest_ready(appliance, qga1):
    deadline = time.monotonic() + 120
    while not (shown := appliance.api("GET", f"/v1/vms/{VM}").json())["ready"]:
        assert time.monotonic() < deadline, shown
        time.sleep(0.5)
    events = appliance.api("GET", f"/v1/vms/{VM}/events").json()["items"]
    assert "ready" in [e["kind"] for e in events]
    assert agent(appliance, "guest-ping") == {}
    # the agent runs from the guest's init on its virtio port
    assert guest(appliance, VM, "pidof qemu-ga >/dev/null && echo running") == "running"


def test_nothing_to_freeze_is_a_crash_consistent_backup(appliance, qga1):
    # Only the initramfs and virtual file systems: the agent freezes none of them.
    found, why = back_up(appliance)
    assert found["quiesced"] is False and manifest_quiesced(found) is False
    assert [m for _, m in why] == [f"backup {found['id']} is crash-consistent: the guest agent "
                                   "froze no file system"]
    assert agent(appliance, "guest-fsfreeze-status") == "thawed"


def test_a_mounted_file_system_is_frozen_for_the_checkpoint(appliance, qga1):
    assert guest(appliance, VM, "mke2fs -q /dev/vdb >/dev/null && mkdir -p /mnt/data && "
                                "mount -t ext2 /dev/vdb /mnt/data && echo before >/mnt/data/f "
                                "&& echo mounted") == "mounted"
    hooks = len(freeze_log(appliance))
    found, why = back_up(appliance)
    assert found["quiesced"] is True and manifest_quiesced(found) is True
    assert why == []
    # the guest saw the freeze, then the thaw, once each for this backup
    assert freeze_log(appliance)[hooks:] == ["freeze", "thaw"]
    assert agent(appliance, "guest-fsfreeze-status") == "thawed"
    # and its file system takes writes again
    assert guest(appliance, VM, "echo after >/mnt/data/g && sync && cat /mnt/data/f /mnt/data/g "
                                "| tr '\\n' ' '", timeout=60) == "before after"


def test_a_freeze_the_agent_cannot_do_still_backs_up(appliance, qga1):
    # The guest's fsfreeze hook vetoes the freeze (as an application's hook that
    # cannot flush would): the agent fails guest-fsfreeze-freeze.
    assert guest(appliance, VM, "touch /run/fsfreeze-refuse && echo refusing") == "refusing"
    hooks = len(freeze_log(appliance))
    found, why = back_up(appliance)
    assert found["quiesced"] is False and manifest_quiesced(found) is False
    [(_, message)] = why
    assert message.startswith(f"backup {found['id']} is crash-consistent: the guest agent did "
                              "not freeze its file systems: ")
    assert "fsfreeze hook has failed with status 1" in message
    assert freeze_log(appliance)[hooks:][:1] == ["freeze"]  # asked, and refused
    assert agent(appliance, "guest-fsfreeze-status") == "thawed"
    assert guest(appliance, VM, "rm /run/fsfreeze-refuse && echo again >/mnt/data/h && sync "
                                "&& cat /mnt/data/h", timeout=60) == "again"


def test_a_file_system_frozen_already_is_not_counted(appliance, qga1):
    # Frozen by the guest itself: the agent's FIFREEZE gets EBUSY, which it skips,
    # so it froze nothing (and its thaw thaws this one too).
    assert guest(appliance, VM, "fsfreeze --freeze /mnt/data && echo frozen") == "frozen"
    found, why = back_up(appliance)
    assert found["quiesced"] is False
    assert [m for _, m in why] == [f"backup {found['id']} is crash-consistent: the guest agent "
                                   "froze no file system"]
    assert agent(appliance, "guest-fsfreeze-status") == "thawed"
    assert guest(appliance, VM, "fsfreeze --unfreeze /mnt/data 2>/dev/null; echo last "
                                ">/mnt/data/i && sync && cat /mnt/data/i", timeout=60) == "last"

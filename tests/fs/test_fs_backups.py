"""Issue 13 in the mount, with real shell commands: vms/NAME/snapshots/ (mkdir takes a
snapshot, rmdir deletes it, S/info.json, `echo revert > S/action`), vms/NAME/backups/ID.json
and backup-targets/NAME.json (fs/backup_tree.py), on a controller on libvirt's test
driver (which keeps snapshots as libvirt does). Refused input changes nothing, fails
with the errno DESIGN.md gives its class, and leaves a `refused` event.

One mount for the module: each test works on its own VM."""
from __future__ import annotations

import errno
import json
import os
import time

import pytest

from appliance import backup_chain
from tests.fs.conftest import Mount, refused, run


@pytest.fixture(scope="module")
def m(tmp_path_factory):
    mount = Mount(tmp_path_factory.mktemp("fs-backups"))
    try:
        yield mount.start()
    finally:
        mount.stop()


def test_a_shell_takes_reads_reverts_and_deletes_snapshots(m):
    m.mkvm("snap1", state="running")
    assert run(m, "ls vms/snap1/snapshots") == ""
    run(m, "mkdir vms/snap1/snapshots/before-upgrade")  # returns when it is taken
    assert run(m, "ls vms/snap1/snapshots") == "before-upgrade\n"
    assert run(m, "ls -U vms/snap1/snapshots/before-upgrade") == "info.json\naction\n"
    info = json.loads(run(m, "cat vms/snap1/snapshots/before-upgrade/info.json"))
    assert info == m.service.get_snapshot("snap1", "before-upgrade")
    assert info["state"] == "ready" and info["memory"] is False and info["vm_state"] == "running"
    assert run(m, "cat vms/snap1/snapshots/before-upgrade/action") == ""
    run(m, "mkdir vms/snap1/snapshots/after")
    assert json.loads(run(m, "cat vms/snap1/snapshots/after/info.json"))["parent"] == \
        "before-upgrade"
    run(m, "echo revert > vms/snap1/snapshots/before-upgrade/action")  # waits for the revert
    reverts = [op for op in m.service.list_operations(vm="snap1") if op["kind"] == "revert"]
    assert [op["status"] for op in reverts] == ["succeeded"]
    assert m.service.get_snapshot("snap1", "before-upgrade")["current"] is True
    run(m, "rmdir vms/snap1/snapshots/after")
    assert run(m, "ls vms/snap1/snapshots") == "before-upgrade\n"
    # The same directory under projects/P/vms/ is the same VM's.
    assert run(m, "ls projects/default/vms/snap1/snapshots") == "before-upgrade\n"
    run(m, "mkdir projects/default/vms/snap1/snapshots/via-project")
    assert [s["name"] for s in m.service.list_snapshots("snap1")] == ["before-upgrade",
                                                                     "via-project"]


def _state(m: Mount, vm: str) -> tuple:
    return (m.service.list_snapshots(vm), [op["id"] for op in m.service.list_operations(vm=vm)],
            sorted(os.listdir(m.vm(vm) / "snapshots")))


# (command, errno, recorded): the kernel answers some from its lookup of the name (taken,
# or missing) without asking the mount, which then has nothing to record.
REFUSALS = [
    ("mkdir vms/snap2/snapshots/taken", errno.EEXIST, False),  # a name taken
    ("mkdir vms/snap2/snapshots/Bad_Name", errno.EINVAL, True),
    ("mkdir $'vms/snap2/snapshots/a\\nb'", errno.EINVAL, True),
    ("mkdir vms/snap2/snapshots/" + "x" * 64, errno.EINVAL, True),
    ("echo explode > vms/snap2/snapshots/taken/action", errno.EINVAL, True),
    # one write(2) past the value cap (4 KiB), as dd makes it (a shell's printf writes 4 KiB
    # at a time: the first part is then a value of its own)
    ("head -c 5000 /dev/zero | tr '\\0' x | dd of=vms/snap2/snapshots/taken/action bs=5000"
     " count=1 iflag=fullblock status=none", errno.EFBIG, True),
    ("echo x > vms/snap2/snapshots/taken/info.json", errno.EACCES, True),
    ("touch vms/snap2/snapshots/taken/new", errno.EACCES, True),
    ("mkdir vms/snap2/snapshots/taken/deeper", errno.EACCES, True),
    ("mv vms/snap2/snapshots/taken vms/snap2/snapshots/moved", errno.EACCES, True),
    ("mkdir vms/snap2/backups/b1", errno.EACCES, True),
    ("rmdir vms/snap2/snapshots/nothing", errno.ENOENT, False),
    ("mkdir vms/nothing/snapshots/s1", errno.ENOENT, False),
]


def _refusals(m: Mount) -> list[str]:
    return [e["message"] for e in m.service.list_events(limit=10000) if e["kind"] == "refused"]


def test_refused_snapshot_changes_change_nothing_and_leave_an_event(m):
    m.mkvm("snap2")
    run(m, "mkdir vms/snap2/snapshots/taken")
    before = _state(m, "snap2")
    for command, code, recorded in REFUSALS:
        seen = len(_refusals(m))
        refused(m, command, code)
        assert _state(m, "snap2") == before, command
        if recorded:  # who, what, and why: the service's reason, or the policy's
            assert len(_refusals(m)) == seen + 1, command
    reasons = [(e["message"], e["result"]) for e in m.service.list_events(limit=10000)
               if e["kind"] == "refused"]
    assert ("write vms/snap2/snapshots/taken/action",
            "EINVAL Invalid: 'explode' is not an action; known: revert") in reasons
    assert ("write vms/snap2/snapshots/taken/action", "EFBIG") in reasons
    assert any(what == "mkdir vms/snap2/snapshots/Bad_Name" and why.startswith(
        "EINVAL Invalid: must be a") for what, why in reasons)


def test_backups_and_targets_are_read_only_json(m, tmp_path):
    m.mkvm("bk1")
    m.mkvm("bk2")
    (tmp_path / "nas").mkdir()
    target = m.service.add_backup_target({"name": "nas", "path": str(tmp_path / "nas")})
    assert run(m, "ls backup-targets") == "nas.json\n"
    shown = json.loads(run(m, "cat backup-targets/nas.json"))
    assert shown["path"] == target["path"] and shown["name"] == "nas"
    ids = {}
    for vm in ("bk1", "bk2"):
        row = m.service.vm_row(vm)
        ids[vm] = backup_chain.new_backup_id(time.time())
        m.service.store.insert_backup({
            "id": ids[vm], "vm_id": row["id"], "vm_name": vm, "project": "default",
            "target": "nas", "kind": "full", "parent": None, "chain": ids[vm],
            "checkpoint": None, "status": "good", "disks": [], "size": 1 << 20,
            "created": time.time(), "finished": time.time()})
        time.sleep(1.01)  # the ids are by the second
    assert run(m, "ls vms/bk1/backups") == f"{ids['bk1']}.json\n"
    backup = json.loads(run(m, f"cat vms/bk1/backups/{ids['bk1']}.json"))
    assert backup == m.service.get_backup(ids["bk1"])
    assert backup["kind"] == "full" and backup["depends_on"] == []
    # another VM's backup is not under this one; nothing here is written or removed
    refused(m, f"cat vms/bk1/backups/{ids['bk2']}.json", errno.ENOENT)
    refused(m, f"echo x > vms/bk1/backups/{ids['bk1']}.json", errno.EACCES)
    refused(m, f"rm vms/bk1/backups/{ids['bk1']}.json", errno.EACCES)
    refused(m, "echo '{}' > backup-targets/new.json", errno.EACCES)
    refused(m, "rm backup-targets/nas.json", errno.EACCES)
    refused(m, "cat backup-targets/nas", errno.ENOENT)
    assert [b["id"] for b in m.service.list_backups()] == [ids["bk2"], ids["bk1"]]
    assert [t["name"] for t in m.service.list_backup_targets()] == ["nas"]

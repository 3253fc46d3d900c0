"""vmctl snapshot, snapshots, revert, snapshot-delete, backup-target, backup, backups,
restore, clone against the real REST app served over HTTP in a thread (the controller
on libvirt's test driver); and the progress bar of a followed operation."""
from __future__ import annotations

import io
import json
import time

import pytest

from appliance import backup_chain
from appliance.cli.progress import bar, follow

@pytest.fixture
def web1(vmctl, controller):
    code, out, err = vmctl("create", "web1")
    assert code == 0, err
    return out


def test_snapshot_list_revert_delete(vmctl, service, web1):
    code, out, err = vmctl("snapshot", "web1", "before", "--description", "pre-upgrade")
    assert (code, out) == (0, "web1: snapshot before taken (disks only)\n"), err
    code, out, _ = vmctl("snapshot", "web1", "live", "--memory")
    assert (code, out) == (0, "web1: snapshot live taken (with memory)\n")
    code, out, _ = vmctl("snapshots", "web1")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "CREATED", "MEMORY", "STATE", "VM", "STATE", "PARENT",
                              "CURRENT", "DESCRIPTION"]
    assert [row.split()[0] for row in rows] == ["before", "live"]
    assert rows[0].split()[3:5] == ["no", "ready"] and rows[0].endswith("pre-upgrade")
    assert rows[1].split()[3:5] == ["yes", "ready"] and "*" in rows[1].split()
    assert vmctl("revert", "web1", "before")[:2] == (0, "web1: reverted to before\n")
    assert service.get_snapshot("web1", "before")["current"] is True
    assert vmctl("snapshot-delete", "web1", "live")[:2] == (0, "web1: snapshot live deleted\n")
    code, out, _ = vmctl("--json", "snapshots", "web1")
    assert [s["name"] for s in json.loads(out)] == ["before"]


def test_no_wait_prints_the_operation(vmctl, service, web1):
    code, out, _ = vmctl("snapshot", "web1", "quick", "--no-wait")
    assert code == 0 and out.startswith("accepted: operation ")
    op_id = out.split()[-1]
    assert service.get_operation(op_id)["kind"] == "snapshot"
    code, out, _ = vmctl("--json", "revert", "web1", "quick", "--no-wait")
    assert code == 0 and json.loads(out)["operation"]["kind"] == "revert"


def test_refusals_name_the_field_and_exit_1(vmctl, service, web1):
    code, _, err = vmctl("snapshot", "web1", "Bad_Name")
    assert code == 1 and "HTTP 422" in err and "(field: name)" in err
    code, _, err = vmctl("revert", "web1", "nothing")
    assert code == 1 and "HTTP 404" in err
    assert service.list_snapshots("web1") == []


def test_a_failed_operation_exits_1_with_its_reason(vmctl, tmp_path, web1):
    (tmp_path / "nas").mkdir()
    assert vmctl("backup-target", "add", "nas", str(tmp_path / "nas"))[0] == 0
    code, _, err = vmctl("backup", "web1")  # the test driver has no backup job
    assert code == 1 and err.startswith("vmctl backup: backup failed: ")


def test_backup_targets_and_backups(vmctl, service, tmp_path, web1):
    (tmp_path / "nas").mkdir()
    code, out, err = vmctl("backup-target", "add", "nas", str(tmp_path / "nas"))
    assert code == 0 and out.startswith(f"nas: {tmp_path / 'nas'} (") and "free)" in out, err
    code, out, _ = vmctl("backup-target", "list")
    assert out.splitlines()[0].split() == ["NAME", "PATH", "FREE", "BACKUPS"]
    assert out.splitlines()[1].split()[:2] == ["nas", str(tmp_path / "nas")]
    vm = service.vm_row("web1")
    backup_id = backup_chain.new_backup_id(time.time())
    service.store.insert_backup({
        "id": backup_id, "vm_id": vm["id"], "vm_name": "web1", "project": "default",
        "target": "nas", "kind": "full", "parent": None, "chain": backup_id,
        "checkpoint": None, "status": "good", "disks": [], "size": 3 << 20,
        "created": time.time(), "finished": time.time()})
    code, out, _ = vmctl("backups", "web1")
    header, row = out.splitlines()
    assert header.split() == ["ID", "VM", "KIND", "STATUS", "CREATED", "SIZE", "TARGET", "PARENT"]
    assert row.split()[:4] == [backup_id, "web1", "full", "good"]
    assert "3.0 MiB" in row and row.split()[-2:] == ["nas", "-"]
    code, out, _ = vmctl("backups", "--all-projects")  # the admin's: every project's
    assert out.splitlines()[0].split()[:2] == ["PROJECT", "ID"]
    assert out.splitlines()[1].split()[:2] == ["default", backup_id]
    code, _, err = vmctl("backup-target", "remove", "nas")
    assert code == 1 and "HTTP 409" in err
    code, _, err = vmctl("restore", "web2", "--backup", backup_id)
    assert code == 1 and "is of 'web1', not 'web2'" in err
    assert vmctl("backup-target", "remove", "nas", "--forget")[:2] == (0, "nas: removed\n")


def test_clone_no_wait(vmctl, service, web1):
    code, out, _ = vmctl("--json", "clone", "web1", "web2", "--no-wait")
    assert code == 0
    answer = json.loads(out)
    assert answer["vm"]["name"] == "web2" and answer["operation"]["kind"] == "create"
    code, _, err = vmctl("clone", "web1", "web1")
    assert code == 1 and "HTTP 409" in err and "(field: name)" in err


# -- the progress bar ------------------------------------------------------------------------------
class _Polled:
    """A client whose operation copies 3 MiB of 4 and ends, one step per GET."""

    def __init__(self, steps: list[dict]):
        self.steps = steps
        self.asked: list[tuple[str, dict]] = []

    def get(self, path: str, **query):
        self.asked.append((path, query))
        return self.steps.pop(0)


def _op(status: str, done: int | None, total: int | None) -> dict:
    return {"id": "op1", "kind": "backup", "status": status, "bytes_done": done,
            "bytes_total": total}


def test_follow_draws_the_bytes_done_on_a_terminal():
    client = _Polled([_op("running", 1 << 20, 4 << 20), _op("running", 3 << 20, 4 << 20),
                      _op("succeeded", 3 << 20, 4 << 20)])  # an unallocated MiB skipped
    out = io.StringIO()
    final = follow(client, _op("pending", None, None), stream=out, tty=True)
    assert final["status"] == "succeeded"
    assert client.asked == [("/v1/operations/op1", {"wait": 1.0})] * 3  # long polls
    frames = out.getvalue().split("\r")[1:]
    assert frames[0].strip() == "backup: pending"
    assert "[#######.......................]  25%  1.0/4.0 MiB" in frames[1]
    assert " 75%  3.0/4.0 MiB" in frames[2]
    assert frames[-1].endswith("100%  4.0/4.0 MiB\n")


def test_follow_is_silent_off_a_terminal():
    out = io.StringIO()
    follow(_Polled([_op("failed", 1, 2)]), _op("running", 0, 2), stream=out, tty=False)
    assert out.getvalue() == ""


def test_bar_bounds_what_the_server_says():
    assert bar(_op("running", 9 << 20, 4 << 20)).startswith("backup [" + "#" * 30 + "] 100%")
    assert bar(_op("running", None, 0)) == "backup: running"


def test_ctrl_c_stops_following_and_says_how_to_cancel():
    class Interrupted(_Polled):
        def get(self, path: str, **query):
            if len(self.asked) == 1:
                raise KeyboardInterrupt
            return super().get(path, **query)

    out = io.StringIO()
    with pytest.raises(KeyboardInterrupt):
        follow(Interrupted([_op("running", 1 << 20, 4 << 20)]), _op("pending", None, None),
               stream=out, tty=True)
    last = out.getvalue().split("\r")[-1]
    assert last.endswith("\nvmctl: stopped following; the backup goes on (operation op1). "
                         "To cancel it: vmctl cancel op1\n")


def test_vmctl_cancel(vmctl, service):
    """No controller here: the operations stay as the test puts them."""
    vm, create = service.create_vm({"name": "web1", "state": "stopped"})
    code, _, err = vmctl("cancel", create["id"])
    assert code == 1 and "HTTP 409" in err and "create cannot be cancelled" in err
    service.store.update_operation(create["id"], status="succeeded")
    start = service.set_state("web1", "running")
    assert vmctl("cancel", start["id"])[:2] == (0, f"start {start['id']}: cancelled\n")
    assert service.get_operation(start["id"])["status"] == "cancelled"
    row = service.store.get_vm_by_id(vm["id"])
    backup = service.store.add_operation("backup-op-1", row, "backup", {"target": "nas"})
    service.store.update_operation(backup["id"], status="running")
    code, out, _ = vmctl("--json", "cancel", backup["id"])
    assert code == 0 and json.loads(out)["params"]["cancel"] is True
    code, _, err = vmctl("cancel", "../vms/web1")  # never a path of another resource
    assert code == 2 and "not an operation id" in err
    assert service.store.get_vm_by_id(vm["id"]) is not None

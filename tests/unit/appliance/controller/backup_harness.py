"""What the backup and restore handlers' unit tests share: hosts on a given kind
of storage with one backup target, web1 running with a data disk, a backup run
inline to its end, and web1's events of a kind."""
from __future__ import annotations

from pathlib import Path

from appliance import backup_chain
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle

HOSTS = {"local": URI_A, "b": URI_B}


def add_target(service, store, tmp_path: Path, storage: str) -> Path:
    """Every host keeps its disks on `storage` ("shared": the appliance's folders;
    "own-disk": its own); one backup target, nas, whose folder is returned."""
    for host in HOSTS:
        store.update_host(host, storage=storage)
    path = tmp_path / "nas"
    path.mkdir(mode=0o700)
    service.add_backup_target({"name": "nas", "path": str(path)})
    return path


def running_web1(service, controller, clock, data_mib: int = 16) -> dict:
    """web1, with a data disk of data_mib MiB, running; its row."""
    created, _op = service.create_vm({"name": "web1", "disks": [{"name": "data", "size": data_mib}]})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(created["id"])
    assert row["observed_state"] == "running"
    return row


def back_up(service, controller, body=None):
    op = service.start_backup("web1", body)
    controller.operations.dispatch()  # inline: runs to its end here
    op = service.store.get_operation(op["id"])
    return op, (service.get_backup(op["params"]["backup"]) if op["params"].get("backup") else None)


def events(service, kind):
    return [e["message"] for e in service.list_events("web1") if e["kind"] == kind]


def interrupted_backup(service, store, clock, vm: dict) -> tuple[dict, str]:
    """What a SIGKILL mid-job leaves of a full backup of web1: its operation claimed and
    running, its record running. (The operation, the backup's id.)"""
    op = service.start_backup("web1")
    store.claim_operation(op["id"], clock())
    interrupted = backup_chain.new_backup_id(clock())
    store.insert_backup({"id": interrupted, "vm_id": vm["id"], "vm_name": "web1",
                         "project": vm["project"], "target": "nas", "kind": "full",
                         "chain": interrupted, "checkpoint": interrupted, "status": "running",
                         "operation": op["id"], "created": clock()})
    store.update_operation(op["id"], params={**op["params"], "backup": interrupted})
    return op, interrupted


def cancelled_mid_job(service, controller, cloud, clock, look) -> tuple[dict, list]:
    """A backup of web1 whose job the fake holds, cancelled at the controller's first wait
    once the job runs and its progress is recorded; look(the running operation) is taken
    at that instant. (The operation at its end, [what look returned].)"""
    cloud.hold_backups = True
    op = service.start_backup("web1")
    seen: list = []

    def cancel_mid_job() -> None:
        current = service.store.get_operation(op["id"])
        if (current["status"] == "running" and current["params"].get("backup")
                and current["bytes_total"] and not seen):
            seen.append(look(current))
            service.cancel_operation(op["id"])

    clock.on_sleep.append(cancel_mid_job)
    controller.operations.dispatch()
    return service.store.get_operation(op["id"]), seen

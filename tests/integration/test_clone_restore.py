"""Restore a backup chain into a new VM, and clones, with real guests (issue 13, part C).

One source guest with a 64 MiB data disk: 8 MiB of random data, a full
backup, 1 MiB more at another offset, an incremental backup; the chain is
restored into a new VM and the data disk's checksum, read inside both guests,
is the same. A broken chain is refused with the reason. Clones of the running
source, of the stopped source and from a snapshot have their own MAC and
cloud-init instance id and the same data.

The service is called in this process against the appliance's store (the REST
routes are another part's); the running `vmctl serve` does the work.
"""
from __future__ import annotations

import itertools
import re
import time

import pytest

from appliance.access.principal import DEFAULT_PROJECT
from appliance.config import Config
from appliance.errors import Conflict
from appliance.notify import Notifier
from appliance.service import Service
from appliance.store import Store
from tests.appliance_process import READY_LINE, Appliance

pytestmark = pytest.mark.integration

DATA_BYTES = 40 << 20  # what is checksummed: the 8 MiB at 0 and the 1 MiB at 32 MiB
OP_TIMEOUT = 300
_tags = itertools.count(100)


@pytest.fixture(scope="module")
def service(appliance):
    config = Config.load(appliance.home)
    return Service(Store(config.db_path), config, notify=Notifier(config.notify_socket))


@pytest.fixture(scope="module")
def target(service, tmp_path_factory):
    path = tmp_path_factory.mktemp("nas")
    service.add_backup_target({"name": "nas", "path": str(path)})
    return path


def guest(app: Appliance, vm: str, command: str, timeout: float = 180) -> str:
    """Run a shell command in the guest (its root shell on the serial console)
    and return its output's one line: the typed line reads `$((N+1))`, the
    answer `N+1`, so the echo of what was typed never matches."""
    n = next(_tags)
    typed = f'echo "OUT-$(({n}+1))-$({command})-END"\n'
    resp = app.api("PUT", f"/v1/vms/{vm}/console", data=typed.encode(),
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


def checksum(app: Appliance, vm: str) -> str:
    out = guest(app, vm, f"head -c {DATA_BYTES} /dev/vdb | sha256sum")
    digest = out.split()[0]
    assert re.fullmatch(r"[0-9a-f]{64}", digest), out
    return digest


def identity(app: Appliance, vm: str) -> tuple[str, str]:
    """(MAC, cloud-init instance id) as the guest sees them."""
    mac = guest(app, vm, "cat /sys/class/net/eth0/address")
    instance = guest(app, vm, "sed -n 's/^instance-id: *//p' /mnt/cidata/meta-data")
    return mac, instance


def finished(service: Service, op: dict, timeout: float = OP_TIMEOUT) -> dict:
    done = service.wait_operation(op["id"], timeout)
    assert done["status"] == "succeeded", (done["kind"], done["error"])
    return done


def running(app: Appliance, vm: str) -> None:
    app.wait_state(vm, "running", 180)
    app.wait_console(vm, READY_LINE, 180)


@pytest.fixture(scope="module")
def source(appliance, service):
    """src: running, 8 MiB of random data at 0 of its data disk. Deleted by the
    appliance at the end (the cleanup's plain undefine would leave a domain with
    snapshots defined)."""
    vm, op = service.create_vm({"name": "src", "memory": "128M", "run_strategy": "Always",
                                "disks": [{"name": "data", "size": "64M"}]})
    finished(service, op)
    try:
        running(appliance, "src")
        assert guest(appliance, "src", "dd if=/dev/urandom of=/dev/vdb bs=1M count=8 "
                                       "conv=fsync 2>/dev/null && sync && echo written") == "written"
        yield vm
    finally:
        service.wait_operation(service.delete_vm("src", force=True)["id"], OP_TIMEOUT)


def test_a_chain_restored_into_a_new_vm_has_the_same_data(appliance, service, source, target):
    full_op = service.start_backup("src", {"target": "nas"})
    finished(service, full_op)
    assert guest(appliance, "src", "dd if=/dev/urandom of=/dev/vdb bs=1M count=1 seek=32 "
                                   "conv=fsync 2>/dev/null && sync && echo written") == "written"
    incremental_op = service.start_backup("src", {"target": "nas"})
    finished(service, incremental_op)
    backups = sorted(service.list_backups("src"), key=lambda b: b["created"])
    assert [b["kind"] for b in backups] == ["full", "incremental"]
    full, incremental = backups
    assert incremental["parent"] == full["id"]
    expected = checksum(appliance, "src")

    vm, op = service.restore_backup(incremental["id"], {"name": "restored"})
    done = finished(service, op)
    assert done["bytes_total"] > 0 and done["bytes_done"] == done["bytes_total"]
    running(appliance, "restored")
    assert checksum(appliance, "restored") == expected
    assert identity(appliance, "restored")[1] == vm["id"]
    finished(service, service.delete_vm("restored", force=True))


def test_a_broken_chain_is_refused_with_the_reason(appliance, service, source, target):
    backups = sorted(service.list_backups("src"), key=lambda b: b["created"])
    full, incremental = backups[0], backups[-1]
    folder = target / "vm-appliance" / source["id"] / full["id"]
    aside = folder.with_name("aside")
    folder.rename(aside)
    try:
        with pytest.raises(Conflict, match=f"the backup chain is broken: {full['id']}"):
            service.restore_backup(incremental["id"], {"name": "broken"})
        assert not service.store.vm_exists("broken", DEFAULT_PROJECT)
    finally:
        aside.rename(folder)


def test_clones_of_a_running_and_a_stopped_vm(appliance, service, source):
    expected = checksum(appliance, "src")
    src_identity = identity(appliance, "src")
    clone, op = service.clone_vm("src", {"name": "clone-live"})
    finished(service, op)
    assert appliance.api("GET", "/v1/vms/src").json()["state"] == "running"  # never paused off
    running(appliance, "clone-live")
    assert checksum(appliance, "clone-live") == expected
    mac, instance = identity(appliance, "clone-live")
    assert mac != src_identity[0] and instance == clone["id"] != src_identity[1]
    finished(service, service.delete_vm("clone-live", force=True))

    finished(service, service.set_state("src", "stopped"))
    clone, op = service.clone_vm("src", {"name": "clone-off"})
    finished(service, op)
    assert clone["desired_state"] == "stopped"  # as its source was (its run strategy: Halted)
    finished(service, service.set_state("clone-off", "running"))
    running(appliance, "clone-off")
    assert checksum(appliance, "clone-off") == expected
    finished(service, service.delete_vm("clone-off", force=True))
    finished(service, service.set_state("src", "running"))
    running(appliance, "src")


def test_a_clone_from_a_snapshot_of_a_running_vm(appliance, service, source):
    expected = checksum(appliance, "src")
    finished(service, service.create_snapshot("src", {"name": "s1"}))
    assert guest(appliance, "src", "dd if=/dev/urandom of=/dev/vdb bs=1M count=1 seek=2 "
                                   "conv=fsync 2>/dev/null && sync && echo written") == "written"
    assert checksum(appliance, "src") != expected
    clone, op = service.clone_vm("src", {"name": "clone-snap", "from_snapshot": "s1"})
    finished(service, op)  # read with -U while src runs
    running(appliance, "clone-snap")
    assert checksum(appliance, "clone-snap") == expected
    assert identity(appliance, "clone-snap")[1] == clone["id"]
    finished(service, service.delete_vm("clone-snap", force=True))

"""Restore a backup chain into a new VM, and clones, with real guests (issue 13, part C).

One source guest with a 64 MiB data disk: 8 MiB of random data, a full
backup, 1 MiB more at another offset, an incremental backup; the chain is
restored into a new VM and the data disk's checksum, read inside both guests,
is the same. A broken chain is refused with the reason. A clone of the
running source boots with its own MAC and cloud-init instance id and the same
data; clones from a snapshot of it (running) and of it stopped hold the same
data (read on the host: one booted clone is enough to show that clones boot,
and each boot costs the suite half a minute). The restored VM and the running
clone are made from the same data, one after the other, and boot side by side
(two TCG boots at once on two CPUs cost about one).

The service is called in this process against the appliance's store (the REST
routes are another part's); the running `vmctl serve` does the work.
"""
from __future__ import annotations

import hashlib
import itertools
import re
import subprocess
import time

import pytest

from appliance.access.principal import DEFAULT_PROJECT
from appliance.config import Config
from appliance.errors import Conflict
from appliance.notify import Notifier
from appliance.service import Service
from appliance.store import Store
from appliance.virt import images
from tests.appliance_process import READY_LINE, Appliance

pytestmark = pytest.mark.integration

DATA_BYTES = 16 << 20  # what is checksummed: the 8 MiB at 0 and the 1 MiB at 12 MiB
OP_TIMEOUT = 300
RETYPE_SECONDS = 45  # a checksum of 16 MiB takes ~4 s in a TCG guest (~10 s under load)
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


def guest(app: Appliance, vm: str, command: str, timeout: float = 240) -> str:
    """Run a shell command in the guest (its root shell on the serial console)
    and return its output's one line: the typed line reads `$((N+1))`, the
    answer `N+1`, so the echo of what was typed never matches. A line typed
    while a fresh shell asks the terminal where its cursor is (ESC[6n) is read
    as the answer and lost: it is typed again until the guest answers. A line the
    terminal echoed reached the shell and is running (a checksum under load): it is
    given longer before a retype, which would queue a second run of it."""
    n = next(_tags)
    typed = f'echo "OUT-$(({n}+1))-$({command})-END"\n'
    echoed = f"OUT-$(({n}+1))"  # only in the echo: the answer reads OUT-{n+1}
    pattern = re.compile(rf"OUT-{n + 1}-(.*?)-END")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        resp = app.api("PUT", f"/v1/vms/{vm}/console", data=typed.encode(),
                       headers={"Content-Type": "text/plain"})
        assert resp.status_code == 200, resp.text
        retype = min(deadline, time.monotonic() + RETYPE_SECONDS)
        patient = False
        while time.monotonic() < retype:
            console = app.console(vm)
            found = pattern.search(console)
            if found:
                return found.group(1).strip()
            if not patient and echoed in console:
                patient, retype = True, min(deadline, retype + 2 * RETYPE_SECONDS)
            time.sleep(0.5)
    raise AssertionError(f"no answer to {command!r} from {vm}:\n{app.console(vm)[-2000:]}")


def checksum(app: Appliance, vm: str) -> str:
    out = guest(app, vm, f"dd if=/dev/vdb bs=1M count={DATA_BYTES >> 20} 2>/dev/null | sha256sum")
    digest = out.split()[0]
    assert re.fullmatch(r"[0-9a-f]{64}", digest), out
    return digest


class SourceData:
    """src's data checksum as read inside src, read again only after src wrote its disk
    (each read is ~10 s of a TCG guest): every test compares with a checksum src read
    after its last write, as if it read it itself."""

    def __init__(self, app: Appliance):
        self.app = app
        self.known: str | None = None

    def write(self, dd: str) -> None:
        self.known = None  # before the write: a failed write leaves nothing stale
        assert guest(self.app, "src", f"dd if=/dev/urandom of=/dev/vdb {dd} "
                                      "conv=fsync 2>/dev/null && sync && echo written") == "written"

    def checksum(self) -> str:
        if self.known is None:
            self.known = checksum(self.app, "src")
        return self.known


def host_checksum(app: Appliance, vm_id: str) -> str:
    """The same checksum as checksum(), of the VM's data disk file read on the host."""
    raw = app.home / f"{vm_id}-data.raw"
    disk = app.home / "vms" / vm_id / "disk-data.qcow2"
    subprocess.run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", str(disk), str(raw)],
                   check=True, timeout=120)
    try:
        with open(raw, "rb") as f:
            return hashlib.sha256(f.read(DATA_BYTES)).hexdigest()
    finally:
        raw.unlink()


def standalone(app: Appliance, vm_id: str) -> bool:
    """Both disks of the VM are qcow2 files without a backing file."""
    folder = app.home / "vms" / vm_id
    return all(images.qcow2_backing(folder / name)[0] is None
               for name in ("root.qcow2", "disk-data.qcow2"))


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
def src_data(appliance) -> SourceData:
    return SourceData(appliance)


@pytest.fixture(scope="module")
def source(appliance, service, src_data):
    """src: running, 8 MiB of random data at 0 of its data disk. Deleted by the
    appliance at the end, checkpoints and snapshots with it (the test's cleanup's
    plain undefine would leave such a domain defined)."""
    vm, op = service.create_vm({"name": "src", "memory": "128M", "run_strategy": "Always",
                                "disks": [{"name": "data", "size": "64M"}]})
    finished(service, op)
    try:
        running(appliance, "src")
        src_data.write("bs=1M count=8")
        yield vm
    finally:  # a VM with checkpoints (backed up) and snapshots is deleted whole
        finished(service, service.delete_vm("src", force=True))
        assert appliance.prefix + "src" not in appliance.domain_names()


@pytest.fixture(scope="module")
def copies(appliance, service, source, target, src_data) -> dict:
    """A full backup of src, 1 MiB more written, an incremental; then, from that
    data, the chain restored into "restored" and a clone "clone-live" of the
    running src: both start at once, so their boots overlap (each test waits for
    its own). What each test checks of them is in the test."""
    finished(service, service.start_backup("src", {"target": "nas"}))
    src_data.write("bs=1M count=1 seek=12")
    finished(service, service.start_backup("src", {"target": "nas"}))
    backups = sorted(service.list_backups("src"), key=lambda b: b["created"])
    assert [b["kind"] for b in backups] == ["full", "incremental"]
    restored, restore_op = service.restore_backup(backups[1]["id"], {"name": "restored"})
    clone, clone_op = service.clone_vm("src", {"name": "clone-live"})
    return {"backups": backups, "restored": restored, "restore_op": restore_op,
            "clone": clone, "clone_op": clone_op}


def test_a_chain_restored_into_a_new_vm_has_the_same_data(appliance, service, source, copies,
                                                          src_data):
    full, incremental = copies["backups"]
    assert incremental["parent"] == full["id"]
    done = finished(service, copies["restore_op"])
    assert done["bytes_total"] > 0 and done["bytes_done"] == done["bytes_total"]
    expected = src_data.checksum()  # read in src while the copies boot
    running(appliance, "restored")
    assert checksum(appliance, "restored") == expected
    assert identity(appliance, "restored")[1] == copies["restored"]["id"]
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


def test_a_clone_of_a_running_vm_boots_with_its_own_identity(appliance, service, source, copies,
                                                             src_data):
    expected = src_data.checksum()  # src's data when the clone was taken (written since: no)
    clone = copies["clone"]
    finished(service, copies["clone_op"])  # a backup job without checkpoint into the clone's files
    assert appliance.api("GET", "/v1/vms/src").json()["state"] == "running"
    src_identity = identity(appliance, "src")
    running(appliance, "clone-live")
    assert checksum(appliance, "clone-live") == expected
    mac, instance = identity(appliance, "clone-live")
    assert mac != src_identity[0] and instance == clone["id"] != src_identity[1]
    finished(service, service.delete_vm("clone-live", force=True))


def test_a_clone_from_a_snapshot_of_a_running_vm(appliance, service, source, src_data):
    expected = src_data.checksum()
    finished(service, service.create_snapshot("src", {"name": "s1"}))
    running(appliance, "src")
    src_data.write("bs=1M count=1 seek=2")
    assert src_data.checksum() != expected
    clone, op = service.clone_vm("src", {"name": "clone-snap", "from_snapshot": "s1"})
    finished(service, op)  # read with -U while src runs
    assert appliance.api("GET", "/v1/vms/src").json()["state"] == "running"
    # Read on the host (not booted: the running clone above shows a clone boots)
    assert host_checksum(appliance, clone["id"]) == expected
    assert standalone(appliance, clone["id"])
    finished(service, service.delete_vm("clone-snap", force=True))


def test_a_clone_of_a_stopped_vm(appliance, service, source, src_data):
    expected = src_data.checksum()
    finished(service, service.set_state("src", "stopped"))
    clone, op = service.clone_vm("src", {"name": "clone-off"})
    finished(service, op)  # qemu-img convert of the stopped source's files
    assert clone["desired_state"] == "stopped"  # as its source was (its run strategy: Halted)
    assert host_checksum(appliance, clone["id"]) == expected
    assert standalone(appliance, clone["id"])
    rows = {vm["name"]: service.store.get_vm_by_id(vm["id"]) for vm in (source, clone)}
    assert rows["src"]["mac"] != rows["clone-off"]["mac"]
    seed = appliance.home / "vms" / clone["id"] / "cidata.iso"
    assert clone["id"].encode() in seed.read_bytes()  # its own instance id
    finished(service, service.delete_vm("clone-off", force=True))

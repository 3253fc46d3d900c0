"""The mount of a real `vmctl serve` (real libvirtd, TCG guests), driven by shell commands."""
from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import libvirt
import pytest

from fs.mount import is_mounted
from tests.appliance_process import BOOT_LINE, DEMO_IMAGE, READY_LINE, Appliance
from tests.fs.conftest import sh, unmount, wait_mounted

pytestmark = pytest.mark.integration
EBUSY = os.strerror(errno.EBUSY)
KERNEL_LINE = re.compile(r"^\[\s*\d+\.\d+\] ")  # a printk line: "[    0.024000] ..."


def first_line(proc: subprocess.Popen, timeout: float) -> str:
    """The first line proc writes, or "" after timeout (readline alone would block past it)."""
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(proc.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    return lines[0] if lines else ""


@pytest.fixture(scope="module", autouse=True)
def _demo_image():
    if not DEMO_IMAGE.exists():
        pytest.fail(f"{DEMO_IMAGE} is missing: run `make image` (packaging/build-demo-image.sh)")


class Mounted:
    def __init__(self, app: Appliance):
        self.app = app
        self.mnt = app.home / "mnt"

    def wait(self, timeout: float = 20) -> Mounted:
        wait_mounted(self.mnt, None, self.app.home / "logs" / "mount.log", timeout)
        return self

    def sh(self, command: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return sh(command, cwd=self.mnt, timeout=timeout)

    def ok(self, command: str, timeout: float = 180) -> str:
        result = self.sh(command, timeout)
        assert result.returncode == 0, f"{command}: {result.stderr}\n{self.app.log_text()[-2000:]}"
        return result.stdout

    def domain_active(self, name: str) -> bool:
        conn = libvirt.open(self.app.libvirt_uri)
        try:
            return conn.lookupByName(self.app.prefix + name).isActive() == 1
        finally:
            conn.close()


@pytest.fixture
def mounted(tmp_path):
    app = Appliance(tmp_path / "home")
    try:
        app.start()
        yield Mounted(app).wait()
    finally:
        app.cleanup()
        unmount(tmp_path / "home" / "mnt")
    assert not is_mounted(tmp_path / "home" / "mnt")  # serve unmounted it on stop



def test_a_shell_user_drives_a_real_vm(mounted, held_processes):
    m = mounted
    m.ok("mkdir vms/m1")
    assert m.ok("cat vms/m1/state") == "stopped\n"
    tail = subprocess.Popen(["tail", "-f", str(m.mnt / "vms/m1/console")], stdout=subprocess.PIPE, text=True)
    held_processes.append(tail)

    m.ok("echo running > vms/m1/state")  # returns when the VM runs
    assert m.ok("cat vms/m1/state") == "running\n"
    assert m.app.api("GET", "/v1/vms/m1").json()["state"] == "running"
    assert m.domain_active("m1")
    # tail -f follows the serial console: the guest's first line (its kernel's, else its
    # init's boot line) comes through the mount, written after tail opened the empty file.
    # Waiting on for init's line too would wait out a whole TCG kernel boot (30-60 s, the
    # most of this test) and show nothing more of the mount.
    seen = first_line(tail, 120)
    assert KERNEL_LINE.match(seen) or BOOT_LINE in seen, seen

    for verb in ("paused", "running"):
        m.ok(f"echo {verb} > vms/m1/state")
        assert m.ok("cat vms/m1/state") == f"{verb}\n"
        assert m.app.api("GET", "/v1/vms/m1/state", params={"format": "text"}).text == f"{verb}\n"

    result = m.sh("rmdir vms/m1")
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    result = m.sh("mv vms/m1 vms/m2")
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    m.ok("echo 2 > vms/m1/cpus")  # within max_cpus (issue 14): applied live
    status = json.loads(m.ok("cat vms/m1/status.json"))
    assert (status["restart_required"], status["pending_changes"]) == (False, [])
    m.ok("echo 5 > vms/m1/cpus")  # beyond the default maximum (4 x 1, capped by the host)
    status = json.loads(m.ok("cat vms/m1/status.json"))
    assert (status["restart_required"], status["pending_changes"]) == (True, ["cpus"])

    m.ok("echo force-stop > vms/m1/state")
    assert m.ok("cat vms/m1/state") == "stopped\n"
    assert not m.domain_active("m1")
    m.ok("mv vms/m1 vms/m2")
    assert "<vcpu" in m.ok("cat vms/m2/domain.xml")
    m.ok("rmdir vms/m2")
    assert os.listdir(m.mnt / "vms") == []
    assert m.app.domain_names() == []


def test_concurrent_writers_on_a_real_vm(mounted):
    m = mounted
    m.ok("mkdir vms/c1")
    writers = [subprocess.Popen(["bash", "-c", f"echo {state} > vms/c1/state"], cwd=m.mnt,
                                stderr=subprocess.PIPE, text=True)
               for state in ("running", "paused", "running", "force-stop")]
    outcomes = [(w.wait(180), w.stderr.read()) for w in writers]
    for code, err in outcomes:
        assert code == 0 or (code == 1 and EBUSY in err), err
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        vm = m.app.api("GET", "/v1/vms/c1").json()
        if vm["state"] == vm["desired_state"]:
            break
        time.sleep(0.2)
    assert vm["state"] == vm["desired_state"]
    assert m.ok("cat vms/c1/state") == vm["state"] + "\n"
    assert m.domain_active("c1") == (vm["state"] in ("running", "paused"))


def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(entry))
            except (OSError, IndexError, ValueError):
                pass
    return out


def _mount_child(app: Appliance) -> int:
    for pid in _children(app.proc.pid):
        # NUL-separated when exec'd, one title when forked (appliance/forked.py)
        if b"mount" in Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").split():
            return pid
    raise AssertionError("no mount child under vmctl serve")


def test_restart_with_the_mount_in_use(mounted, held_processes):
    m = mounted
    m.ok("mkdir vms/r1 && echo running > vms/r1/state")
    holder = subprocess.Popen(["sleep", "600"], cwd=m.mnt / "vms" / "r1")  # a shell sitting in the VM's folder
    tail = subprocess.Popen(["tail", "-f", str(m.mnt / "vms/r1/console")], stdout=subprocess.DEVNULL)
    held_processes.extend([holder, tail])

    assert m.app.stop() == 0
    assert not is_mounted(m.mnt)  # unmounted although in use (lazily: the users keep a dead folder)
    assert m.domain_active("r1")  # the VM keeps running without the appliance

    m.app.start()
    m.wait()
    assert m.ok("cat vms/r1/state") == "running\n"
    # Up to its power button (acpid starts before the ready line): a stop pressed earlier is lost
    # and waits out the 30 s grace period before the plug is pulled.
    m.app.wait_console("r1", READY_LINE, 180)
    m.ok("echo stopped > vms/r1/state")
    assert not m.domain_active("r1")


def test_a_killed_mount_child_is_cleared_and_replaced(mounted):
    m = mounted
    m.ok("mkdir vms/k1")
    os.kill(_mount_child(m.app), signal.SIGKILL)
    time.sleep(0.2)
    m.wait(timeout=20)  # serve restarts it; the stale mount is cleared first
    assert m.ok("cat vms/k1/state") == "stopped\n"
    with open("/proc/self/mountinfo") as f:
        assert sum(f" {m.mnt} " in line for line in f) == 1


def test_serve_no_mount(tmp_path):
    app = Appliance(tmp_path / "home", extra_args=["--no-mount"])
    try:
        app.start()
        time.sleep(1)
        assert not is_mounted(tmp_path / "home" / "mnt")
        assert app.api("GET", "/v1/vms").status_code == 200
    finally:
        app.cleanup()
        unmount(tmp_path / "home" / "mnt")

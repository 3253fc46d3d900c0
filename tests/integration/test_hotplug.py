"""Live resize of a real TCG demo guest (issue 14), looked at from inside
through its serial console: `echo 2 > vms/NAME/cpus` through the mount makes
`nproc` say 2 with no reboot; a memory write grows MemTotal; a change beyond
the VM's maximum shows RestartRequired in status.json and `vmctl list`, and a
reboot applies and clears it. One guest for the whole module."""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid

import pytest

from tests.appliance_process import BOOT_LINE, READY_LINE, ROOT, Appliance
from tests.fs.conftest import sh, wait_mounted

pytestmark = pytest.mark.integration
VM = "hp1"


def _ok(mnt, command: str) -> str:
    result = sh(command, cwd=mnt, timeout=180)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def ask_guest(app: Appliance, shell: str, pattern: str, timeout: float = 60) -> re.Match:
    """Type `echo TAG-$(shell)` into the guest's console until the answer matches
    `pattern` (a regex of the value); each try has its own tag, so an old answer
    never counts."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        tag = uuid.uuid4().hex[:8]
        resp = app.api("PUT", f"/v1/vms/{VM}/console", data=f"echo A{tag}-$({shell})-Z\n".encode())
        assert resp.status_code in (200, 204), resp.text
        try:
            out = app.wait_console(VM, f"A{tag}-", 10)
        except AssertionError:
            continue
        seen = out.rsplit(f"A{tag}-", 1)[1].split("-Z", 1)[0]
        match = re.fullmatch(pattern, seen)
        if match:
            return match
        time.sleep(0.3)
    raise AssertionError(f"{shell!r} in the guest never matched {pattern!r}; last: {seen!r}")


def _mem_total_kib(app: Appliance) -> int:
    return int(ask_guest(app, "sed -n 's/^MemTotal: *\\([0-9]*\\).*/\\1/p' /proc/meminfo",
                         r"\d+").group(0))


def _status(mnt) -> dict:
    return json.loads(_ok(mnt, f"cat vms/{VM}/status.json"))


def _vmctl(home, *args) -> str:
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_vcpus_and_memory_grow_live_and_restart_required_beyond_the_maximum(appliance):
    app = appliance
    mnt = app.home / "mnt"
    wait_mounted(mnt, None, app.home / "logs" / "mount.log")
    _ok(mnt, f"mkdir vms/{VM} && echo running > vms/{VM}/state")  # 1 vCPU, 128 MiB
    app.wait_console(VM, READY_LINE, 120)
    ask_guest(app, "nproc", "1")
    before = _mem_total_kib(app)

    # vCPUs: plugged live, onlined by the guest; the console shows one boot
    _ok(mnt, f"echo 2 > vms/{VM}/cpus")
    ask_guest(app, "nproc", "2", timeout=90)  # a busy 2-CPU host brings the vCPU up slowly
    assert app.console(VM).count(BOOT_LINE) == 1
    status = _status(mnt)
    assert status["restart_required"] is False and status["pending_changes"] == []

    # memory: the virtio-mem area grows the guest's MemTotal by what was added
    _ok(mnt, f"echo 256M > vms/{VM}/memory")
    after = _mem_total_kib(app)
    assert after - before == 128 * 1024, (before, after)
    assert app.console(VM).count(BOOT_LINE) == 1
    assert _status(mnt)["pending_changes"] == []

    # beyond the maximum (4 x 1 vCPU, capped by this 2-CPU host: 2): waits for a restart
    _ok(mnt, f"echo 4 > vms/{VM}/cpus")
    status = _status(mnt)
    assert status["restart_required"] is True and status["pending_changes"] == ["cpus"]
    condition = next(c for c in status["conditions"] if c["type"] == "RestartRequired")
    assert condition["message"] == "waiting for the next restart: cpus"
    listed = _vmctl(app.home, "list").splitlines()
    assert listed[0].split()[-1] == "RESTART"
    assert listed[1].split()[0] == VM and listed[1].endswith("required (cpus)")
    assert "restart       required: cpus wait for the next restart" in _vmctl(app.home, "get", VM)
    ask_guest(app, "nproc", "2")  # still 2 in the running guest

    # a reboot applies it and clears it
    _ok(mnt, f"echo reboot > vms/{VM}/state")
    deadline = time.monotonic() + 120
    while app.console(VM).count(READY_LINE) < 2 and time.monotonic() < deadline:
        time.sleep(0.5)
    ask_guest(app, "nproc", "4", timeout=60)
    status = _status(mnt)
    assert status["restart_required"] is False and status["pending_changes"] == []
    assert not _vmctl(app.home, "list").splitlines()[1].endswith(")")
    _ok(mnt, f"echo stopped > vms/{VM}/state")

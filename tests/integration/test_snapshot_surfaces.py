"""The snapshot surfaces on a real appliance (libvirt's qemu driver, qcow2 disks): the
mount's vms/NAME/snapshots/ with shell commands and vmctl, on a stopped VM (nothing to
boot: the guests are the other parts' tests, tests/integration/test_snapshots.py)."""
import errno
import json
import os
import subprocess

import pytest

from tests.integration.test_cli_and_doctor import vmctl

pytestmark = pytest.mark.integration


def sh(command: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=120, check=False)


def test_a_shell_and_vmctl_snapshot_a_real_vm(appliance):
    home, mnt = appliance.home, appliance.home / "mnt"
    vmctl(home, "create", "snapcli", "--stopped", "--disk", "data:16M")
    done = sh("mkdir vms/snapcli/snapshots/s1 && ls vms/snapcli/snapshots", mnt)
    assert (done.returncode, done.stdout) == (0, "s1\n"), done.stderr
    info = json.loads((mnt / "vms/snapcli/snapshots/s1/info.json").read_text())
    assert info["state"] == "ready" and info["memory"] is False and info["size"] is not None
    out = vmctl(home, "snapshot", "snapcli", "s2", "--description", "from vmctl").stdout
    assert out == "snapcli: snapshot s2 taken (disks only)\n"
    rows = vmctl(home, "snapshots", "snapcli").stdout.splitlines()[1:]
    assert [row.split()[0] for row in rows] == ["s1", "s2"] and "*" in rows[1].split()
    refused = sh("mkdir vms/snapcli/snapshots/Bad_Name", mnt)
    assert refused.returncode == 1 and os.strerror(errno.EINVAL) in refused.stderr
    done = sh("echo revert > vms/snapcli/snapshots/s1/action && rmdir vms/snapcli/snapshots/s2",
              mnt)
    assert done.returncode == 0, done.stderr
    listed = json.loads(vmctl(home, "--json", "snapshots", "snapcli").stdout)
    assert [(s["name"], s["current"]) for s in listed] == [("s1", True)]
    events = vmctl(home, "events", "snapcli").stdout
    assert "refused" in events and "mkdir vms/snapcli/snapshots/Bad_Name" in events
    out = vmctl(home, "clone", "snapcli", "snapcli2", "--from-snapshot", "s1").stdout
    assert out == "snapcli2: cloned from snapcli's snapshot s1\n"
    for name in ("snapcli2", "snapcli"):
        assert vmctl(home, "delete", name, "--force").returncode == 0

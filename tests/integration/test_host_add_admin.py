"""Issue 16 against a real `vmctl serve`: `vmctl host add … && vmctl create …`
in a script (the add returns once the appliance has connected to the host, or
says why it could not), and `vmctl admin backup` while the appliance runs, with
`vmctl admin restore` refused until it is stopped."""
from __future__ import annotations

import json
import subprocess
import sys
import tarfile

import pytest

from tests.appliance_process import ROOT
from tests.local_hosts import LocalHost

pytestmark = pytest.mark.integration


def vmctl(home, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


def test_host_add_then_create_in_a_script(unmounted_appliance) -> None:
    home = unmounted_appliance.home
    far = vmctl(home, "host", "add", "far", "qemu+tcp://127.0.0.1:1/system")
    assert far.returncode == 0, far.stderr
    assert far.stdout.startswith("far: added (qemu+tcp://127.0.0.1:1/system), down: "), far.stdout
    assert "not connected yet" not in far.stdout and "connection failed" in far.stdout, far.stdout
    assert vmctl(home, "host", "remove", "far").returncode == 0
    with LocalHost() as h2:
        added = vmctl(home, "host", "add", "h2", h2.uri)
        assert added.returncode == 0, added.stderr
        assert added.stdout == f"h2: added ({h2.uri}), enabled\n"
        # At once, as the next line of a script: the scheduler sees h2 up.
        created = vmctl(home, "create", "web1", "--host", "h2", "--stopped", "--memory", "128M")
        assert created.returncode == 0, created.stderr + created.stdout
        assert json.loads(vmctl(home, "--json", "get", "web1").stdout)["host"] == "h2"
        assert vmctl(home, "delete", "web1").returncode == 0
        assert vmctl(home, "host", "remove", "h2").returncode == 0


def test_admin_backup_while_serving_and_restore_refused(unmounted_appliance, tmp_path) -> None:
    home = unmounted_appliance.home
    archive = tmp_path / "home.tar"
    done = vmctl(home, "admin", "backup", str(archive))
    assert done.returncode == 0, done.stderr
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as tar:
        manifest = json.loads(tar.extractfile("manifest.json").read())
    assert manifest["counts"]["hosts"] >= 1 and manifest["counts"]["events"] > 0
    refused = vmctl(home, "admin", "restore", str(archive))
    assert refused.returncode == 1
    assert "is being served" in refused.stderr and refused.stderr.count("\n") == 1, refused.stderr
    assert not list(home.glob("pre-restore-*"))

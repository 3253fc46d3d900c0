"""Templates through a real `vmctl serve` and its real mount (issue 14, part C): a
template copied in with `cp`, another made with `vmctl template create`, a VM made
from one (its data disk seen inside the demo guest), the template changed, the VM
unchanged, the template removed with `rm`."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.appliance_process import READY_LINE, ROOT
from tests.fs.conftest import sh, wait_mounted

pytestmark = pytest.mark.integration
GIB_SECTORS = 1024 ** 3 // 512


def vmctl(home, *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=180, check=False)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ok(mnt, command: str) -> str:
    result = sh(command, cwd=mnt, timeout=180)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def test_a_vm_from_a_template_keeps_its_shape_when_the_template_changes_and_goes(appliance,
                                                                                  tmp_path):
    app = appliance
    mnt = app.home / "mnt"
    wait_mounted(mnt, None, app.home / "logs" / "mount.log")
    source = tmp_path / "small.json"
    source.write_text(json.dumps({"memory": "160M", "disks": [{"name": "data", "size": "1G"}]}))
    try:
        ok(mnt, f"cp {source} templates/small.json")
        assert vmctl(app.home, "template", "create", "tiny", "--cpus", "1", "--memory", "160M",
                     "--disk", "data=2G").strip() == "tiny: created (revision 1)"
        assert ok(mnt, "ls templates").split() == ["default.json", "small.json", "tiny.json"]
        listed = {t["name"]: t for t in json.loads(vmctl(app.home, "--json", "template", "list"))}
        assert listed["small"]["spec"] == {"memory": 160,
                                           "disks": [{"name": "data", "size": 1024}]}
        assert listed["tiny"]["spec"]["disks"] == [{"name": "data", "size": 2048}]

        assert vmctl(app.home, "create", "tpl1", "--template", "small").strip() == \
            "tpl1: running on local"
        vm = app.api("GET", "/v1/vms/tpl1").json()
        assert vm["template"] == {"name": "small", "revision": 1}
        made = vm["spec"]
        app.wait_console("tpl1", READY_LINE, 120)
        # inside the guest: the template's data disk, 1 GiB
        ok(mnt, "echo 'echo VDB-$(cat /sys/block/vdb/size)-END > /dev/console' >> vms/tpl1/console")
        app.wait_console("tpl1", f"VDB-{GIB_SECTORS}-END", 60)

        ok(mnt, """echo '{"memory": "192M", "disks": [{"name": "data", "size": "3G"}]}' """
                """> templates/small.json""")
        changed = app.api("GET", "/v1/templates/small").json()
        assert (changed["revision"], changed["spec"]["memory"]) == (2, 192)
        vm = app.api("GET", "/v1/vms/tpl1").json()
        assert vm["spec"] == made and vm["template"] == {"name": "small", "revision": 1}
        assert not vm["restart_required"]
        status = json.loads(ok(mnt, "cat vms/tpl1/status.json"))
        assert status["template"] == {"name": "small", "revision": 1}
        # the guest's boot memory is its NUMA cell's (<memory> also counts the virtio-mem
        # area up to max_memory since live resize)
        assert "memory='163840' unit='KiB'" in ok(mnt, "cat vms/tpl1/domain.xml")

        ok(mnt, "rm templates/small.json")
        assert vmctl(app.home, "template", "delete", "tiny").strip() == "tiny: deleted"
        assert ok(mnt, "ls templates").split() == ["default.json"]
        vm = app.api("GET", "/v1/vms/tpl1").json()
        assert (vm["spec"], vm["template"], vm["state"]) == (made, {"name": "small", "revision": 1},
                                                             "running")
    finally:
        app.api("DELETE", "/v1/vms/tpl1", params={"force": "true"})
        for name in ("small", "tiny"):
            app.api("DELETE", f"/v1/templates/{name}")

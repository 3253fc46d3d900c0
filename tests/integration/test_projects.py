"""Two projects, one VM name, real guests: web1 in the default project and in
project dev are two VMs, two libvirt domains (PREFIXweb1 and PREFIXdev.web1),
both running, each driven by vmctl in its project."""
import json
import subprocess
import sys
import time

import pytest

from appliance.config import Config
from appliance.store import Store
from tests.appliance_process import READY_LINE, ROOT

pytestmark = pytest.mark.integration


def vmctl(home, *args):
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=180)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_console(appliance, project: str, text: str, timeout: float = 120) -> str:
    deadline = time.monotonic() + timeout
    out = ""
    while time.monotonic() < deadline:
        out = appliance.api("GET", "/v1/vms/web1/console", params={"project": project}).text
        if text in out:
            return out
        time.sleep(0.5)
    raise AssertionError(f"{text!r} not on {project}'s web1 console within {timeout} s:\n{out[-2000:]}")


def test_web1_in_two_projects_runs_as_two_domains(appliance):
    store = Store(Config.load(appliance.home).db_path)  # projects' REST is the quotas part's
    store.insert_project({"name": "dev", "description": "", "quota": {}, "created": 0.0})
    store.close()
    home = appliance.home
    try:
        default = appliance.create_vm("web1", memory="160M")
        assert vmctl(home, "--project", "dev", "create", "web1", "--memory", "160M").strip() == \
            "web1: running on local"
        dev = appliance.api("GET", "/v1/vms/web1", params={"project": "dev"}).json()
        assert dev["project"] == "dev" and dev["state"] == "running" and dev["id"] != default["id"]
        assert appliance.domain_names() == sorted([appliance.prefix + "web1", appliance.prefix + "dev.web1"])
        for project in ("default", "dev"):  # two guests, each booted from its own disk
            assert "hostname web1" in wait_console(appliance, project, READY_LINE)
        listed = json.loads(vmctl(home, "--json", "list", "--all-projects"))
        assert sorted((vm["project"], vm["name"], vm["state"]) for vm in listed) == \
            [("default", "web1", "running"), ("dev", "web1", "running")]
        table = vmctl(home, "list", "--all-projects").splitlines()
        assert table[0].split()[:2] == ["PROJECT", "NAME"]
        assert vmctl(home, "--project", "dev", "stop", "web1").strip() == "web1: stopped"
        assert appliance.api("GET", "/v1/vms/web1").json()["state"] == "running"
    finally:
        appliance.api("DELETE", "/v1/vms/web1", params={"force": "true", "project": "dev"})
        appliance.api("DELETE", "/v1/vms/web1", params={"force": "true"})
    assert appliance.domain_names() == []

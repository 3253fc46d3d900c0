"""vmctl against a running appliance, and the KVM probe of --accel auto."""
import json
import subprocess
import sys

import libvirt
import pytest

from appliance.store import Store
from tests.appliance_process import READY_LINE, ROOT, Appliance

pytestmark = pytest.mark.integration


def vmctl(home, *args, check=True):
    result = subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                            capture_output=True, text=True, cwd=ROOT, timeout=180)
    if check:
        assert result.returncode == 0, result.stderr
    return result


def test_vmctl_drives_a_vm(appliance, tmp_path):
    home = appliance.home
    user_data = tmp_path / "user-data"
    user_data.write_text("#!/bin/sh\necho from-vmctl\n")
    out = vmctl(home, "create", "cli1", "--memory", "160M", "--user-data", str(user_data), "--label", "tier=web")
    assert out.stdout.strip() == "cli1: running on local"
    table = vmctl(home, "list", "--label", "tier=web").stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "STATE", "DESIRED"] and table[1].split()[:2] == ["cli1", "running"]
    assert json.loads(vmctl(home, "--json", "get", "cli1").stdout)["spec"]["memory"] == 160
    appliance.wait_console("cli1", READY_LINE)
    assert "from-vmctl" in vmctl(home, "console", "cli1", "--log").stdout
    assert vmctl(home, "stop", "cli1").stdout.strip() == "cli1: stopped"
    assert vmctl(home, "rename", "cli1", "cli2").stdout.strip() == "cli1 -> cli2"
    refused = vmctl(home, "create", "cli2", check=False)
    assert refused.returncode == 1 and "exists" in refused.stderr and "field: name" in refused.stderr
    events = vmctl(home, "events", "cli2").stdout
    assert "renamed" in events and "created" in events
    images = vmctl(home, "--json", "images").stdout
    assert [i["name"] for i in json.loads(images)] == ["demo"]
    assert vmctl(home, "delete", "cli2").stdout.strip() == "cli2: deleted"
    assert vmctl(home, "get", "cli2", check=False).returncode == 1


def test_doctor_reports_each_check(appliance):
    result = vmctl(appliance.home, "--json", "doctor", check=False)
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert set(checks) == {"libvirt", "wedged", "kvm", "fuse", "disk", "metadata", "api"}
    assert checks["wedged"]["status"] == "ok"  # no domain paused (starting up) for 10 minutes
    assert checks["metadata"]["detail"].startswith("off (--no-metadata)")  # as Appliance starts it
    assert checks["libvirt"]["status"] == "ok" and checks["api"]["status"] == "ok"
    assert result.returncode == (1 if any(c["status"] == "fail" for c in checks.values()) else 0)


def test_accel_auto_probes_once_and_never_hangs_a_vm(tmp_path):
    app = Appliance(tmp_path / "home", accel="auto")
    try:
        app.start(timeout=120)
        verdict = json.loads(Store(app.home / "appliance.db").get_meta("accel_verdict"))
        assert verdict["probed"] is True and verdict["accel"] in ("kvm", "tcg")
        kvm = {c["name"]: c for c in json.loads(vmctl(app.home, "--json", "doctor", check=False).stdout)}["kvm"]
        assert "not probed" not in kvm["detail"]
        app.create_vm("probe1")
        app.wait_console("probe1", READY_LINE, 90)  # whatever the verdict, the VM boots
        domain_type = "kvm" if "<domain type='kvm'" in app.api("GET", "/v1/vms/probe1/domain.xml").text else "qemu"
        assert domain_type == ("kvm" if verdict["accel"] == "kvm" else "qemu")
        conn = libvirt.open(app.libvirt_uri)
        assert not [d.name() for d in conn.listAllDomains() if d.name().startswith("vmapp-kvm-probe-")]
        conn.close()
        app.stop()
        app.start()  # the verdict is remembered: no second probe
        accel_events = [e for e in app.api("GET", "/v1/events").json()["items"] if e["kind"] == "accel"]
        assert len(accel_events) == 1
    finally:
        app.cleanup()

"""The .deb's systemd units (packaging/debian/*.service), checked without a
running systemd: `systemd-analyze verify` (package systemd, which works with no
systemd running) on a root made of this machine's system units, the package's
two units and an executable where the package puts /opt/vm-appliance/bin/vmctl.
verify exits 0 on some findings ("Failed to parse ..., ignoring"), so any
output at all fails the test."""
from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DEBIAN = ROOT / "packaging" / "debian"
# debian/PACKAGE.service and debian/PACKAGE.NAME.service -> NAME.service (dh_installsystemd)
UNITS = {"vm-appliance.service": DEBIAN / "vm-appliance.service",
         "vm-appliance-exporter.service": DEBIAN / "vm-appliance.vm-appliance-exporter.service"}
SYSTEM_UNITS = Path("/lib/systemd/system")


def verify(root: Path, units: dict[str, str]) -> subprocess.CompletedProcess:
    tool = shutil.which("systemd-analyze")
    if tool is None:
        pytest.fail("systemd-analyze is missing: bash packaging/deb/build-deps.sh installs it")
    shutil.copytree(SYSTEM_UNITS, root / "lib/systemd/system", symlinks=True)
    for name, text in units.items():
        (root / "lib/systemd/system" / name).write_text(text)
    vmctl = root / "opt/vm-appliance/bin/vmctl"
    vmctl.parent.mkdir(parents=True)
    vmctl.write_text("#!/bin/sh\n")
    vmctl.chmod(0o755)
    return subprocess.run([tool, "verify", f"--root={root}", *units], capture_output=True,
                          text=True, timeout=60, check=False)


def shipped() -> dict[str, str]:
    return {name: path.read_text() for name, path in UNITS.items()}


def test_the_units_verify_clean(tmp_path):
    result = verify(tmp_path, shipped())
    assert (result.returncode, result.stdout + result.stderr) == (0, "")


@pytest.mark.parametrize("old, new, finding", [
    ("Type=notify", "Type=notifyy", "Failed to parse service type"),
    ("ExecStart=/opt/vm-appliance/bin/vmctl", "ExecStart=/opt/vm-appliance/bin/vmctl-gone",
     "is not executable"),
])
def test_a_broken_unit_is_caught(tmp_path, old, new, finding):
    units = shipped()
    units["vm-appliance.service"] = units["vm-appliance.service"].replace(old, new)
    result = verify(tmp_path, units)
    assert finding in result.stdout + result.stderr


def service(name: str) -> configparser.SectionProxy:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(UNITS[name].read_text())
    return parser["Service"]


def test_the_service_is_notify_restarting_and_reads_the_etc_config():
    unit = service("vm-appliance.service")
    assert unit["Type"] == "notify" and unit["NotifyAccess"] == "main"
    assert unit["Restart"] == "on-failure"
    assert unit["ExecStart"] == "/opt/vm-appliance/bin/vmctl serve --config /etc/vm-appliance/config.toml"
    assert unit["StateDirectory"] == "vm-appliance"  # /var/lib/vm-appliance, the config's home
    assert 'home = "/var/lib/vm-appliance"' in (ROOT / "packaging/deb/config.toml").read_text()
    assert unit["StandardError"] == "journal"


def test_the_exporter_unit_runs_vmctl_exporter_on_the_package_home():
    unit = service("vm-appliance-exporter.service")
    assert unit["ExecStart"].startswith(
        "/opt/vm-appliance/bin/vmctl --home /var/lib/vm-appliance exporter ")
    assert unit["Restart"] == "on-failure"


def test_the_package_s_vmctl_defaults_to_the_service_home(tmp_path):
    wrapper = (ROOT / "packaging/deb/vmctl").read_text()
    fake = tmp_path / "opt/vm-appliance/bin/vmctl"
    fake.parent.mkdir(parents=True)
    fake.write_text('#!/bin/sh\necho "$VMAPP_HOME|$*"\n')
    fake.chmod(0o755)
    script = tmp_path / "vmctl"
    script.write_text(wrapper.replace("/opt/vm-appliance/bin/vmctl", str(fake)))

    def run(env: dict[str, str]) -> str:
        return subprocess.run(["sh", str(script), "list", "--json"], env={"PATH": "/usr/bin:/bin", **env},
                              capture_output=True, text=True, check=True).stdout.strip()

    assert run({}) == "/var/lib/vm-appliance|list --json"
    assert run({"VMAPP_HOME": "/srv/h"}) == "/srv/h|list --json"
    assert run({"VMAPPLIANCE_HOME": "/srv/h"}) == "|list --json"


@pytest.mark.parametrize("name", sorted(UNITS))
def test_a_config_error_fails_the_unit_instead_of_restarting_it(tmp_path, name):
    """vmctl exits 2 on a wrong config.toml key or a wrong option; the units do
    not restart on 2 (systemd's start limit never stops a restart every RestartSec)."""
    import sys

    assert service(name)["RestartPreventExitStatus"] == "2"
    bad = tmp_path / "config.toml"
    bad.write_text('home = "%s"\nno_such_key = 1\n' % (tmp_path / "home"))
    args = (["serve", "--config", str(bad)] if name == "vm-appliance.service"
            else ["--home", str(tmp_path / "home"), "exporter", "--no-such-option"])
    result = subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True,
                            text=True, timeout=60, check=False, cwd=ROOT)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr

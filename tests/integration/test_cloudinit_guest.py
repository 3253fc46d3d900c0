"""The real cloud-init (issue 15): a Debian 12 guest with cloud-init from Debian's
packages (packaging/build-cloudinit-image.sh) booted by the appliance with a
config drive, under TCG. The guest reports on its serial console
(`VMAPP-REPORT ...` lines, printed after cloud-init's last stage by a unit of the
image) what cloud-init did with the drive:

- the hostname from meta_data.json,
- a runcmd of the user data ran (it writes a nonce the report prints),
- the user's SSH key (POST /v1/keys, cloud_init.keys) in root's authorized_keys,
- the static address network_data.json describes (user mode's 10.0.2.15/24, as
  an `inet static` stanza): the image has no DHCP client, so the address can only
  come from that static configuration.

NoCloud (the default datasource) is booted too: the key through meta-data's
public-keys, the address from the spec's network_config.

Opt-in and slow (minutes): `make test-cloudinit` builds the image (cached under
.cache/) and runs this module; `make test` and `make test-slow` do not.
The NIC is user mode: no bridge, nothing outside the machine.
"""
from __future__ import annotations

import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.appliance_process import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.cloudinit]

IMAGE = Path(os.environ.get("VMAPP_CLOUDINIT_IMAGE",
                            ROOT / ".cache" / "images" / "cloudinit-debian12.qcow2"))
# Under TCG on a loaded 2-core machine: systemd, then cloud-init's four stages.
BOOT_TIMEOUT = float(os.environ.get("VMAPP_CLOUDINIT_TIMEOUT", "1200"))
REPORT = "VMAPP-REPORT "


@pytest.fixture(scope="module")
def debian(appliance):
    if not IMAGE.exists():
        pytest.fail(f"{IMAGE} is missing: run `make test-cloudinit` "
                    "(packaging/build-cloudinit-image.sh)")
    with IMAGE.open("rb") as f:
        resp = appliance.api("PUT", "/v1/images/debian12", data=f, timeout=600,
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code in (200, 201), resp.text
    return appliance


def report(console: str) -> list[str]:
    return [line.split(REPORT, 1)[1].strip() for line in console.splitlines() if REPORT in line]


def wait_report(appliance, name: str) -> list[str]:
    deadline = time.monotonic() + BOOT_TIMEOUT
    while time.monotonic() < deadline:
        lines = report(appliance.console(name))
        if "done" in lines:
            return lines
        time.sleep(3)
    raise AssertionError(f"no VMAPP-REPORT done from {name} in {BOOT_TIMEOUT} s:\n"
                         + appliance.console(name)[-4000:])


def user_data(nonce: str) -> str:
    return ("#cloud-config\n"
            "disable_root: false\n"  # root's key as given (Debian's default prefixes a refusal)
            "ssh_genkeytypes: [ed25519]\n"  # RSA host keys take a while under TCG
            f"runcmd:\n  - [sh, -c, 'echo ran-{nonce} > /run/vmapp-runcmd']\n")


def boot(appliance, tmp_path, name: str, cloud_init: dict) -> tuple[list[str], str, str]:
    """Boot NAME with the user's new key "laptop" and a runcmd: its report, the
    public key, the runcmd's nonce."""
    key_file = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test",
                    "-f", str(key_file)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text().strip()
    appliance.api("DELETE", "/v1/keys/laptop")
    made = appliance.api("POST", "/v1/keys", json={"name": "laptop", "public_key": public})
    assert made.status_code == 201, made.text
    nonce = uuid.uuid4().hex[:12]
    started = time.monotonic()
    appliance.create_vm(name, image="debian12", memory=1024, network={"type": "user"},
                        cloud_init={"keys": ["laptop"], "user_data": user_data(nonce),
                                    **cloud_init})
    try:
        lines = wait_report(appliance, name)
    finally:
        appliance.api("DELETE", f"/v1/vms/{name}", params={"force": "true"})
    print(f"\n{name}: cloud-init's report after {time.monotonic() - started:.0f} s: {lines}")
    return lines, public, nonce


def test_config_drive_sets_hostname_runs_runcmd_adds_the_key_and_a_static_ip(debian, tmp_path):
    lines, public, nonce = boot(debian, tmp_path, "ci-drive", {"datasource": "configdrive"})
    assert any(line.startswith("datasource=DataSourceConfigDrive") for line in lines), lines
    assert "hostname=ci-drive" in lines
    assert f"runcmd=ran-{nonce}" in lines
    assert f"key={public}" in lines  # root's authorized_keys, the line as added
    # network_data.json's static address (no DHCP client in the image)
    assert "addr=eth0 10.0.2.15/24" in lines and "iface eth0 inet static" in lines


def test_nocloud_carries_the_key_and_its_network_config(debian, tmp_path):
    network = {"version": 2, "ethernets": {"eth0": {
        "addresses": ["10.0.2.15/24"], "gateway4": "10.0.2.2"}}}
    lines, public, nonce = boot(debian, tmp_path, "ci-nocloud", {"network_config": network})
    assert any(line.startswith("datasource=DataSourceNoCloud") for line in lines), lines
    assert "hostname=ci-nocloud" in lines and f"runcmd=ran-{nonce}" in lines
    assert f"key={public}" in lines  # NoCloud's meta-data public-keys
    assert "addr=eth0 10.0.2.15/24" in lines and "iface eth0 inet static" in lines

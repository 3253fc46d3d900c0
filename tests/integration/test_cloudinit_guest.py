"""The real cloud-init (issue 15): a Debian 12 guest with cloud-init from Debian's
packages (packaging/build-cloudinit-image.sh) booted by the appliance with a
config drive, under TCG. The guest reports on its serial console
(`VMAPP-REPORT ...` lines, printed after cloud-init's last stage by a unit of the
image) what cloud-init did with the drive:

- the hostname from meta_data.json,
- a runcmd of the user data ran (it writes a nonce the report prints),
- the user's SSH key (POST /v1/keys, cloud_init.keys) in root's authorized_keys,
- the static address network_data.json describes (user mode's 10.0.2.15/24, as
  an `inet static` stanza): the image's dhclient serves only the OpenStack
  datasource's ephemeral lease, ifupdown would need `inet dhcp`, so the address can only
  come from that static configuration.

NoCloud (the default datasource) is booted too: the key through meta-data's
public-keys, the address from the spec's network_config.

The metadata service (`"datasource": "metadata"`: no seed disk, Nova's SMBIOS
product name) on a libvirt host in a network namespace of its own
(packaging/local-hosts `up --netns`, where the service listens), on a user-mode
NIC and on a nat network (a fixed IP): cloud-init's OpenStack datasource finds
it and applies the hostname, a runcmd, the key and network_data.json; a
poller the runcmd starts prints /openstack/latest/user_data's marker whenever it
changes, so a user data change shows on the console without a reboot.

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

import libvirt
import pytest

from tests.appliance_process import ROOT
from tests.integration.netns_lab import netns_appliance

pytestmark = [pytest.mark.slow, pytest.mark.cloudinit]

IMAGE = Path(os.environ.get("VMAPP_CLOUDINIT_IMAGE",
                            ROOT / ".cache" / "images" / "cloudinit-debian12.qcow2"))
# Under TCG on a loaded 2-core machine: systemd, then cloud-init's four stages.
BOOT_TIMEOUT = float(os.environ.get("VMAPP_CLOUDINIT_TIMEOUT", "1200"))
REPORT = "VMAPP-REPORT "
# The nat network of the metadata case, inside the local host's own namespace.
NAT, NAT_SUBNET, NAT_IP, NAT_GATEWAY = "cimeta", "10.81.0.0/24", "10.81.0.10", "10.81.0.1"


def upload_image(appliance) -> None:
    if not IMAGE.exists():
        pytest.fail(f"{IMAGE} is missing: run `make test-cloudinit` "
                    "(packaging/build-cloudinit-image.sh)")
    with IMAGE.open("rb") as f:
        resp = appliance.api("PUT", "/v1/images/debian12", data=f, timeout=600,
                             headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code in (200, 201), resp.text


@pytest.fixture(scope="module")
def debian(appliance):
    upload_image(appliance)
    return appliance


@pytest.fixture(scope="module")
def nova(tmp_path_factory):
    """An appliance with the metadata service, on a host in a namespace of its own."""
    with netns_appliance(tmp_path_factory.mktemp("home"), metadata=True, network={
            "name": NAT, "kind": "nat", "subnet": NAT_SUBNET}) as (_host, app):
        upload_image(app)
        yield app


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
    # network_data.json's static address (an `inet static` stanza, not DHCP)
    assert "addr=eth0 10.0.2.15/24" in lines and "iface eth0 inet static" in lines
    assert any(line.startswith("route=default via 10.0.2.2 ") for line in lines), lines


def test_nocloud_carries_the_key_and_its_network_config(debian, tmp_path):
    network = {"version": 2, "ethernets": {"eth0": {
        "addresses": ["10.0.2.15/24"], "gateway4": "10.0.2.2"}}}
    lines, public, nonce = boot(debian, tmp_path, "ci-nocloud", {"network_config": network})
    assert any(line.startswith("datasource=DataSourceNoCloud") for line in lines), lines
    assert "hostname=ci-nocloud" in lines and f"runcmd=ran-{nonce}" in lines
    assert f"key={public}" in lines  # NoCloud's meta-data public-keys
    assert "addr=eth0 10.0.2.15/24" in lines and "iface eth0 inet static" in lines


# Started by the runcmd: prints user_data's marker line on the console at each change.
POLLER = """import re, time, urllib.request
seen = None
while True:
    try:
        with urllib.request.urlopen("http://169.254.169.254/openstack/latest/user_data",
                                    timeout=10) as resp:
            found = re.search("^# (mark-[0-9a-f]+)$", resp.read().decode(), re.M)
        mark = found.group(1) if found else "no-mark"
    except Exception as err:
        mark = "error-" + type(err).__name__
    if mark != seen:
        with open("/dev/ttyS0", "w") as tty:
            tty.write("VMAPP-USERDATA " + mark + chr(10))
        seen = mark
    time.sleep(2)
"""


def polling_user_data(nonce: str, mark: str) -> str:
    poller = "".join(f"      {line}\n" for line in POLLER.splitlines())
    return (f"#cloud-config\n# {mark}\n"
            "disable_root: false\nssh_genkeytypes: [ed25519]\n"
            f"runcmd:\n  - [sh, -c, 'echo ran-{nonce} > /run/vmapp-runcmd']\n"
            "  - - systemd-run\n    - --unit=vmapp-poll\n    - python3\n    - -c\n    - |\n"
            + poller)


@pytest.mark.parametrize("kind, network, address, gateway", [
    ("user", {"type": "user"}, "10.0.2.15/24", "10.0.2.2"),  # slirp connects for it
    ("nat", {"type": "network", "name": NAT, "ip": NAT_IP}, f"{NAT_IP}/24", NAT_GATEWAY),
])
def test_the_metadata_service_alone_configures_the_guest_and_serves_changes(
        nova, tmp_path, kind, network, address, gateway):
    name = f"ci-meta-{kind}"
    key_file = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@test",
                    "-f", str(key_file)], check=True)
    public = (tmp_path / "id_ed25519.pub").read_text().strip()
    nova.api("DELETE", "/v1/keys/laptop")
    made = nova.api("POST", "/v1/keys", json={"name": "laptop", "public_key": public})
    assert made.status_code == 201, made.text
    nonce, first, second = (f"{uuid.uuid4().hex[:12]}" for _ in range(3))
    cloud_init = {"datasource": "metadata", "keys": ["laptop"]}
    started = time.monotonic()
    nova.create_vm(name, image="debian12", memory=1024, network=network,
                   cloud_init={**cloud_init,
                               "user_data": polling_user_data(nonce, f"mark-{first}")})
    try:
        conn = libvirt.open(nova.libvirt_uri)
        try:
            (domain,) = (d for d in nova.domain_names() if d.endswith(name))
            xml = conn.lookupByName(domain).XMLDesc()
        finally:
            conn.close()
        # no seed disk; Nova's SMBIOS product name, which ds-identify looks for
        assert "cidata" not in xml and "<entry name='product'>OpenStack Nova</entry>" in xml
        lines = wait_report(nova, name)
        print(f"\n{name}: cloud-init's report after {time.monotonic() - started:.0f} s: {lines}")
        assert any(line.startswith("datasource=DataSourceOpenStack") for line in lines), lines
        assert f"hostname={name}" in lines and f"runcmd=ran-{nonce}" in lines
        assert f"key={public}" in lines  # meta_data.json's public_keys
        # network_data.json from the service: the static address and the default
        # route, by which the guest reaches the service once booted
        assert f"addr=eth0 {address}" in lines and "iface eth0 inet static" in lines
        assert any(line.startswith(f"route=default via {gateway} ") for line in lines), lines
        nova.wait_console(name, f"VMAPP-USERDATA mark-{first}", 120)
        changed = time.monotonic()
        resp = nova.api("PATCH", f"/v1/vms/{name}", json={"cloud_init": {
            **cloud_init, "user_data": polling_user_data(nonce, f"mark-{second}")}})
        assert resp.status_code in (200, 202), resp.text
        nova.wait_console(name, f"VMAPP-USERDATA mark-{second}", 120)
        print(f"{name}: the guest read the changed user data {time.monotonic() - changed:.1f} s "
              "after the PATCH")
        assert nova.console(name).count("Linux version") == 1  # no reboot
    finally:
        nova.api("DELETE", f"/v1/vms/{name}", params={"force": "true"})
        nova.api("DELETE", "/v1/keys/laptop")

"""Issue 16, adopt, on the real libvirtd: a domain defined from raw XML (as an admin
would with virsh define) on a qcow2 overlay of the demo image is adopted through
POST /v1/vms/adopt, started and stopped by the appliance; domains it cannot
represent, or whose disks lie elsewhere, are refused with the reason and stay
as they were; --copy-disks takes a copy and leaves the original file alone."""
from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET

import libvirt
import pytest
import yaml

from appliance.virt import images
from tests.appliance_process import DEMO_IMAGE, LIBVIRT_URI, READY_LINE, ROOT, Appliance, remove_domains
from tests.unit.appliance.test_kubevirt_export import VALIDATOR

pytestmark = pytest.mark.integration

BOOT_TIMEOUT = 240  # a TCG boot on a loaded 2-CPU machine


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """An appliance whose adopt_disk_dirs are a folder of this test's and the demo image's."""
    base = tmp_path_factory.mktemp("adopt")
    allowed, elsewhere = base / "images", base / "elsewhere"
    allowed.mkdir()
    elsewhere.mkdir()
    home = base / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps(
        {"adopt_disk_dirs": [str(allowed), str(DEMO_IMAGE.resolve().parent)]}))
    app = Appliance(home)
    conn = libvirt.open(LIBVIRT_URI)
    try:
        yield app.start(), conn, allowed, elsewhere
    finally:
        app.cleanup()
        remove_domains([d for d in conn.listAllDomains() if d.name().startswith(app.prefix)])
        conn.close()


def overlay(folder, name):
    path = folder / name
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b",
                    str(DEMO_IMAGE.resolve()), str(path)], check=True)
    return path


def define(conn, name, disk, nics=1, devices=""):
    """A domain as an admin writes it for `virsh define`: TCG, BIOS, q35, a virtio disk."""
    nic = "<interface type='user'><model type='virtio'/></interface>"
    xml = f"""<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os><type arch='x86_64' machine='q35'>hvm</type><boot dev='hd'/></os>
  <features><acpi/><apic/></features>
  <devices>
    <disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file='{disk}'/><target dev='vda' bus='virtio'/></disk>
    {nic * nics}
    <serial type='pty'><target port='0'/></serial>
    <console type='pty'><target type='serial' port='0'/></console>
    {devices}
  </devices>
</domain>"""
    return conn.defineXML(xml)


def adopt(app, **body):
    return app.api("POST", "/v1/vms/adopt", json=body, timeout=BOOT_TIMEOUT + 60)


def test_refused_domains_stay_as_they_were(world):
    app, conn, allowed, elsewhere = world
    two_nics = define(conn, app.prefix + "twonics", overlay(allowed, "twonics.qcow2"), nics=2)
    outside = define(conn, app.prefix + "outside", overlay(elsewhere, "outside.qcow2"))
    standalone = allowed / "standalone.qcow2"
    images.create_blank(standalone, 64)
    lonely = define(conn, app.prefix + "lonely", standalone)
    before = {dom.name(): dom.XMLDesc(0) for dom in (two_nics, outside, lonely)}

    resp = adopt(app, domain=two_nics.name(), name="twonics", image="demo")
    assert resp.status_code == 422, resp.text
    assert resp.json()["field"] == "domain" and "2 NICs" in resp.json()["reason"]
    resp = adopt(app, domain=outside.name(), name="outside", image="demo")
    assert resp.status_code == 422 and "outside the folders" in resp.json()["reason"], resp.text
    assert "--copy-disks" in resp.json()["reason"]
    resp = adopt(app, domain=lonely.name(), name="lonely")  # no image to infer: say which
    assert resp.status_code == 422 and resp.json()["field"] == "image", resp.text
    resp = adopt(app, domain=app.prefix + "nosuch")
    assert resp.status_code == 404, resp.text

    assert app.api("GET", "/v1/vms").json()["items"] == []
    for name, xml in before.items():
        assert conn.lookupByName(name).XMLDesc(0) == xml  # untouched


def test_a_domain_adopted_in_place_is_started_and_stopped_by_the_appliance(world):
    app, conn, allowed, _elsewhere = world
    disk = overlay(allowed, "legacy.qcow2")
    stranger = define(conn, app.prefix + "legacy", disk)
    uuid = stranger.UUIDString()

    resp = adopt(app, domain=stranger.name(), name="legacy", image="demo", state="running")
    assert resp.status_code == 201, resp.text
    vm = resp.json()["vm"]
    assert vm["id"] == uuid and vm["spec"]["memory"] == 256 and vm["spec"]["cpus"] == 1
    # ready, not just booted: acpid runs by then, so the stop below is a graceful one (pressed
    # before, the power button is lost and the stop waits out the 30 s grace period)
    app.wait_console("legacy", READY_LINE, timeout=BOOT_TIMEOUT)
    # The same libvirt domain (its UUID), renamed to the appliance's name and redefined.
    dom = conn.lookupByUUIDString(uuid)
    assert dom.name() == app.prefix + "legacy" and dom.isActive()
    assert app.prefix + "legacy" in app.domain_names()
    root = app.home / "vms" / uuid / "root.qcow2"
    sources = [s.get("file") for s in ET.fromstring(dom.XMLDesc(0)).iter("source")
               if s.get("file")]
    assert str(root) in sources
    assert root.is_symlink() and root.resolve() == disk.resolve()  # the disk in place

    resp = app.api("PUT", "/v1/vms/legacy/state", json={"state": "stopped"},
                   timeout=BOOT_TIMEOUT)
    assert resp.status_code == 200, resp.text
    app.wait_state("legacy", "stopped")
    assert not conn.lookupByUUIDString(uuid).isActive()
    events = app.api("GET", "/v1/events", params={"vm": "legacy"}).text
    assert "adopting libvirt domain" in events
    # and exported like any VM: the root's DataVolume asks for its file's size
    exported = app.api("GET", "/v1/vms/legacy/export", params={"disk_url": "https://x/l.qcow2"})
    assert exported.status_code == 200, exported.text
    (vm_doc,) = list(yaml.safe_load_all(exported.text))
    assert list(VALIDATOR.iter_errors(vm_doc)) == []
    storage = vm_doc["spec"]["dataVolumeTemplates"][0]["spec"]["storage"]
    assert storage["resources"]["requests"]["storage"] == (
        f"{-(-images.qcow2_virtual_size(disk) // (1 << 20))}Mi")
    resp = adopt(app, domain=app.prefix + "legacy", image="demo")  # now the appliance's own
    assert resp.status_code == 422 and "already an appliance's domain" in resp.text, resp.text


def test_copy_disks_copies_a_disk_from_elsewhere(world):
    app, conn, _allowed, elsewhere = world
    disk = overlay(elsewhere, "copied.qcow2")
    stamp = disk.stat().st_mtime_ns
    stranger = define(conn, app.prefix + "copied", disk)
    resp = adopt(app, domain=stranger.name(), name="copied", image="demo", copy_disks=True)
    assert resp.status_code == 201, resp.text
    uuid = resp.json()["vm"]["id"]
    root = app.home / "vms" / uuid / "root.qcow2"
    assert not root.is_symlink() and images.qcow2_backing(root) == (None, None)  # standalone
    assert images.qcow2_virtual_size(root) == images.qcow2_virtual_size(disk)
    assert disk.stat().st_mtime_ns == stamp  # the original is left alone
    dom = conn.lookupByUUIDString(uuid)
    assert dom.name() == app.prefix + "copied" and not dom.isActive()


def test_deleting_an_adopted_vm_keeps_its_disk_in_place(world):
    """Adopted with `vmctl adopt`; a delete undefines the domain and keeps the file."""
    app, conn, allowed, _elsewhere = world
    disk = overlay(allowed, "kept.qcow2")
    stranger = define(conn, app.prefix + "kept", disk)
    uuid = stranger.UUIDString()
    cli = subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(app.home), "adopt",
                          stranger.name(), "--name", "kept", "--image", "demo"],
                         capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert cli.returncode == 0 and f"kept: adopted from domain {stranger.name()}" in cli.stdout, (
        cli.stdout + cli.stderr)
    resp = app.api("DELETE", "/v1/vms/kept", timeout=120)
    assert resp.status_code == 204, resp.text
    with pytest.raises(libvirt.libvirtError):
        conn.lookupByUUIDString(uuid)
    assert not (app.home / "vms" / uuid).exists()
    assert images.qcow2_backing(disk)[0] == str(DEMO_IMAGE.resolve())  # the file stays

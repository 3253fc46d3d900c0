"""ISO images (issue 14, part B): the image store takes ISO 9660 files, told by the
"CD001" signature of their first volume descriptor (byte 0x8001), keeps them as they
came (kind "iso", shown in GET /v1/images and images/NAME.json), within the same size
cap; an ISO is never a root disk and a disk image is never install media."""
from __future__ import annotations

import subprocess

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.errors import Conflict, Invalid
from tests.unit.conftest import make_disk_image, make_iso_image

TOKEN = "sekrit"


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN),
                              headers={"Authorization": f"Bearer {TOKEN}"})


def test_an_iso_is_kept_as_it_came_with_kind_iso(client, service, tmp_path):
    iso = tmp_path / "netinst.iso"
    make_iso_image(iso, size=256 << 10)
    with open(iso, "r+b") as f:  # content of its own, to compare after the upload
        f.seek(0x9000)
        f.write(b"debian installer")
    resp = client.simulate_put("/v1/images/netinst", body=iso.read_bytes(),
                               headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 201, resp.text
    image = resp.json
    assert image["kind"] == "iso" and image["format"] == "raw"
    assert image["path"].endswith("/netinst.iso") and image["virtual_size"] == 256 << 10
    with open(image["path"], "rb") as stored:
        assert stored.read() == iso.read_bytes()  # not converted: the same bytes
    listed = {i["name"]: i["kind"] for i in client.simulate_get("/v1/images").json["items"]}
    assert listed["netinst"] == "iso" and listed["demo"] == "disk"


def test_a_disk_image_stays_a_converted_disk(service, tmp_path):
    disk = tmp_path / "disk.img"
    make_disk_image(disk)
    image = service.import_image_file("plain", disk)
    assert image["kind"] == "disk" and image["format"] == "qcow2"


def test_the_signature_must_be_at_its_offset_and_other_formats_win(service, tmp_path):
    early = tmp_path / "early.img"
    early.write_bytes(b"\0" * 0x1001 + b"CD001" + b"\0" * 0x9000)  # not at 0x8001
    with pytest.raises(Invalid, match="not a disk image"):
        service.import_image_file("early", early)
    qcow = tmp_path / "q.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(qcow), "1M"], check=True)
    with open(qcow, "r+b") as f:  # a qcow2 that also says CD001: read as the qcow2 it is
        f.seek(0x8001)
        f.write(b"CD001")
    assert service.import_image_file("q", qcow)["kind"] == "disk"


def test_an_iso_is_bounded_by_the_image_cap(service, config, tmp_path):
    config.max_image_bytes = 128 << 10
    iso = tmp_path / "big.iso"
    make_iso_image(iso, size=256 << 10)
    with pytest.raises(Invalid, match="larger than the maximum"):
        service.import_image_file("big", iso)
    assert not service.store.image_exists("big")


def test_an_iso_is_not_a_root_disk_and_a_disk_image_not_media(service, tmp_path):
    iso = tmp_path / "m.iso"
    make_iso_image(iso)
    service.import_image_file("media", iso)
    with pytest.raises(Invalid, match="ISO image") as refusal:
        service.create_vm({"name": "web1", "image": "media"})
    assert refusal.value.field == "image"
    with pytest.raises(Invalid, match="not an ISO image") as refusal:
        service.create_vm({"name": "web1", "cdroms": ["", "demo"]})
    assert refusal.value.field == "cdroms[1]"
    service.create_vm({"name": "web1", "cdroms": ["media"], "state": "stopped"})
    with pytest.raises(Conflict, match="web1"):
        service.delete_image("media")

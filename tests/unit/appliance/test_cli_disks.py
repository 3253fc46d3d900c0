"""vmctl disk and cdrom (issue 14) against the real REST app served over HTTP in a thread
(the controller on libvirt's test driver): a stopped VM's disks added, grown, refused a
shrink, removed; its CD-ROM media inserted and ejected."""
from __future__ import annotations

import json

import pytest

from tests.unit.conftest import make_iso_image

@pytest.fixture
def web1(vmctl, controller):
    code, out, err = vmctl("create", "web1", "--stopped")
    assert code == 0, err
    return out


def test_disk_add_resize_list_remove(vmctl, service, web1):
    assert vmctl("disk", "add", "web1", "data")[:2] == (0, "web1: disk data added, 1024 MiB\n")
    assert vmctl("disk", "resize", "web1", "data", "2G")[:2] == (
        0, "web1: disk data resized, 2048 MiB\n")
    code, out, _ = vmctl("disk", "list", "web1")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "SIZE", "MIB", "ATTACHED", "MIB", "FILE"]
    assert rows[0].split() == ["data", "2048", "-", "disk-data.qcow2"]
    code, _, err = vmctl("disk", "resize", "web1", "data", "1G")
    assert code == 1 and "HTTP 422" in err and "cannot shrink" in err
    assert "(field: disks[0].size)" in err
    assert vmctl("disk", "remove", "web1", "data")[:2] == (
        0, "web1: disk data removed and deleted\n")
    code, out, _ = vmctl("--json", "disk", "list", "web1")
    assert json.loads(out) == []


def test_cdrom_insert_eject(vmctl, service, web1, tmp_path):
    make_iso_image(tmp_path / "m.iso")
    service.import_image_file("media", tmp_path / "m.iso")
    service.update_vm("web1", {"cdroms": [""]})
    assert vmctl("cdrom", "insert", "web1", "0", "media")[:2] == (0, "web1: drive 0 holds media\n")
    code, out, _ = vmctl("--json", "cdrom", "list", "web1")
    assert json.loads(out) == [{"index": 0, "image": "media"}]
    assert vmctl("cdrom", "eject", "web1", "0")[:2] == (0, "web1: drive 0 ejected\n")
    code, _, err = vmctl("cdrom", "insert", "web1", "0", "demo")
    assert code == 1 and "not an ISO image" in err
    code, _, err = vmctl("cdrom", "insert", "web1", "3", "media")
    assert code == 1 and "HTTP 404" in err

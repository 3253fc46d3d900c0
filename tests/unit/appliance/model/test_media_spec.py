"""The spec's install media and boot order (appliance/model/media.py): defaults, bounds,
and refusals with the field's path."""
from __future__ import annotations

import pytest

from appliance.errors import Invalid
from appliance.model.spec import validate


def _spec(**fields):
    return validate({"name": "web1", "image": "demo", **fields})


def test_defaults_are_no_drive_and_the_disk_first():
    spec = _spec()
    assert spec["cdroms"] == [] and spec["boot_order"] == ["hd"]
    assert _spec(cdroms=None, boot_order=None)["boot_order"] == ["hd"]


def test_drives_hold_image_names_or_nothing():
    assert _spec(cdroms=["debian-12", ""], boot_order=["cdrom", "hd", "network"])["cdroms"] == \
        ["debian-12", ""]


@pytest.mark.parametrize("fields, field, reason", [
    ({"cdroms": ["a", "b", "c", "d", "e"]}, "cdroms", "at most 4"),
    ({"cdroms": "debian"}, "cdroms", "must be a list"),
    ({"cdroms": [7]}, "cdroms[0]", "ISO image name"),
    ({"cdroms": ["", "/etc/shadow"]}, "cdroms[1]", "DNS label"),
    ({"cdroms": ["../../x"]}, "cdroms[0]", "DNS label"),
    ({"cdroms": ["x" * 64]}, "cdroms[0]", "DNS label"),
    ({"boot_order": []}, "boot_order", "at least one"),
    ({"boot_order": ["hd", "hd"]}, "boot_order[1]", "named twice"),
    ({"boot_order": ["floppy"]}, "boot_order[0]", "one of hd, cdrom, network"),
])
def test_refusals_name_the_field(fields, field, reason):
    with pytest.raises(Invalid) as refusal:
        _spec(**fields)
    assert refusal.value.field == field and reason in refusal.value.reason

"""The volume XML of a host with storage of its own (appliance/virt/storage.py)."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from appliance.virt import storage


class RecordingPool:
    """What create_volume asks libvirt to make."""

    def __init__(self) -> None:
        self.xml: list[str] = []

    def createXML(self, xml: str, flags: int) -> str:  # noqa: N802 - libvirt's name
        self.xml.append(xml)
        return "vol"


def test_qcow2_volumes_are_v3_so_that_a_backup_can_store_its_bitmaps(monkeypatch):
    # libvirt 9.0's default is qcow2 v2 (0.10): "Cannot store dirty bitmaps in qcow2 v2 files"
    monkeypatch.setattr(storage, "lookup", lambda pool, name: None)
    pool = RecordingPool()
    storage.create_volume(pool, "root.qcow2", 1 << 30, "qcow2", backing=("/img/demo", "qcow2"))
    storage.create_volume(pool, "seed.raw", 1 << 20, "raw")
    qcow2, raw = (ET.fromstring(x) for x in pool.xml)
    assert qcow2.findtext("target/compat") == "1.1"
    assert qcow2.find("target/format").get("type") == "qcow2"
    assert raw.find("target/compat") is None

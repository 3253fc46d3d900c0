"""`--accel auto` (appliance/accel.py): a start without an image named demo (a .deb
install's first start) runs TCG without remembering it, so that a later start that
finds the image still probes KVM; a probed verdict is remembered per host kernel."""
from __future__ import annotations

import json

from appliance import accel
from appliance.store import Store

IMAGE = {"path": "/nonexistent/demo.qcow2", "format": "qcow2"}


def test_no_image_is_tcg_and_not_remembered(tmp_path, monkeypatch):
    store = Store(tmp_path / "appliance.db")
    probes = []
    monkeypatch.setattr(accel, "probe_kvm", lambda conn, image, fmt: probes.append(image) or (
        True, "a KVM guest booted in 1.0 s"))

    first = accel.resolve(store, None, "auto", None)
    assert first["accel"] == "tcg" and not first["probed"]
    assert store.get_meta("accel_verdict") is None
    assert probes == []

    # the image arrives (uploaded as demo): the next start probes, and keeps that verdict
    second = accel.resolve(store, None, "auto", IMAGE)
    assert second["accel"] == "kvm" and second["probed"]
    assert len(probes) == 1
    assert json.loads(store.get_meta("accel_verdict"))["accel"] == "kvm"

    # remembered: no probe at the next start, image or not
    assert accel.resolve(store, None, "auto", IMAGE)["accel"] == "kvm"
    assert accel.resolve(store, None, "auto", None)["accel"] == "kvm"
    assert len(probes) == 1


def test_forced_accel_is_not_probed(tmp_path, monkeypatch):
    store = Store(tmp_path / "appliance.db")
    monkeypatch.setattr(accel, "probe_kvm", lambda *a: (_ for _ in ()).throw(AssertionError))
    assert accel.resolve(store, None, "kvm", None)["accel"] == "kvm"
    assert accel.resolve(store, None, "tcg", IMAGE)["accel"] == "tcg"
    assert store.get_meta("accel_verdict") is None

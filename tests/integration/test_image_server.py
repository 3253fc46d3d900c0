"""Issue 9, findings 4, 6 and 14 end to end: a real `vmctl serve` (on libvirt's
test driver, no libvirtd) removes a killed upload's file at start, refuses a
hostile image, an import from outside its directory, and uploads past the cap
(chunked, or declared before the body is sent), and still takes a good image.
Moved out of tests/unit/appliance/test_image_security.py (which builds the hostile
images and checks the same rules through the service and the REST app): a
server process of its own is an integration test, and its start was 2 s of
the unit suite.
"""
from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
import requests

from tests.appliance_process import Appliance
from tests.unit.appliance.test_image_security import MIB, _plant, qcow2_with_data_file
from tests.unit.conftest import make_disk_image


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret"
    _plant(path)
    return path


@pytest.fixture
def appliance(tmp_path):
    home = tmp_path / "home"
    (home / "images").mkdir(parents=True)
    # What a killed upload leaves behind, and a file that is not the appliance's to remove.
    (home / "images" / ".upload-old-0123456789abcdef").write_bytes(b"\0" * 4096)
    (home / "images" / "admin-notes.txt").write_text("keep me\n")
    (home / "config.json").write_text(json.dumps({"home": str(home), "max_image_bytes": 8 * MIB}))
    demo = tmp_path / "demo.img"
    make_disk_image(demo)
    app = Appliance(home, libvirt_uri="test:///default", extra_args=["--no-mount", "--demo-image", str(demo)])
    app.start()
    yield app
    app.cleanup()


def test_real_server_refuses_hostile_and_oversized_images(appliance, tmp_path, secret):
    images_dir = appliance.home / "images"
    # Finding 14: the stale upload is gone after start; the admin's own file is not.
    assert not (images_dir / ".upload-old-0123456789abcdef").exists()
    assert (images_dir / "admin-notes.txt").read_text() == "keep me\n"
    assert [i["name"] for i in appliance.api("GET", "/v1/images").json()["items"]] == ["demo"]

    evil = tmp_path / "evil.qcow2"
    qcow2_with_data_file(evil, secret)
    resp = appliance.api("PUT", "/v1/images/evil", data=evil.read_bytes(),
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 422 and resp.json()["field"] == "image", resp.text
    resp = appliance.api("POST", "/v1/images", json={"name": "evil", "path": str(secret)})
    assert resp.status_code == 422 and resp.json()["field"] == "path", resp.text

    # A chunked body (no Content-Length) is cut off past max_image_bytes.
    def chunks():
        yield b"\0" * 510 + b"\x55\xaa" + b"\0" * (MIB - 512)
        for _ in range(15):
            yield b"\0" * MIB
    resp = appliance.api("PUT", "/v1/images/endless", data=chunks(),
                         headers={"Content-Type": "application/octet-stream"})
    assert resp.status_code == 422 and resp.json()["field"] == "body", resp.text

    # A declared 1 TiB is refused at once, before the body is sent.
    with socket.create_connection(("127.0.0.1", appliance.port), timeout=10) as sock:
        sock.sendall((f"PUT /v1/images/huge HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {appliance.token}\r\n"
                      f"Content-Type: application/octet-stream\r\nContent-Length: {1 << 40}\r\n\r\n").encode())
        assert sock.recv(4096).startswith(b"HTTP/1.1 422")
    assert [i["name"] for i in appliance.api("GET", "/v1/images").json()["items"]] == ["demo"]
    assert not [p for p in images_dir.iterdir() if p.name.startswith(".upload-")]

    # Still takes a good image.
    good = tmp_path / "good.img"
    make_disk_image(good)
    resp = appliance.api("PUT", "/v1/images/good", data=good.read_bytes())
    assert resp.status_code == 201 and resp.json()["format"] == "qcow2", resp.text
    assert requests.get(appliance.url + "/healthz", timeout=5).status_code == 200

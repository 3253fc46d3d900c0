"""Issue 9, findings 4, 14 and the image part of 6: images cannot reach host files,
path imports come only from the admin's import directory, uploads are bounded,
and a killed upload's file does not outlive the next start.

The hostile images are built for real with qemu-img (or written as the text
qemu reads): each names a file the test made that stands in for a root-only
secret. They go through the service and the REST API (falcon's TestClient over a
real store); tests/integration/test_image_server.py sends them to a real `vmctl serve`.
"""
from __future__ import annotations

import errno
import io
import json
import os
import subprocess
from pathlib import Path
from typing import Callable

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.errors import Invalid
from appliance.virt import images
from tests.unit.conftest import make_disk_image

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SECRET = b"root:$y$j9T$stand-in-for-a-shadow-line:19000:0:99999:7:::\n"
MIB = 1 << 20


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


@pytest.fixture
def import_dir(config) -> Path:
    # Spelled out rather than config.import_dir, so that the tests also run
    # (and fail) against the code from before the fix.
    path = config.home / "images" / "import"
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture
def secret(tmp_path) -> Path:
    path = tmp_path / "secret"
    _plant(path)
    return path


def _plant(path: Path) -> None:
    """The stand-in for /etc/shadow: 1 MiB (so extents and data files are whole), 0600."""
    path.write_bytes(SECRET.ljust(MIB, b"\0"))
    path.chmod(0o600)


def _qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


# -- the hostile images --------------------------------------------------------------------
def qcow2_with_data_file(dest: Path, secret: Path) -> None:
    _qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={secret},data_file_raw=on", str(dest), "1M")
    _plant(secret)  # qemu-img create emptied the data file; the secret is a host file that is already there


def qcow2_with_backing_file(dest: Path, secret: Path) -> None:
    _qemu_img("create", "-q", "-f", "qcow2", "-b", str(secret), "-F", "raw", str(dest))


VMDK_DESCRIPTOR = ('# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\n'
                   'createType="monolithicFlat"\n\n# Extent description\nRW 2048 FLAT "{secret}" 0\n')


def vmdk_flat_descriptor(dest: Path, secret: Path) -> None:
    dest.write_text(VMDK_DESCRIPTOR.format(secret=secret))


def vmdk_descriptor_with_boot_signature(dest: Path, secret: Path) -> None:
    """The same descriptor padded so that it also "looks like a raw disk" (55 AA at 510)."""
    text = VMDK_DESCRIPTOR.format(secret=secret).encode()
    text += b"#" + b"x" * (510 - len(text) - 1) + b"\x55\xaa\n"
    assert text[510:512] == b"\x55\xaa"
    dest.write_bytes(text)


HOSTILE: dict[str, Callable[[Path, Path], None]] = {
    "qcow2-data-file": qcow2_with_data_file,
    "qcow2-backing-file": qcow2_with_backing_file,
    "vmdk-flat-descriptor": vmdk_flat_descriptor,
    "vmdk-descriptor-with-boot-signature": vmdk_descriptor_with_boot_signature,
}
# Standalone but not accepted: only qcow2 and raw are (each of these can name other files).
OTHER_FORMATS = ("vmdk", "vdi", "vpc", "vhdx", "qed")


def _build(kind: str, directory: Path, secret: Path) -> Path:
    if kind in HOSTILE:
        path = directory / f"{kind}.img"
        HOSTILE[kind](path, secret)
    else:
        path = directory / f"standalone.{kind}"
        _qemu_img("create", "-q", "-f", kind, str(path), "1M")
    return path


def _assert_nothing_stored(service, config) -> None:
    assert [i["name"] for i in service.list_images()] == ["demo"]
    leftovers = [p.name for p in config.images_dir.iterdir() if not p.name.startswith("demo.") and p.name != "import"]
    assert leftovers == []


ALL_REFUSED = [*HOSTILE, *OTHER_FORMATS]


# -- finding 4: refused through the service ---------------------------------------------------
@pytest.mark.parametrize("kind", ALL_REFUSED)
def test_hostile_image_is_refused_by_the_service(service, config, import_dir, secret, kind):
    path = _build(kind, import_dir, secret)
    with pytest.raises(Invalid) as upload:
        with open(path, "rb") as body:
            service.upload_image("evil", body, path.stat().st_size)
    assert upload.value.field == "image"
    with pytest.raises(Invalid) as imported:
        service.import_image("evil", str(path))
    assert imported.value.field == "image"
    assert SECRET.decode()[:20] not in upload.value.reason + imported.value.reason
    _assert_nothing_stored(service, config)


# -- finding 4: refused through the REST API ---------------------------------------------------
@pytest.mark.parametrize("kind", ALL_REFUSED)
def test_hostile_image_is_refused_through_the_api(client, service, config, import_dir, secret, kind):
    path = _build(kind, import_dir, secret)
    put = client.simulate_put("/v1/images/evil", body=path.read_bytes(),
                              headers={"Content-Type": "application/octet-stream"})
    assert put.status_code == 422, put.text
    assert put.json["field"] == "image"
    post = client.simulate_post("/v1/images", json={"name": "evil", "path": str(path)})
    assert post.status_code == 422, post.text
    assert post.json["field"] == "image"
    assert "stand-in-for-a-shadow" not in put.text + post.text
    assert client.simulate_get("/v1/images/evil").status_code == 404
    _assert_nothing_stored(service, config)


def test_path_imports_only_from_the_import_directory(client, service, config, import_dir, tmp_path):
    outside = tmp_path / "outside.img"
    make_disk_image(outside)  # a good disk image root can read, but not the admin's to offer
    (import_dir / "link.img").symlink_to(outside)
    (import_dir / "sub").mkdir()
    refused = [str(outside), str(import_dir / "link.img"), str(import_dir / ".." / ".." / ".." / "outside.img"),
               "../../../outside.img", "link.img", str(import_dir), "sub", "/etc/hostname", ""]
    for path in refused:
        resp = client.simulate_post("/v1/images", json={"name": "copied", "path": path})
        assert resp.status_code == 422, (path, resp.text)
        assert resp.json["field"] == "path", (path, resp.json)
    _assert_nothing_stored(service, config)

    make_disk_image(import_dir / "good.img")
    resp = client.simulate_post("/v1/images", json={"name": "good", "path": str(import_dir / "good.img")})
    assert resp.status_code == 201, resp.text
    make_disk_image(import_dir / "sub" / "rel.img")
    resp = client.simulate_post("/v1/images", json={"name": "rel", "path": "sub/rel.img"})
    assert resp.status_code == 201, resp.text
    assert (import_dir / "good.img").exists()  # an import copies; the admin's file stays


def test_a_path_realpath_cannot_read_is_422_not_500(client, service, config, import_dir):
    """Review of the fixes: readlink of another namespace's /proc/1/root is EACCES even for
    root, and os.path.realpath let the PermissionError out: POST /v1/images answered 500.
    (Where the link is readable, the path is simply outside the import directory.)"""
    (import_dir / "elsewhere").symlink_to("/proc/1/root/etc")
    for path in ("/proc/1/root/etc/shadow", "elsewhere/shadow"):
        resp = client.simulate_post("/v1/images", json={"name": "copied", "path": path})
        assert resp.status_code == 422 and resp.json["field"] == "path", (path, resp.text[:300])
    _assert_nothing_stored(service, config)


def test_path_imports_can_be_switched_off(client, service, config, import_dir):
    config.image_import_dir = None
    make_disk_image(import_dir / "good.img")
    resp = client.simulate_post("/v1/images", json={"name": "good", "path": str(import_dir / "good.img")})
    assert resp.status_code == 422 and resp.json["field"] == "path"


def test_accepted_images_are_stored_as_fresh_standalone_qcow2(client, service, config, tmp_path):
    """What a VM is started from names nothing outside the image store: the
    stored file is a qcow2 qemu-img wrote, with the guest's data and nothing
    else of the upload (no snapshots, no references), and a VM's overlay on it
    is a chain of exactly two files."""
    raw = tmp_path / "disk.img"
    make_disk_image(raw)
    with open(raw, "r+b") as f:
        f.seek(300_000)
        f.write(b"guest data that must survive" * 100)
    qcow = tmp_path / "disk.qcow2"
    _qemu_img("convert", "-f", "raw", "-O", "qcow2", str(raw), str(qcow))
    _qemu_img("snapshot", "-c", "before-upload", str(qcow))
    for name, source, fmt in (("fromraw", raw, "raw"), ("fromqcow", qcow, "qcow2")):
        resp = client.simulate_put(f"/v1/images/{name}", body=source.read_bytes())
        assert resp.status_code == 201, resp.text
        image = resp.json
        assert image["format"] == "qcow2" and image["path"] == str(config.images_dir / f"{name}.qcow2")
        details = images.info(image["path"], "qcow2")
        specific = details["format-specific"]["data"]
        assert "backing-filename" not in details and "full-backing-filename" not in details
        assert "data-file" not in specific and "snapshots" not in details
        # Same guest-visible bytes as what was sent.
        subprocess.run(["qemu-img", "compare", "-q", "-f", fmt, "-F", "qcow2", str(source), image["path"]],
                       check=True, timeout=60)
        overlay = tmp_path / f"{name}-root.qcow2"
        images.create_overlay(image["path"], image["format"], overlay)
        chain = json.loads(subprocess.run(
            ["qemu-img", "info", "--backing-chain", "--output=json", "-U", str(overlay)],
            capture_output=True, text=True, check=True, timeout=60).stdout)
        assert [c["filename"] for c in chain] == [str(overlay), image["path"]]
        assert all("data-file" not in c["format-specific"]["data"] for c in chain)
    assert sorted(p.name for p in config.images_dir.iterdir() if p.is_file()) == [
        "demo.qcow2", "fromqcow.qcow2", "fromraw.qcow2"]


# -- finding 6 (images): bounded uploads ---------------------------------------------------------
class _Body(io.RawIOBase):
    """A request body that declares `size` bytes of a raw disk and counts what
    was read. It gives up after 80 MiB, so that code without the checks fails
    the test instead of filling the disk."""

    GIVES_UP_AFTER = 80 * MIB

    def __init__(self, size: int):
        self.size, self.sent = size, 0

    def read(self, n: int = -1) -> bytes:
        left = min(self.size, self.GIVES_UP_AFTER) - self.sent
        n = left if n < 0 else min(n, left)
        chunk = bytearray(n)
        if self.sent == 0 and n >= 512:
            chunk[510:512] = b"\x55\xaa"
        self.sent += n
        return bytes(chunk)


def test_declared_length_over_the_cap_is_refused_before_writing(service, config):
    config.max_image_bytes = 4 * MIB
    body = _Body(8 * MIB)
    with pytest.raises(Invalid) as err:
        service.upload_image("big", body, 8 * MIB)
    assert err.value.field == "body" and "maximum" in err.value.reason
    assert body.sent == 0
    _assert_nothing_stored(service, config)


def test_declared_length_over_the_free_space_is_refused_before_writing(service, config):
    config.max_image_bytes = 1 << 62
    st = os.statvfs(config.images_dir)
    more_than_free = st.f_bavail * st.f_frsize + MIB
    body = _Body(more_than_free)
    with pytest.raises(Invalid) as err:
        service.upload_image("huge", body, more_than_free)
    assert err.value.field == "body" and "free space" in err.value.reason
    assert err.value.http_status == 507 and err.value.errno == errno.ENOSPC  # NoSpace (make soak)
    assert body.sent == 0
    _assert_nothing_stored(service, config)


def test_unknown_length_stops_at_the_cap_and_leaves_no_file(service, config):
    config.max_image_bytes = 4 * MIB
    body = _Body(64 * MIB)
    with pytest.raises(Invalid) as err:
        service.upload_image("endless", body, None)
    assert err.value.field == "body"
    assert body.sent <= 6 * MIB  # it stopped reading soon after the cap
    _assert_nothing_stored(service, config)


def test_upload_over_the_cap_is_422_through_the_api(client, service, config):
    config.max_image_bytes = 1 * MIB
    disk = bytearray(2 * MIB)
    disk[510:512] = b"\x55\xaa"
    resp = client.simulate_put("/v1/images/big", body=bytes(disk))
    assert resp.status_code == 422 and resp.json["field"] == "body", resp.text
    _assert_nothing_stored(service, config)


def test_small_compressed_qcow2_that_expands_past_the_cap_is_refused(client, service, config, tmp_path):
    """A few KiB uploaded that would become 8 MiB once stored."""
    config.max_image_bytes = 4 * MIB
    raw = tmp_path / "big.img"
    with open(raw, "wb") as f:
        f.write((b"\x55\xaa" + b"compressible " * 40) * (8 * MIB // 522) )
    packed = tmp_path / "packed.qcow2"
    _qemu_img("convert", "-c", "-f", "raw", "-O", "qcow2", str(raw), str(packed))
    assert packed.stat().st_size < config.max_image_bytes
    resp = client.simulate_put("/v1/images/bomb", body=packed.read_bytes())
    assert resp.status_code == 422, resp.text
    assert resp.json["field"] == "image" and "maximum" in resp.json["reason"]
    _assert_nothing_stored(service, config)

"""Typing into a real guest's serial console and taking its screen, through the mount
and REST of a real `vmctl serve` (its console broker, libvirtd, a TCG demo guest)."""
from __future__ import annotations

import errno
import io
import os
import time

import pytest
from PIL import Image

from tests.appliance_process import READY_LINE, Appliance
from tests.fs.conftest import sh, wait_mounted

pytestmark = pytest.mark.integration
EBUSY = os.strerror(errno.EBUSY)


def _mounted(app: Appliance):
    mnt = app.home / "mnt"
    wait_mounted(mnt, None, app.home / "logs" / "mount.log")
    return mnt


def _ok(mnt, command: str) -> str:
    result = sh(command, cwd=mnt, timeout=180)
    assert result.returncode == 0, f"{command}: {result.stderr}"
    return result.stdout


def _wait_in_console(mnt, name: str, text: str, timeout: float = 60) -> str:
    """`cat vms/NAME/console` until text is in it."""
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        seen = _ok(mnt, f"cat vms/{name}/console")
        if text in seen:
            return seen
        time.sleep(0.3)
    raise AssertionError(f"{text!r} not in vms/{name}/console within {timeout} s:\n{seen[-2000:]}")


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()  # the whole image decodes, not only its header
        return image.size


def test_type_into_a_real_guest_and_take_its_screen(appliance, tmp_path):
    app = appliance
    mnt = _mounted(app)
    _ok(mnt, "mkdir vms/tty1 && echo running > vms/tty1/state")
    app.wait_console("tty1", READY_LINE, 120)  # its root shell on ttyS0 reads from here on

    # The test: the line is typed into the guest's shell, which writes the answer.
    _ok(mnt, "echo 'echo MARK-$((6*7)) > /dev/console' >> vms/tty1/console")
    _wait_in_console(mnt, "tty1", "MARK-42")

    # REST: the same, with a raw body and with JSON (a control character as an escape).
    resp = app.api("PUT", "/v1/vms/tty1/console", data=b"echo REST-$((5*5))\n",
                   headers={"Content-Type": "text/plain"})
    assert resp.status_code == 200 and resp.json() == {"name": "tty1", "typed": 19}, resp.text
    app.wait_console("tty1", "REST-25", 60)
    resp = app.api("PUT", "/v1/vms/tty1/console", json={"console": "echo JSON-$((2+2))\r"})
    assert resp.status_code == 200, resp.text
    app.wait_console("tty1", "JSON-4", 60)

    # The screen: a PNG through cp (the mount) and GET (REST).
    copy = tmp_path / "screen.png"
    _ok(mnt, f"cp vms/tty1/screen.png {copy}")
    assert "PNG image data" in _ok(mnt, "file vms/tty1/screen.png")
    width, height = _png_size(copy.read_bytes())
    assert width >= 320 and height >= 200
    resp = app.api("GET", "/v1/vms/tty1/screen.png")
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"
    assert _png_size(resp.content) == (width, height)

    # Stopped: both files say why, in both views; the directory still lists.
    _ok(mnt, "echo force-stop > vms/tty1/state")
    for command in ("echo ls >> vms/tty1/console", "cat vms/tty1/screen.png > /dev/null"):
        result = sh(command, cwd=mnt)
        assert result.returncode == 1 and EBUSY in result.stderr, (command, result.stderr)
    assert "screen.png" in _ok(mnt, "ls vms/tty1")
    for method, path in (("PUT", "/v1/vms/tty1/console"), ("GET", "/v1/vms/tty1/screen.png")):
        resp = app.api(method, path, data=b"ls\n")
        assert resp.status_code == 409 and "start it first" in resp.json()["reason"], resp.text


def test_a_vm_without_graphics_has_no_screen(appliance):
    app = appliance
    mnt = _mounted(app)
    app.create_vm("nogfx1", graphics="none")
    app.wait_state("nogfx1", "running")
    resp = app.api("GET", "/v1/vms/nogfx1/screen.png")
    assert resp.status_code == 409 and resp.json()["field"] == "graphics", resp.text
    result = sh("cat vms/nogfx1/screen.png > /dev/null", cwd=mnt)
    assert result.returncode == 1 and EBUSY in result.stderr, result.stderr
    _ok(mnt, "echo force-stop > vms/nogfx1/state && rmdir vms/nogfx1")

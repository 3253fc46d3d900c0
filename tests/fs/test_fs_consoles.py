"""vms/NAME/console typed into and vms/NAME/screen.png, through a real FUSE mount and
real shell commands (echo, printf, dd, cp, file), as root and as other users.

The mount runs the real service and the broker's real client (appliance/consoles/
client.py); the broker itself is a fake on the home's console socket that speaks the
broker's protocol (appliance/consoles/protocol.py), records what it is asked to type
and answers screenshots with a PNG made by Pillow. (The real broker and a real guest:
tests/integration/test_console_files.py.)"""
from __future__ import annotations

import errno
import io
import os
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image

from appliance.access import SYSTEM, acting_as
from appliance.consoles import protocol
from appliance.files import CONSOLE_INPUT_MAX_BYTES
from tests.fs.conftest import ROOT, Mount

EACCES = os.strerror(errno.EACCES)
EBUSY = os.strerror(errno.EBUSY)
EFBIG = os.strerror(errno.EFBIG)
VIEWER = 5002  # a uid with no passwd entry, mapped to a viewer


def _png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 200)).save(out, "PNG")
    return out.getvalue()


class FakeBroker(socketserver.ThreadingUnixStreamServer):
    """The console broker's protocol on its socket: input is recorded, screenshot is a PNG."""

    daemon_threads = True

    def __init__(self, path: Path):
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
        self.typed: list[tuple[str, bytes]] = []
        self.png = _png()
        self.shots = 0
        super().__init__(str(path), _Handler)


class _Handler(socketserver.StreamRequestHandler):
    server: FakeBroker

    def handle(self) -> None:
        request = protocol.parse_request(self.rfile.readline(protocol.HEADER_MAX + 1))
        if request.op == "input":
            self.server.typed.append((request.vm, self.rfile.read(request.size)))
            self.wfile.write(protocol.ok())
        elif request.op == "screenshot":
            self.server.shots += 1
            self.wfile.write(protocol.ok(size=len(self.server.png), type="image/png"))
            self.wfile.write(self.server.png)
        else:
            self.wfile.write(protocol.encode({"ok": False, "status": 500, "reason": "not faked"}))


@pytest.fixture
def console_mount(tmp_path, open_dir) -> Iterator[tuple[Mount, FakeBroker]]:
    """A mount other users reach, a viewer mapped, a fake broker, web1 running."""
    m = Mount(tmp_path, mnt=open_dir / "mnt")
    broker: FakeBroker | None = None
    try:
        m.start()
        broker = FakeBroker(m.config.console_socket)
        threading.Thread(target=broker.serve_forever, daemon=True).start()
        m.service.store.insert_user({"name": "vera", "role": "viewer", "projects": ["default"],
                                     "created": time.time(), "disabled": 0})
        result = subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(m.home),
                                 "mount-map", "user", str(VIEWER), "--as", "vera"], cwd=ROOT,
                                capture_output=True, text=True, timeout=60, check=False)
        assert result.returncode == 0, result.stderr
        time.sleep(2.1)  # the mount reads its map again at most every 2 s (fs/identity.py)
        m.mkvm("web1", "running")
        yield m, broker
    finally:
        if broker is not None:
            broker.shutdown()
            broker.server_close()
        m.stop()


def _typed(broker: FakeBroker) -> list[bytes]:
    return [data for _, data in broker.typed]


def as_uid(uid: int, command: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                           "bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def test_a_shell_s_writes_are_typed_as_they_are(console_mount):
    m, broker = console_mount
    vm_id = m.service.get_vm("web1")["id"]
    result = m.sh("echo 'echo MARK-$((6*7)) > /dev/console' >> vms/web1/console"
                  " && printf 'a\\003\\033[A\\r' >> vms/web1/console"
                  " && echo ls > vms/web1/console")  # `>` (O_TRUNC) types too
    assert result.returncode == 0, result.stderr
    every_byte = bytes(range(256))
    with open(m.vm("web1") / "console", "ab", buffering=0) as console:
        assert console.write(every_byte) == 256  # one write(2): NUL and non-UTF-8 bytes too
    assert _typed(broker) == [b"echo MARK-$((6*7)) > /dev/console\n", b"a\x03\x1b[A\r", b"ls\n",
                              every_byte]
    assert {vm for vm, _ in broker.typed} == {vm_id}  # the broker is handed the VM's id
    with acting_as(SYSTEM):
        writes = [e for e in m.service.list_events("web1") if e["message"].endswith("/console")]
    assert len(writes) == 4 and all(e["result"] == "ok" for e in writes), writes


def test_one_write_past_64_kib_is_efbig_and_types_nothing(console_mount):
    m, broker = console_mount
    over = m.sh(f"dd if=/dev/zero of=vms/web1/console bs={CONSOLE_INPUT_MAX_BYTES + 1} count=1 "
                "oflag=append conv=notrunc")
    assert over.returncode == 1 and EFBIG in over.stderr, over.stderr
    assert broker.typed == []
    at = m.sh(f"dd if=/dev/zero of=vms/web1/console bs={CONSOLE_INPUT_MAX_BYTES} count=1 "
              "oflag=append conv=notrunc")
    assert at.returncode == 0, at.stderr
    assert _typed(broker) == [b"\0" * CONSOLE_INPUT_MAX_BYTES]


def test_cp_and_file_see_a_png(console_mount, tmp_path):
    m, broker = console_mount
    copy = tmp_path / "x.png"
    result = m.sh(f"stat -c %s vms/web1/screen.png && file vms/web1/screen.png"
                  f" && cp vms/web1/screen.png {copy}")
    assert result.returncode == 0, result.stderr
    size, kind = result.stdout.splitlines()
    assert int(size) == len(broker.png) and "PNG image data, 64 x 48" in kind, result.stdout
    assert copy.read_bytes() == broker.png
    with Image.open(copy) as image:
        assert image.size == (64, 48) and image.format == "PNG"
    assert broker.shots == 1  # stat, file's stat and read, cp's: one screenshot within a second
    assert "screen.png" in m.sh("ls -l vms/web1").stdout


def test_a_stopped_vm_s_console_and_screen_are_ebusy(console_mount):
    m, broker = console_mount
    assert m.sh("echo stopped > vms/web1/state").returncode == 0
    typed = m.sh("echo ls >> vms/web1/console")
    assert typed.returncode == 1 and EBUSY in typed.stderr, typed.stderr
    screen = m.sh("cat vms/web1/screen.png > /dev/null")
    assert screen.returncode == 1 and EBUSY in screen.stderr, screen.stderr
    listing = m.sh("ls vms/web1 && stat -c %s vms/web1/screen.png")
    assert listing.returncode == 0 and "screen.png" in listing.stdout, listing.stderr
    assert listing.stdout.splitlines()[-1] == "0"
    assert broker.typed == [] and broker.shots == 0


def test_a_viewer_may_watch_but_not_type(console_mount, tmp_path):
    m, broker = console_mount
    refused = as_uid(VIEWER, "echo reboot >> vms/web1/console", m.mnt)
    assert refused.returncode == 1 and EACCES in refused.stderr, refused.stderr
    assert broker.typed == []
    with acting_as(SYSTEM):
        events = [e for e in m.service.list_events("web1") if e["kind"] == "refused"]
    assert [(e["actor"], e["credential"], e["message"]) for e in events] == [
        ("vera", f"uid {VIEWER}", "write vms/web1/console")], events
    assert "may not console-input" in events[0]["result"]
    watched = as_uid(VIEWER, "cat vms/web1/screen.png | head -c 8 | od -c | head -1", m.mnt)
    assert watched.returncode == 0 and "P   N   G" in watched.stdout, watched
    # A uid the map names no one: nothing, not even the screen.
    nobody = as_uid(65534, "cat vms/web1/screen.png > /dev/null", m.mnt)
    assert nobody.returncode == 1 and EACCES in nobody.stderr, nobody.stderr

"""Found by `make soak`'s kill-worker (with uploads in its mix): a gunicorn worker
SIGKILLed in the middle of PUT /v1/images/NAME left its `.upload-*` file in
HOME/images until the next start of the appliance (and the mount likewise for a
`cp` into images/). Each upload file now names its writer's pid, and the writer's
death removes its files: gunicorn's child_exit in the master, serve's supervision
loop for the mount."""
from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

from appliance.api import gunicorn_conf
from appliance.image_store import remove_uploads_of


def test_an_upload_file_names_its_writer(service, config):
    tmp, fd, _op = service.begin_image_file("fresh", "a test")
    os.close(fd)
    assert tmp.name.startswith(f".upload-fresh-{os.getpid()}-")


def test_a_dead_writers_upload_files_go_and_no_other(config):
    images = config.images_dir
    dead = [images / f".upload-a-4242-{'0' * 32}", images / f".upload-b-c-4242-{'f' * 32}"]
    kept = [images / f".upload-a-14242-{'0' * 32}", images / f".upload-a-4243-{'0' * 32}",
            images / "a-4242.qcow2", images / f".upload-a-4242-{'0' * 31}"]
    for path in dead + kept:
        path.write_bytes(b"x")
    assert sorted(remove_uploads_of(images, 4242)) == sorted(dead)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in dead)


def test_gunicorns_master_removes_a_dead_workers_upload(config, monkeypatch):
    monkeypatch.setenv("VMAPP_HOME", str(config.home))
    left = config.images_dir / f".upload-big-31337-{'a' * 32}"
    left.write_bytes(b"half an image")
    gunicorn_conf.child_exit(SimpleNamespace(log=None), SimpleNamespace(pid=31337))
    assert not left.exists()


def test_the_converted_half_of_a_dead_writers_upload_goes_too(config):
    """Found by soak-quick's kill-worker in CI (`.upload-iw2-2-23920-<hex>.qcow2` left after a
    worker kill): a worker killed while qemu-img converted its upload left the conversion's
    output (ImageStore._register: the upload file's name + ".qcow2"), which the pattern of
    remove_uploads_of did not match."""
    images = config.images_dir
    hexa = "b" * 32
    dead = [images / f".upload-big-31337-{hexa}", images / f".upload-big-31337-{hexa}.qcow2"]
    kept = [images / f".upload-big-31338-{hexa}.qcow2", images / f".upload-big-31337-{hexa}.qcow2x",
            images / f".upload-big-31337-{hexa}.raw"]
    for path in dead + kept:
        path.write_bytes(b"half")
    assert sorted(remove_uploads_of(images, 31337)) == sorted(dead)
    assert all(p.exists() for p in kept) and not any(p.exists() for p in dead)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    for task in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{task}/children") as f:
            found += [int(c) for c in f.read().split()]
    return found


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_a_conversion_dies_with_the_writer_that_started_it(tmp_path):
    """The other half of the CI finding above: the qemu-img converting an upload outlived the
    SIGKILLed worker and could create its output after child_exit had cleaned up. Here the
    conversion reads a FIFO nobody writes (qemu-img blocks opening it), its writer is killed,
    and the qemu-img must go with it."""
    fifo = tmp_path / "source"
    os.mkfifo(fifo)
    code = ("import sys; from appliance.virt import images; "
            "images.convert_to_qcow2(sys.argv[1], 'raw', sys.argv[2])")
    writer = subprocess.Popen([sys.executable, "-c", code, str(fifo), str(tmp_path / "out.qcow2")],
                              cwd=Path(__file__).resolve().parents[3])
    qemu_img: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while not qemu_img:  # the conversion's process, once it is qemu-img (after setpriv's exec)
            assert writer.poll() is None and time.monotonic() < deadline, "no conversion started"
            qemu_img = [c for c in _children(writer.pid) if _comm(c) == "qemu-img"]
            time.sleep(0.05)
        writer.kill()
        writer.wait(30)
        deadline = time.monotonic() + 30
        while _alive(qemu_img[0]) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(qemu_img[0]), "qemu-img outlived the writer that started it"
    finally:
        writer.kill()
        for pid in qemu_img:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _comm(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except FileNotFoundError:
        return ""

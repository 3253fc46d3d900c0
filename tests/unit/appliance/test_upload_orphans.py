"""Found by `make soak`'s kill-worker (with uploads in its mix): a gunicorn worker
SIGKILLed in the middle of PUT /v1/images/NAME left its `.upload-*` file in
HOME/images until the next start of the appliance (and the mount likewise for a
`cp` into images/). Each upload file now names its writer's pid, and the writer's
death removes its files: gunicorn's child_exit in the master, serve's supervision
loop for the mount."""
from __future__ import annotations

import os
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

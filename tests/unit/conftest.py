"""Unit-test fixtures: a fresh store per test, a controller on libvirt's test driver."""
from __future__ import annotations

import itertools
import time
import uuid

import pytest

from appliance.config import Config
from appliance.controller import Controller
from appliance.service import Service
from appliance.store import Store


def make_disk_image(path) -> None:
    """A tiny raw 'disk' with a boot-sector signature, enough for the image checks."""
    with open(path, "wb") as f:
        f.truncate(1 << 20)
        f.seek(510)
        f.write(b"\x55\xaa")


@pytest.fixture
def config(tmp_path) -> Config:
    cfg = Config(home=tmp_path / "home", libvirt_uri="test:///default", wait_timeout=20)
    cfg.prepare()
    return cfg


@pytest.fixture
def store(config) -> Store:
    return Store(config.db_path)


@pytest.fixture
def service(store, config, tmp_path) -> Service:
    counter = itertools.count(1)
    svc = Service(store, config, uuidgen=lambda: uuid.UUID(int=next(counter)))
    image = tmp_path / "demo.img"
    make_disk_image(image)
    svc.import_image("demo", str(image))
    return svc


@pytest.fixture
def controller(store, config, service):
    ctl = Controller(store, config, "unit-test-instance", "qemu")
    service.notify = ctl._nudge
    ctl.start()
    deadline = time.monotonic() + 10
    while not ctl.host.connected and time.monotonic() < deadline:
        time.sleep(0.01)
    assert ctl.host.connected
    yield ctl
    ctl.stop()

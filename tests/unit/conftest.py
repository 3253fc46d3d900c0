"""Unit-test fixtures: a fresh store per test, a controller on libvirt's test driver."""
from __future__ import annotations

import itertools
import time
import uuid

import libvirt
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


# What libvirt's test:///default reports (16 CPUs, 3 GiB), plus a 100 GiB disk.
TEST_HOST_INFO = {"arch": "i686", "cpus": 16, "memory_mib": 3072, "disk_bytes": 100 * 1024 ** 3}


@pytest.fixture
def config(tmp_path) -> Config:
    # heartbeat_age: tests without a running controller still see the host they registered as up.
    cfg = Config(home=tmp_path / "home", libvirt_uri="test:///default", wait_timeout=20, heartbeat_age=3600,
                 allow_test_hosts=True)
    cfg.prepare()
    return cfg


@pytest.fixture
def store(config) -> Store:
    return Store(config.db_path)


@pytest.fixture
def service(store, config, tmp_path) -> Service:
    counter = itertools.count(1)
    svc = Service(store, config, uuidgen=lambda: uuid.UUID(int=next(counter)))
    # The test driver's host as the controller registers it (its inventory, a fresh heartbeat).
    store.upsert_host({"name": "local", "uri": config.libvirt_uri, "state": "enabled", "up": 1,
                       "last_seen": time.time(), "info": TEST_HOST_INFO, "cpu_ratio": 16.0, "ram_ratio": 1.5,
                       "disk_ratio": 1.0, "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    image = tmp_path / "demo.img"
    make_disk_image(image)
    svc.import_image_file("demo", image)  # the admin's own file: not subject to the import-directory rule
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
    _remove_test_driver_domains()


def _remove_test_driver_domains() -> None:
    """test:///default keeps its state while any connection in this process is
    open (a /metrics collector keeps one): remove what a test defined, so that
    the next test's VM ids (the same counter) meet no leftover domain."""
    conn = libvirt.open("test:///default")
    try:
        for dom in conn.listAllDomains():
            if dom.name() == "test":  # the driver's own
                continue
            if dom.isActive():
                dom.destroy()
            dom.undefine()
    finally:
        conn.close()

"""Controller unit tests: the real store and service, the hosts in memory
(appliance.virt.fake), a clock the test moves, operations run inline. Each
test runs in milliseconds."""
from __future__ import annotations

import itertools
import uuid

import pytest

from appliance.config import Config
from appliance.controller import Controller
from appliance.service import Service
from appliance.virt.fake import FakeCloud
from tests.unit.appliance.controller.backup_harness import add_target, running_web1
from tests.unit.appliance.controller.controller_harness import STORAGE, URI_A, URI_B, FakeClock, Inline, make_disk_image


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def config(tmp_path) -> Config:
    cfg = Config(home=tmp_path / "home", libvirt_uri=URI_A, wait_timeout=5, heartbeat_age=3600,
                 evacuate_after=60.0)
    cfg.prepare()
    return cfg


@pytest.fixture
def cloud() -> FakeCloud:
    cloud = FakeCloud()
    cloud.host(URI_A)
    cloud.host(URI_B)
    return cloud


@pytest.fixture
def controller(store, config, cloud, clock) -> Controller:
    ctl = Controller(store, config, "unit-instance", "qemu", drivers=cloud.drivers(), clock=clock,
                     pool=Inline(), connector=Inline(), monotonic=clock, sleep=clock.sleep)
    store.update_host("local", storage=STORAGE)
    store.upsert_host({"name": "b", "uri": URI_B, "state": "enabled", "up": 0, "last_seen": None, "info": {},
                       "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0, "reserved_memory_mib": 0,
                       "labels": {}, "storage": STORAGE, "created": clock()})
    ctl.tick()  # connects to both hosts and records their inventory
    yield ctl
    ctl.stop()


@pytest.fixture
def service(store, config, clock, controller, tmp_path) -> Service:
    counter = itertools.count(1)
    svc = Service(store, config, uuidgen=lambda: uuid.UUID(int=next(counter)), clock=clock)
    image = tmp_path / "demo.img"
    make_disk_image(image)
    svc.import_image_file("demo", image)
    return svc



@pytest.fixture
def target(request, service, store, tmp_path):
    """One backup target, nas; every host's disks on the module's BACKUP_STORAGE ("shared",
    the appliance's folders, unless the module names its hosts' own storage)."""
    return add_target(service, store, tmp_path, getattr(request.module, "BACKUP_STORAGE", "shared"))


@pytest.fixture
def vm(service, controller, clock, target):
    """web1 running with a 16 MiB data disk, after the backup `target`."""
    return running_web1(service, controller, clock)

"""Unit-test fixtures: a fresh store per test, a controller on libvirt's test driver.

What every test would otherwise redo is made once per run and copied: the
store's migrations (an empty migrated store file) and qemu-img's work on the
fixture's demo image (see ReplayedDemoImage)."""
from __future__ import annotations

import contextlib
import dataclasses
import itertools
import shutil
import time
import uuid
from pathlib import Path

import libvirt
import pytest

from appliance import ssh_access
from appliance.config import Config
from appliance.controller import Controller
from appliance.service import Service
from appliance.store import Store
from appliance.virt import images
from tests.unit.appliance.controller.controller_harness import FakeClock, Inline


def make_disk_image(path) -> None:
    """A tiny raw 'disk' with a boot-sector signature, enough for the image checks."""
    with open(path, "wb") as f:
        f.truncate(1 << 20)
        f.seek(510)
        f.write(b"\x55\xaa")


def make_iso_image(path, size: int = 64 << 10) -> None:
    """A tiny 'ISO 9660 volume': the CD001 signature of its first volume descriptor
    (issue 14's ISO images), enough for the image store to take it as an ISO."""
    with open(path, "wb") as f:
        f.truncate(size)
        f.seek(0x8001)
        f.write(b"CD001")


# What libvirt's test:///default reports (16 CPUs, 3 GiB), plus a 100 GiB disk.
TEST_HOST_INFO = {"arch": "i686", "cpus": 16, "memory_mib": 3072, "disk_bytes": 100 * 1024 ** 3}


@pytest.fixture(autouse=True)
def _no_ssh_keyscan(monkeypatch):
    """Adding a qemu+ssh host reads its server's key (appliance/ssh_access.py): not
    in unit tests, whose hosts are names nobody serves (nor any address off this
    machine). tests/unit/appliance/test_remote_access.py offers keys of its own."""
    def no_server(host, port):
        raise ssh_access.Failed(f"no ssh server answered at {host} (unit tests)")
    monkeypatch.setattr(ssh_access, "scan", no_server)


@pytest.fixture
def config(tmp_path) -> Config:
    # heartbeat_age: tests without a running controller still see the host they registered as up.
    cfg = Config(home=tmp_path / "home", libvirt_uri="test:///default", wait_timeout=20, heartbeat_age=3600,
                 allow_test_hosts=True)
    cfg.prepare()
    return cfg


@pytest.fixture(scope="session")
def migrated_store_file(tmp_path_factory) -> Path:
    """An empty store with every migration applied, made by Store itself once
    per run; closed, so the file holds everything (no -wal beside it)."""
    path = tmp_path_factory.mktemp("migrated-store") / "appliance.db"
    Store(path).close()
    return path


@pytest.fixture
def store(config, migrated_store_file) -> Store:
    shutil.copyfile(migrated_store_file, config.db_path)
    return Store(config.db_path)


@dataclasses.dataclass(frozen=True)
class ReplayedDemoImage:
    """qemu-img's answers for the fixture's demo disk, recorded once per run.

    Every test's service imports the demo image through the whole of
    Service.import_image_file (copy, checks, store row, event); only the three
    qemu-img runs on these exact bytes (info, measure, convert: most of a
    test's setup time) are answered from the recording. Any other file still
    goes to the real qemu-img, so the image tests see the real one."""

    source: bytes
    checked: dict
    converted_size: int
    qcow2: Path
    qcow2_checked: dict

    @classmethod
    def record(cls, directory: Path) -> ReplayedDemoImage:
        source = directory / "demo.img"
        make_disk_image(source)
        checked = images.check(source)
        qcow2 = directory / "demo.qcow2"
        return cls(source=source.read_bytes(), checked=checked,
                   converted_size=images.converted_size(source, checked["format"]),
                   qcow2=qcow2, qcow2_checked=images.convert_to_qcow2(source, checked["format"], qcow2))

    def _is_demo(self, path) -> bool:
        return Path(path).read_bytes() == self.source

    @contextlib.contextmanager
    def replayed(self):
        real_check, real_size, real_convert = images.check, images.converted_size, images.convert_to_qcow2

        def check(path):
            return dict(self.checked) if self._is_demo(path) else real_check(path)

        def converted_size(path, fmt):
            return self.converted_size if self._is_demo(path) else real_size(path, fmt)

        def convert_to_qcow2(source, fmt, dest):
            if not self._is_demo(source):
                return real_convert(source, fmt, dest)
            shutil.copyfile(self.qcow2, dest)
            return dict(self.qcow2_checked)

        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(images, "check", check)
            patch.setattr(images, "converted_size", converted_size)
            patch.setattr(images, "convert_to_qcow2", convert_to_qcow2)
            yield

    def import_into(self, service: Service, directory: Path) -> None:
        """Service.import_image_file("demo", ...) of a fresh copy, as the admin's own file."""
        image = directory / "demo.img"
        image.write_bytes(self.source)
        with self.replayed():
            service.import_image_file("demo", image)


@pytest.fixture(scope="session")
def demo_image(tmp_path_factory) -> ReplayedDemoImage:
    return ReplayedDemoImage.record(tmp_path_factory.mktemp("demo-image"))


@pytest.fixture
def service(store, config, tmp_path, demo_image) -> Service:
    counter = itertools.count(1)
    svc = Service(store, config, uuidgen=lambda: uuid.UUID(int=next(counter)))
    # The test driver's host as the controller registers it (its inventory, a fresh heartbeat).
    store.upsert_host({"name": "local", "uri": config.libvirt_uri, "state": "enabled", "up": 1,
                       "last_seen": time.time(), "info": TEST_HOST_INFO, "cpu_ratio": 16.0, "ram_ratio": 1.5,
                       "disk_ratio": 1.0, "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    demo_image.import_into(svc, tmp_path)  # the admin's own file: not subject to the import-directory rule
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


@pytest.fixture
def stepped_controller(store, config, service):
    """The same controller without its thread: the test runs each loop pass
    (tick(), or run_passes()) itself, on a clock it moves (FakeClock), with
    operations, host connections and probe checks run inline in the pass. So
    what a pass does has happened when it returns: a test sees the controller
    try something, or wait out a period, without sleeping until a thread has."""
    clock = FakeClock()
    ctl = Controller(store, config, "unit-test-instance", "qemu", clock=clock, monotonic=clock,
                     sleep=clock.sleep, pool=Inline(), connector=Inline())
    ctl.prober.pool.shutdown()
    ctl.prober.pool = Inline()
    service.notify = ctl._nudge
    yield ctl
    ctl.stop()
    _remove_test_driver_domains()


def run_passes(controller, until, step: float = 1.0, passes: int = 60) -> bool:
    """Loop passes of a stepped controller, its clock `step` seconds on before
    each, until `until()` holds (checked before every pass): True, or False
    after `passes` passes."""
    clock = controller.ctx.clock
    for _ in range(passes):
        if until():
            return True
        clock.advance(step)
        controller.tick()
    return until()


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
            # with the snapshots' metadata (issue 13): a plain undefine refuses a domain with any
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    finally:
        conn.close()

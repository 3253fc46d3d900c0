"""`python -m tests.fs.fs_server HOME MOUNTPOINT`: the mount and a controller on
libvirt's `test:///default` driver in one process, for the fast FS tests and the
benchmark. The test driver's domains live in this process and go with it."""
from __future__ import annotations

import logging
import sys
import time

from appliance.config import Config
from appliance.controller import Controller
from appliance.errors import NotFound
from appliance.service import Service
from appliance.store import Store
from fs.mount import run


def make_disk_image(path) -> None:
    """A tiny raw 'disk' with a boot-sector signature, enough for the image checks."""
    with open(path, "wb") as f:
        f.truncate(1 << 20)
        f.seek(510)
        f.write(b"\x55\xaa")


# What libvirt's test:///default reports (16 CPUs, 3 GiB), plus a 100 GiB disk.
TEST_HOST_INFO = {"arch": "i686", "cpus": 16, "memory_mib": 3072, "disk_bytes": 100 * 1024 ** 3}


def register_local_host(store: Store, config: Config) -> None:
    """The test driver's host as the controller registers it (inventory, a fresh heartbeat), so that
    placement finds a host from the first mkdir on, with or without a controller."""
    existing = [h for h in store.list_hosts() if h["name"] == "local"]
    row = {"name": "local", "uri": config.libvirt_uri, "up": 1, "last_seen": time.time(), "info": TEST_HOST_INFO}
    if not existing:
        row.update({"state": "enabled", "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                    "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    store.upsert_host(row)


def main(argv: list[str]) -> int:
    home, mountpoint = argv[:2]
    with_controller = "--no-controller" not in argv
    group = argv[argv.index("--allow-group") + 1] if "--allow-group" in argv else None
    # A small cap on images (tests/fs/test_fs_editors.py: `cp` past it is EFBIG).
    caps = {"max_image_bytes": int(argv[argv.index("--max-image-bytes") + 1])} if (
        "--max-image-bytes" in argv) else {}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    # heartbeat_age: without a controller the host registered here stays up.
    config = Config(home=home, libvirt_uri="test:///default", wait_timeout=20, heartbeat_age=3600,
                    allow_test_hosts=True, **caps)
    config.prepare()
    config.save()  # the tests' own Service (conftest's Mount) loads the same settings
    store = Store(config.db_path)
    register_local_host(store, config)
    service = Service(store, config)
    try:
        service.get_image("demo")
    except NotFound:
        image = config.home / "demo.img"
        make_disk_image(image)
        service.import_image_file("demo", image)
    controller = None
    if with_controller:
        controller = Controller(store, config, "fs-test-instance", "qemu")
        service.notify = controller._nudge
        controller.start()
    try:
        return run(config, mountpoint, service, group=group)
    finally:
        if controller is not None:
            controller.stop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

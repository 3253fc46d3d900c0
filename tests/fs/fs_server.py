"""`python -m tests.fs.fs_server HOME MOUNTPOINT`: the mount and a controller on
libvirt's `test:///default` driver in one process, for the fast FS tests and the
benchmark. The test driver's domains live in this process and go with it."""
from __future__ import annotations

import logging
import sys

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


def main(argv: list[str]) -> int:
    home, mountpoint = argv[:2]
    with_controller = "--no-controller" not in argv
    group = argv[argv.index("--allow-group") + 1] if "--allow-group" in argv else None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    config = Config(home=home, libvirt_uri="test:///default", wait_timeout=20)
    config.prepare()
    store = Store(config.db_path)
    service = Service(store, config)
    try:
        service.get_image("demo")
    except NotFound:
        image = config.home / "demo.img"
        make_disk_image(image)
        service.import_image("demo", str(image))
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

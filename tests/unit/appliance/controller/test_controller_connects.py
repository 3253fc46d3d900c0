"""Connecting to hosts off the loop: a host whose connect hangs holds only its own
connect. libvirt's open has no timeout; with four connector threads, four such hosts
held every thread and no other host reconnected (left open in session 14's note)."""
from __future__ import annotations

import threading
import time

from appliance.controller import Controller
from appliance.virt.fake import FakeDriver
from tests.unit.appliance.controller.controller_harness import STORAGE, Inline

DARK = [f"qemu+tcp://dark{i}.example/system" for i in range(6)]


def test_hosts_whose_connects_hang_do_not_starve_another_hosts_connect(store, config, cloud, clock):
    gone_dark = threading.Event()  # set at the end: the hung connects return (refused)

    class Hangs(FakeDriver):
        def connect(self) -> None:
            if self.uri in DARK:
                gone_dark.wait(30)
                raise ConnectionRefusedError("gave up")
            super().connect()

    for i, uri in enumerate(DARK):  # added first, so their connects are asked first
        cloud.host(uri)
        store.upsert_host({"name": f"dark{i}", "uri": uri, "state": "enabled", "up": 0, "last_seen": None,
                           "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                           "reserved_memory_mib": 0, "labels": {}, "storage": STORAGE, "created": clock()})
    ctl = Controller(store, config, "unit-instance", "qemu",
                     drivers=lambda name, uri, on_event: Hangs(cloud, name, uri, on_event),
                     clock=clock, pool=Inline(), monotonic=clock, sleep=clock.sleep)  # its own connector
    try:
        local = ctl.ctx.links.get("local")
        deadline = time.monotonic() + 10
        while not local.connected and time.monotonic() < deadline:
            clock.advance(5.0)
            ctl.tick()
            time.sleep(0.05)
        assert local.connected, "the appliance's own host never connected behind the hung ones"
        assert store.get_host("local")["up"]
        assert all(ctl.ctx.links.get(f"dark{i}").connecting for i in range(len(DARK)))
    finally:
        gone_dark.set()
        ctl.stop()

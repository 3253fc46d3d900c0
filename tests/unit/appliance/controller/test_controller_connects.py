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


def _add(store, clock, name: str, uri: str) -> None:
    store.upsert_host({"name": name, "uri": uri, "state": "enabled", "up": 0, "last_seen": None,
                       "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                       "reserved_memory_mib": 0, "labels": {}, "storage": STORAGE,
                       "created": clock()})


def _controller(store, config, cloud, clock, driver=FakeDriver):
    return Controller(store, config, "unit-instance", "qemu",
                      drivers=lambda name, uri, on_event: driver(cloud, name, uri, on_event),
                      clock=clock, pool=Inline(), monotonic=clock, sleep=clock.sleep)


def _ticks_until(ctl, clock, check, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not check() and time.monotonic() < deadline:
        clock.advance(5.0)
        ctl.tick()
        time.sleep(0.05)
    return check()


def test_a_connect_thread_the_system_refuses_is_tried_again(store, config, cloud, clock, monkeypatch):
    """Review of edbc79f: each connect starts a thread, and a start refused (pids.max) left
    the link marked connecting for good: that host, and those after it in the pass, were
    never connected again."""
    ctl = _controller(store, config, cloud, clock)
    real_start = threading.Thread.start

    def refused(self):
        if self.name.startswith("connect-"):
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", refused)
    try:
        clock.advance(5.0)
        ctl.tick()  # no thread to be had
        local = ctl.ctx.links.get("local")
        assert not local.connected and not local.connecting
        monkeypatch.setattr(threading.Thread, "start", real_start)
        assert _ticks_until(ctl, clock, lambda: local.connected), f"connecting={local.connecting}"
    finally:
        monkeypatch.setattr(threading.Thread, "start", real_start)
        ctl.stop()


def test_a_host_added_again_gets_one_connect_and_a_dropped_links_late_one_records_nothing(
        store, config, cloud, clock):
    """Review of edbc79f: a host removed and added again (same address) while its connect
    hung got another thread at each re-add; and a dropped link's connect that ended later
    recorded the host row (now another link's) up, and kept its connection open."""
    hung = "qemu+tcp://dark.example/system"
    release = threading.Event()
    late: list[FakeDriver] = []

    class HangsThenAnswers(FakeDriver):
        def connect(self) -> None:
            if self.uri == hung:
                release.wait(30)
                late.append(self)
            super().connect()

    cloud.host(hung)
    _add(store, clock, "dark", hung)
    ctl = _controller(store, config, cloud, clock, HangsThenAnswers)
    try:
        assert _ticks_until(ctl, clock, lambda: ctl.ctx.links.get("dark").connecting)
        for _ in range(3):  # the admin removes the host and adds it again
            store.delete_host("dark")
            clock.advance(1.0)
            _add(store, clock, "dark", hung)
            clock.advance(5.0)
            ctl.tick()
            time.sleep(0.05)
        threads = [t for t in threading.enumerate() if t.name == "connect-dark"]
        assert len(threads) == 1, f"{len(threads)} connect threads for one host and address"
        store.delete_host("dark")  # and at last gives it another address, which answers
        fixed = "qemu+tcp://dark-fixed.example/system"
        cloud.host(fixed)
        _add(store, clock, "dark", fixed)
        assert _ticks_until(ctl, clock, lambda: ctl.ctx.links.get("dark").connected)
        events_before = len(store.list_events())
        release.set()  # the first connect answers at last, its link long dropped
        deadline = time.monotonic() + 10
        while not (late and not any(t.is_alive() for t in threads)) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert late and not late[0].connected  # closed, not left open
        assert not [e for e in store.list_events()[events_before:] if hung in e["message"]]
        assert ctl.ctx.links.get("dark").uri == fixed and store.get_host("dark")["up"]
    finally:
        release.set()
        ctl.stop()

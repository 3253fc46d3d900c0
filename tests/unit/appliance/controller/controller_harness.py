"""What the controller unit tests share: the two hosts, a clock the test
moves, an executor that runs inline, and a few loop passes."""
from __future__ import annotations

import concurrent.futures
import time
from typing import Callable

from appliance.controller import Controller

URI_A = "qemu+tcp://host-a.example/system"
URI_B = "qemu+tcp://host-b.example/system"
STORAGE = "san1"  # both hosts see it (not the appliance's folder: VM files go through the driver)


class FakeClock:
    """Wall clock, monotonic clock and sleep in one: sleeping moves time on, and
    runs what a test asked to happen meanwhile (a migration libvirt finishes)."""

    def __init__(self) -> None:
        self.now = time.time()
        self.on_sleep: list[Callable[[], None]] = []

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        for hook in list(self.on_sleep):
            hook()


class Inline(concurrent.futures.Executor):
    """Runs what is submitted at once, in the caller's thread."""

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as err:  # noqa: BLE001 - handed to the future, as a pool would
            future.set_exception(err)
        return future


def make_disk_image(path) -> None:
    with open(path, "wb") as f:
        f.truncate(1 << 20)
        f.seek(510)
        f.write(b"\x55\xaa")




def settle(controller: Controller, clock: FakeClock, passes: int = 3, step: float = 0.0) -> None:
    """A few loop passes, each a heartbeat and a resync (the clock moves past both)."""
    for _ in range(passes):
        clock.advance(max(step, 5.0))
        controller.tick()

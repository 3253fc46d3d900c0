"""The operations handed to the worker pool: at most as many as it has threads; the
others wait in the store (issue 10: a burst of 1,000 creates queued every one in the
pool, with its row and future, and left serve's memory higher after)."""
from __future__ import annotations

import concurrent.futures

import pytest

from appliance.controller import Controller
from tests.unit.appliance.controller.controller_harness import STORAGE, URI_A, Inline

WORKERS = 3


class Held(concurrent.futures.Executor):
    """Keeps what is submitted until the test runs it, as a pool whose threads are busy."""

    def __init__(self) -> None:
        self.queue: list = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        future: concurrent.futures.Future = concurrent.futures.Future()
        self.queue.append((future, fn, args, kwargs))
        return future

    def run_one(self) -> None:
        future, fn, args, kwargs = self.queue.pop(0)
        future.set_result(fn(*args, **kwargs))


@pytest.fixture
def held() -> Held:
    return Held()


@pytest.fixture
def controller(store, config, cloud, clock, held) -> Controller:
    ctl = Controller(store, config, "unit-instance", "qemu", drivers=cloud.drivers(), clock=clock,
                     workers=WORKERS, pool=held, connector=Inline(), monotonic=clock,
                     sleep=clock.sleep)
    store.update_host("local", storage=STORAGE)
    ctl.tick()  # the service (conftest) makes its operations on this controller's store
    yield ctl
    ctl.stop()


def test_the_pool_gets_no_more_operations_than_it_has_threads(service, controller, cloud, held):
    for n in range(10):
        service.create_vm({"name": f"vm{n}", "state": "stopped"})
    controller.operations.dispatch()
    assert len(held.queue) == WORKERS
    controller.operations.dispatch()  # nothing finished: nothing more handed over
    assert len(held.queue) == WORKERS
    held.run_one()  # one finishes: its thread is free again
    controller.operations.dispatch()
    assert len(held.queue) == WORKERS
    while held.queue:
        held.run_one()
        controller.operations.dispatch()
    # every create ran, none left behind
    assert sorted(cloud.host(URI_A).domains) == sorted(r["id"] for r in service.store.list_vms())
    assert len(cloud.host(URI_A).domains) == 10
    assert not service.store.next_operations()

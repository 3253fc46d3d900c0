"""Waits for an operation sleep until the store changes (appliance/store/changes.py).

Regression (the CI run of issue 14): each waiting request read its operation
every 10 ms, so 40 waits in an API worker were ~4,000 queries a second fighting
for the GIL beside /healthz (which then missed its 1 s budget under load).
"""
from __future__ import annotations

import threading
import time

from appliance.store import Store
from appliance.store.changes import IDLE_STOP, MAX_WAIT


def counting_reads(store: Store) -> list[float]:
    """Record the time of each get_operation on the store."""
    reads: list[float] = []
    original = store.get_operation

    def get_operation(op_id: str):
        reads.append(time.monotonic())
        return original(op_id)

    store.get_operation = get_operation  # type: ignore[method-assign]
    return reads


def pending_create(service) -> dict:
    service.create_vm({"name": "w1", "state": "stopped"})
    return service.store.list_operations(vm_name="w1")[0]


def test_a_wait_reads_its_operation_only_when_the_store_changed(service):
    op = pending_create(service)
    reads = counting_reads(service.store)
    started = time.monotonic()
    assert service.wait_operation(op["id"], 1.5)["status"] == "pending"
    assert time.monotonic() - started >= 1.5
    # the visibility check, the first read, and one per MAX_WAIT at most (polling read ~150)
    assert len(reads) <= 2 + int(1.5 / MAX_WAIT) + 1, len(reads)


def test_a_commit_from_another_connection_ends_the_wait_at_once(service, config):
    op = pending_create(service)
    other = Store(config.db_path)  # as the controller's process has its own

    def finish_soon() -> None:
        time.sleep(0.3)
        other.update_operation(op["id"], status="succeeded", finished=time.time())

    threading.Thread(target=finish_soon).start()
    started = time.monotonic()
    assert service.wait_operation(op["id"], 10)["status"] == "succeeded"
    assert time.monotonic() - started < 0.3 + 0.5  # woken by the commit, not by MAX_WAIT


def test_the_watcher_runs_only_while_someone_waits(service):
    op = pending_create(service)
    feed = service.store.changes
    assert feed._thread is None  # nothing waited yet: no thread (gunicorn forks before any)
    service.wait_operation(op["id"], 0.2)
    watcher = feed._thread
    assert watcher is not None and watcher.is_alive()
    watcher.join(IDLE_STOP + 1.0)
    assert not watcher.is_alive() and feed._thread is None
    # and the next wait starts one again, which sees commits
    threading.Timer(0.2, lambda: service.store.update_operation(
        op["id"], status="succeeded", finished=time.time())).start()
    assert service.wait_operation(op["id"], 5)["status"] == "succeeded"


def test_a_stamp_moves_with_every_commit_and_keeps_the_watcher_running(store, config):
    """ChangeFeed.stamp, which tokens.resolver's kept records are checked against."""
    feed = store.changes
    assert feed.stamp() is None  # no watcher yet: it is started, and nothing may be reused
    deadline = time.monotonic() + 5
    while (first := feed.stamp()) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    Store(config.db_path).set_meta("elsewhere", "1")  # another connection's commit
    deadline = time.monotonic() + 1
    while feed.stamp() == first:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    watcher = feed._thread
    for _ in range(int(IDLE_STOP / 0.25) + 2):  # asked more often than IDLE_STOP: it stays
        time.sleep(0.25)
        assert feed.stamp() is not None
    assert watcher is feed._thread and watcher.is_alive()
    # unasked, it stops; the next watcher starts a new generation (commits between the two
    # were seen by none), so nothing stamped by the last one can be reused
    last = feed.stamp()
    watcher.join(IDLE_STOP + 1.0)
    assert not watcher.is_alive() and feed._thread is None
    assert feed.stamp() is None
    deadline = time.monotonic() + 5
    while (again := feed.stamp()) is None:
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert again != last

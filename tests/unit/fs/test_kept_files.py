"""A VM file made of its row alone (File.of_row) is kept by the mount while nothing is
committed (fs/tree.py `_of_row`, store.vm_derived): a `cat` reads and renders the row
once, and any commit (the mount's own, another connection's) is in the next stat and read."""
from __future__ import annotations

import os

import trio

from appliance.access.principal import ANONYMOUS, set_caller
from appliance.store import Store
from tests.unit.appliance.fuse_calls import FuseCalls


def cat(calls: FuseCalls, *path: str) -> tuple[int, bytes]:
    """What `cat` asks: getattr (the size), open, read, release; the size and the bytes."""

    async def run() -> tuple[int, bytes]:
        set_caller(ANONYMOUS)
        inode = await calls.inode(*path)
        size = (await calls.fs.getattr(inode, calls.ctx)).st_size
        info = await calls.fs.open(inode, os.O_RDONLY, calls.ctx)
        data = await calls.fs.read(info.fh, 0, 4096)
        await calls.fs.release(info.fh)
        return size, data

    return trio.run(run)


def test_a_kept_file_follows_every_commit(service, config):
    service.create_vm({"name": "web1", "state": "stopped", "cpus": 1})
    row = service.store.get_vm("web1", with_xml=False)
    service.store.update_vm(row["id"], observed_state="stopped")  # no controller here
    service.store.remember_vm_rows()
    calls = FuseCalls(service)
    seen: list[str] = []
    service.store.db.conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.startswith("SELECT") and "FROM [vms]" in sql else None)
    assert cat(calls, "vms", "web1", "state") == (8, b"stopped\n")
    assert cat(calls, "vms", "web1", "state") == (8, b"stopped\n")
    assert cat(calls, "vms", "web1", "cpus") == (2, b"1\n")
    assert len(seen) == 1  # one read of the row for all three
    Store(config.db_path).update_vm(row["id"], observed_state="running")  # another connection
    assert cat(calls, "vms", "web1", "state") == (8, b"running\n")
    service.store.update_vm(row["id"], observed_state="paused")  # this one
    assert cat(calls, "vms", "web1", "state") == (7, b"paused\n")
    service.update_vm("web1", {"cpus": 12})
    assert cat(calls, "vms", "web1", "cpus") == (3, b"12\n")


def test_a_kept_stat_carries_the_row_times(service, config):
    service.create_vm({"name": "web1", "state": "stopped"})
    service.store.remember_vm_rows()
    calls = FuseCalls(service)

    async def mtime() -> float:
        set_caller(ANONYMOUS)
        inode = await calls.inode("vms", "web1", "state")
        return (await calls.fs.getattr(inode, calls.ctx)).st_mtime_ns / 1e9

    before = trio.run(mtime)
    row = service.store.get_vm("web1", with_xml=False)
    Store(config.db_path).update_vm(row["id"], observed_state="running")
    after = trio.run(mtime)
    assert after == service.store.get_vm("web1", with_xml=False)["updated"] != before

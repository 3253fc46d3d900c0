import sqlite3
import threading

import pytest

from appliance.errors import PreconditionFailed
from appliance.store import MIGRATIONS, Store


def vm_row(vm_id="id1", name="web1"):
    return {"id": vm_id, "name": name, "spec": {"name": name}, "desired_state": "stopped",
            "observed_state": "stopped", "generation": 1, "created": 0.0, "updated": 0.0}


def test_schema_is_versioned_and_wal(tmp_path):
    store = Store(tmp_path / "a.db")
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert store.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    Store(tmp_path / "a.db")  # a second open runs no migration again


def test_compare_and_set_refuses_a_stale_generation(tmp_path):
    store = Store(tmp_path / "a.db")
    store.insert_vm(vm_row())
    store.update_vm("id1", expect_generation=1, desired_state="running")
    with pytest.raises(PreconditionFailed):
        store.update_vm("id1", expect_generation=1, desired_state="stopped")
    row = store.get_vm("web1")
    assert row["desired_state"] == "running" and row["generation"] == 2


def test_racing_writers_lose_no_update(tmp_path):
    """Two threads, each on its own connection, increment through CAS with retries."""
    store = Store(tmp_path / "a.db")
    store.insert_vm(vm_row())
    per_thread = 50

    def worker():
        done = 0
        while done < per_thread:
            with store.transaction():
                row = store.get_vm("web1")
                cpus = row["spec"].get("cpus", 0) + 1
                try:
                    store.update_vm("id1", expect_generation=row["generation"], spec={**row["spec"], "cpus": cpus})
                except PreconditionFailed:
                    continue
            done += 1

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    row = store.get_vm("web1")
    assert row["spec"]["cpus"] == 2 * per_thread
    assert row["generation"] == 1 + 2 * per_thread


def test_a_failed_transaction_changes_nothing(tmp_path):
    store = Store(tmp_path / "a.db")
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction():
            store.insert_vm(vm_row("id1", "a"))
            store.insert_vm(vm_row("id2", "a"))  # name is unique
    assert store.list_vms() == []


def test_the_store_files_are_private(tmp_path):
    """Issue 9: the SQLite file was 0644 (inside a 0700 home); it holds user data: 0600 like the token."""
    import os
    import stat

    path = tmp_path / "appliance.db"
    store = Store(path)
    store.set_meta("k", "v")
    for name in ("appliance.db", "appliance.db-wal", "appliance.db-shm"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode == 0o600, (name, oct(mode))
    old = tmp_path / "old.db"
    old.touch(mode=0o644)
    os.chmod(old, 0o644)
    Store(old)
    assert stat.S_IMODE(os.stat(old).st_mode) == 0o600


def test_events_recorded_before_projects_become_the_default_projects(tmp_path):
    """A home made before projects (schema v4 without _v5_projects): its VMs' and
    server groups' events are the default project's; hosts' and images' stay the
    appliance's (NULL), which every project sees."""
    import sqlite3

    import sqlite_utils

    from appliance.store.schema import _v5_projects

    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    db = sqlite_utils.Database(conn)
    before = MIGRATIONS.index(_v5_projects)
    for number, migration in enumerate(MIGRATIONS[:before], start=1):
        migration(db)
        db.execute(f"PRAGMA user_version = {number}")
    for kind, vm_id in (("created", "vm-1"), ("group-created", None), ("host-added", None),
                        ("image-deleted", None)):
        db.table("events").insert({"time": 0.0, "vm_id": vm_id, "vm_name": vm_id and "web1",
                                   "kind": kind, "message": "", "operation": None})
    conn.close()
    store = Store(path)
    projects = dict(store.db.execute("SELECT kind, project FROM events").fetchall())
    assert projects == {"created": "default", "group-created": "default", "host-added": None,
                        "image-deleted": None}

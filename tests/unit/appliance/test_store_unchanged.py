"""Reads of one VM row served again while nothing was committed (store/unchanged.py):
a commit by anyone (this connection, another thread's, another process's) is seen
at the next read, and no caller shares a dict with another."""

from __future__ import annotations

import subprocess
import sys
import threading

import pytest

from appliance.errors import NotFound
from appliance.store import Store
from tests.unit.appliance.test_store_queries import add_vm


@pytest.fixture
def store(tmp_path) -> Store:
    made = Store(tmp_path / "a.db")
    add_vm(made, "a")
    made.remember_vm_rows()
    return made


def selects_of_vms(store: Store) -> list[str]:
    seen: list[str] = []
    store.db.conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.startswith("SELECT") and "FROM [vms]" in sql else None)
    return seen


def test_a_row_is_read_once_while_nothing_is_committed(store):
    seen = selects_of_vms(store)
    first = store.get_vm("a", with_xml=False)
    assert store.get_vm("a", with_xml=False) == first
    assert len(seen) == 1
    store.get_vm("a")  # with the XML: never kept
    assert len(seen) == 2


def test_a_change_by_this_connection_is_read_at_once(store):
    row = store.get_vm("a", with_xml=False)
    store.update_vm(row["id"], observed_state="running")
    assert store.get_vm("a", with_xml=False)["observed_state"] == "running"


def test_a_commit_by_another_thread_or_process_is_read_at_once(store, tmp_path):
    row = store.get_vm("a", with_xml=False)
    other = Store(tmp_path / "a.db")  # another connection, as the controller's
    thread = threading.Thread(target=other.update_vm, args=(row["id"],),
                              kwargs={"observed_state": "paused"})
    thread.start()
    thread.join()
    assert store.get_vm("a", with_xml=False)["observed_state"] == "paused"
    code = ("import sys; from appliance.store import Store; s = Store(sys.argv[1]); "
            "s.update_vm(sys.argv[2], observed_state='running')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.db"), row["id"]], check=True)
    assert store.get_vm("a", with_xml=False)["observed_state"] == "running"


def test_each_caller_gets_its_own_row(store):
    first = store.get_vm("a", with_xml=False)
    first["spec"]["cpus"] = 99
    first["name"] = "changed"
    again = store.get_vm("a", with_xml=False)
    assert again["name"] == "a" and again["spec"]["cpus"] == 2


def test_a_deleted_or_unknown_vm_is_not_found(store):
    row = store.get_vm("a", with_xml=False)
    with pytest.raises(NotFound):
        store.get_vm("b", with_xml=False)
    with store.transaction() as db:
        db.execute("DELETE FROM vms WHERE id = ?", [row["id"]])
    with pytest.raises(NotFound):
        store.get_vm("a", with_xml=False)


def test_projects_do_not_share_rows(store):
    store.get_vm("a", with_xml=False)
    with pytest.raises(NotFound):
        store.get_vm("a", "other", with_xml=False)


# -- values made of a row (store/vms.py vm_derived) ---------------------------------------------
def counting(store: Store, kind: str = "n") -> tuple[list[str], object]:
    made: list[str] = []

    def make(row):
        made.append(row["observed_state"])
        return (row["observed_state"], row["generation"])

    return made, lambda name="a", project="default": store.vm_derived(name, project, kind, make)


def test_a_value_made_of_a_row_is_made_once_while_nothing_is_committed(store, tmp_path):
    made, derived = counting(store)
    seen = selects_of_vms(store)
    first = derived()
    assert derived() is first and made == [first[0]] and len(seen) == 1
    row = store.get_vm("a", with_xml=False)
    store.update_vm(row["id"], observed_state="paused")  # this connection
    assert derived()[0] == "paused"
    Store(tmp_path / "a.db").update_vm(row["id"], observed_state="running")  # another one
    assert derived()[0] == "running"
    code = ("import sys; from appliance.store import Store; s = Store(sys.argv[1]); "
            "s.update_vm(sys.argv[2], observed_state='crashed')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.db"), row["id"]], check=True)
    assert derived()[0] == "crashed"
    assert made == [first[0], "paused", "running", "crashed"]


def test_a_value_made_while_a_commit_landed_is_made_again_at_the_next_read(store, tmp_path):
    """The mark is taken before the row is read: a value made while a commit landed (here,
    inside make) is kept under the older mark only, so the next read makes it again (a
    mark taken after make would keep the older value for good)."""
    other = Store(tmp_path / "a.db")
    vm_id = store.get_vm("a", with_xml=False)["id"]
    states = iter(["paused", None])

    def make(row):
        state = next(states)
        if state is not None:
            other.update_vm(vm_id, observed_state=state)
        return row["observed_state"]

    assert store.vm_derived("a", "default", "racy", make) == "stopped"
    assert store.vm_derived("a", "default", "racy", make) == "paused"


def test_values_are_kept_per_kind_project_and_vm_and_not_inside_a_transaction(store):
    add_vm(store, "b")
    made, derived = counting(store)
    made_other, other_kind = counting(store, "other")
    derived("a")
    derived("b")
    other_kind("a")
    assert len(made) == 2 and len(made_other) == 1
    with pytest.raises(NotFound):
        derived("a", "other-project")
    with pytest.raises(NotFound):
        derived("nope")
    with store.transaction():
        derived("a")
        derived("a")
    assert len(made) == 4


def test_a_shared_row_is_one_dict_until_a_commit(store):
    row = store.shared_vm_row("a")
    assert store.shared_vm_row("a") is row
    assert row == store.get_vm("a", with_xml=False)
    assert store.get_vm("a", with_xml=False) is not row  # get_vm still gives each its own
    store.update_vm(row["id"], observed_state="paused")
    assert store.shared_vm_row("a")["observed_state"] == "paused"
    assert row["observed_state"] == "stopped"  # what a reader held is left as it was


# -- the mark without a statement (store/walindex.py) -----------------------------------------
def statements(store: Store) -> list[str]:
    seen: list[str] = []
    store.db.conn.set_trace_callback(seen.append)
    return seen


def test_a_kept_row_is_served_without_any_statement(store):
    """The mark is the wal-index header, read from memory: no pragma, so no release of
    the GIL per read (py-spy: ~47 % of an API worker's busy samples under wrk)."""
    store.get_vm("a", with_xml=False)
    seen = statements(store)
    for _ in range(3):
        store.get_vm("a", with_xml=False)
    assert seen == []


def test_the_header_changes_with_every_commit_and_only_then(store, tmp_path):
    header = store.wal.header()
    assert header is not None and len(header) == 48
    store.get_vm("a", with_xml=False)
    store.db.execute("SELECT count(*) FROM vms").fetchone()  # reads change nothing
    assert store.wal.header() == header
    row = store.get_vm("a", with_xml=False)
    store.update_vm(row["id"], observed_state="paused")
    after_own = store.wal.header()
    assert after_own != header
    code = ("import sys; from appliance.store import Store; s = Store(sys.argv[1]); "
            "s.update_vm(sys.argv[2], observed_state='running')")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "a.db"), row["id"]], check=True)
    assert store.wal.header() not in (header, after_own)


def test_the_last_other_connection_closing_leaves_the_mapped_file_in_use(tmp_path):
    """SQLite unlinks the -shm when the last connection closes; the index keeps its own
    open, so that a file it maps is never replaced by a new one it would not see."""
    store = Store(tmp_path / "b.db")
    add_vm(store, "b")
    store.remember_vm_rows()
    assert store.wal.header() is not None
    row = store.get_vm("b", with_xml=False)
    store.close()  # this thread's connection: the index's is now the only one open here
    shm = tmp_path / "b.db-shm"
    inode = shm.stat().st_ino
    code = ("import sys; from appliance.store import Store; s = Store(sys.argv[1]); "
            "s.update_vm(sys.argv[2], observed_state='running'); s.close()")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "b.db"), row["id"]], check=True)
    assert shm.stat().st_ino == inode
    assert store.get_vm("b", with_xml=False)["observed_state"] == "running"


def test_no_wal_index_falls_back_to_the_pragma(tmp_path):
    import sqlite3

    from appliance.store.unchanged import commit_mark
    from appliance.store.walindex import WalIndex

    path = tmp_path / "plain.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE t (a)")
    conn.commit()
    wal = WalIndex(str(path))
    assert wal.header() is None  # rollback journal: no -shm
    first = commit_mark(conn, wal)
    other = sqlite3.connect(path)
    other.execute("INSERT INTO t VALUES (1)")
    other.commit()
    assert commit_mark(conn, wal) != first
    assert WalIndex(":memory:").header() is None


def test_a_forked_child_does_not_read_the_inherited_mapping(store):
    """SQLite's connections do not survive a fork: an index made before one is not read in
    the child (the pragma is asked instead); the parent's goes on."""
    import os

    header = store.wal.header()
    pid = os.fork()
    if pid == 0:
        try:
            os._exit(0 if store.wal.header() is None else 3)
        except BaseException:
            os._exit(4)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert store.wal.header() == header


def test_reading_the_header_keeps_every_lock_of_the_process(tmp_path):
    """The header is read where SQLite mapped it, with no descriptor of the -shm opened and
    closed here: closing one would drop the process's POSIX locks on it, the WAL write
    lock among them, and another process could then write beside this one's transaction."""
    store = Store(tmp_path / "c.db")
    add_vm(store, "c")
    store.remember_vm_rows()
    fresh = Store(tmp_path / "c.db")  # its index not read yet: it is found under the lock below
    with store.transaction():  # BEGIN IMMEDIATE: this process holds the WAL write lock
        assert fresh.wal.header() is not None
        code = ("import sqlite3, sys; c = sqlite3.connect(sys.argv[1], timeout=0, "
                "isolation_level=None)\n"
                "try:\n    c.execute('BEGIN IMMEDIATE')\nexcept sqlite3.OperationalError as e:\n"
                "    print(e)\nelse:\n    print('wrote beside it')")
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "c.db")],
                             capture_output=True, text=True, check=True).stdout
    assert out.strip() == "database is locked"


def other_process(code: str, *args: str) -> None:
    subprocess.run([sys.executable, "-c", code, *args], check=True)


def test_a_second_store_in_the_process_keeps_its_locks_and_the_shm(tmp_path):
    """(Review of the wal-index change.) StoreBase._private_files did os.close(os.open(db)),
    which drops every POSIX lock this process holds on the database, the SHARED lock of each
    WAL connection among them; an API worker makes two Stores (the app's, the consoles').
    With no other process holding one, the next process to close its last connection
    checkpointed and unlinked -wal and -shm, and this process went on reading (and writing)
    the unlinked files, cached or not."""
    path = str(tmp_path / "s.db")
    first = Store(path)
    add_vm(first, "a")
    first.remember_vm_rows()
    assert first.get_vm("a", with_xml=False)["observed_state"] == "stopped"
    Store(path)  # the consoles' Store in the same worker
    other_process("import sys; from appliance.store import Store; s = Store(sys.argv[1]); "
                  "s.get_vm('a'); s.close()", path)  # a CLI: reads and exits
    other_process("import sys; from appliance.store import Store; "
                  "Store(sys.argv[1]).update_vm('id-a', observed_state='running')", path)
    assert first.get_vm("a", with_xml=False)["observed_state"] == "running"


def test_a_symlinked_database_does_not_open_a_connection_per_read(tmp_path, monkeypatch):
    """(Review.) SQLite puts the -shm beside a symlinked database's real file; the index
    looked beside the link, failed, and opened a connection at every read (~290 us per
    kept get_vm against ~5)."""
    import sqlite3

    from appliance.store import walindex

    real, link = tmp_path / "real.db", tmp_path / "link.db"
    add_vm(Store(real), "a")
    link.symlink_to(real)
    store = Store(link)
    store.remember_vm_rows()
    store.get_vm("a", with_xml=False)
    opened: list[str] = []
    connect = sqlite3.connect
    monkeypatch.setattr(walindex.sqlite3, "connect",
                        lambda *a, **k: opened.append(str(a[0])) or connect(*a, **k))
    for _ in range(5):
        store.get_vm("a", with_xml=False)
    assert opened == []
    assert store.wal.header() is not None  # found through the link

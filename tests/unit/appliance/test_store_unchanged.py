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

"""The soak's fuzzing check (tests/soak/store_changes.py) names every row of state a call
changed, net, and nothing else: what a full copy of the store before and after would
show, from the rows the triggers logged."""
from __future__ import annotations

import sqlite3

import pytest

from tests.soak.store_changes import LOG, StoreChanges


@pytest.fixture
def store(tmp_path):
    path = tmp_path / "s.db"
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute('CREATE TABLE vms (id TEXT PRIMARY KEY, name TEXT, desired_state TEXT, observed_state TEXT, '
               'spec BLOB)')
    db.execute("CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT)")  # not state
    db.execute("CREATE TABLE keys (id TEXT PRIMARY KEY, key TEXT)")
    db.execute("INSERT INTO vms VALUES ('a', 'web-1', 'running', 'running', x'00ff'), "
               "('b', 'it''s', 'stopped', 'stopped', NULL)")
    db.execute("INSERT INTO keys VALUES ('k1', 'ssh-ed25519 AAA')")
    changes = StoreChanges(path)
    yield db, changes
    changes.close()
    db.close()


def test_each_kind_of_change_is_named_by_table_row_and_column(store):
    db, changes = store
    at = changes.mark()
    assert changes.since(at) == []
    db.execute("UPDATE vms SET desired_state = 'stopped', spec = x'01' WHERE id = 'a'")
    db.execute("INSERT INTO keys VALUES ('k2', 'ssh-rsa BBB')")
    db.execute("DELETE FROM vms WHERE id = 'b'")
    assert changes.since(at) == ["keys +row 2", "vms row 1 (name web-1): desired_state, spec",
                                 "vms -row 2 (name it's)"]
    assert changes.since(changes.mark()) == []  # a later mark: nothing since


def test_what_is_not_state_and_what_comes_back_are_no_change(store):
    db, changes = store
    at = changes.mark()
    db.execute("UPDATE vms SET observed_state = 'paused'")  # the controller's own column
    db.execute("INSERT INTO events (kind) VALUES ('created')")  # the controller's own table
    db.execute("INSERT INTO keys VALUES ('k2', 'ssh-rsa BBB')")  # made, then gone
    db.execute("DELETE FROM keys WHERE id = 'k2'")
    db.execute("UPDATE vms SET desired_state = 'paused' WHERE id = 'a'")  # changed, then set back
    db.execute("UPDATE vms SET desired_state = 'running' WHERE id = 'a'")
    assert changes.since(at) == []
    assert db.execute(f"SELECT count(*) FROM {LOG}").fetchone()[0] == 4  # the state ones were seen
    db.execute("UPDATE vms SET desired_state = NULL WHERE id = 'a'")  # to NULL is a change
    assert changes.since(at) == ["vms row 1 (name web-1): desired_state"]


def test_a_rolled_back_write_leaves_nothing_and_close_takes_the_triggers_out(store):
    db, changes = store
    at = changes.mark()
    db.execute("BEGIN")
    db.execute("UPDATE keys SET key = 'x'")
    db.execute("ROLLBACK")
    assert changes.since(at) == []
    changes.close()
    names = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE name LIKE 'soak%'")]
    assert names == []
    db.execute("UPDATE keys SET key = 'y'")  # no trigger left to write into a missing log

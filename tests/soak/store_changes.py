"""What a call changed in the store's state, exactly, at the cost of what it changed
(the soak's fuzzing: tests/soak/fuzz_api.py, fuzz_mount.py).

Triggers on every table of state record, as it happens, each row inserted, deleted, or
updated in a column of state, with that row's values before. `mark()` before a call and
`since(mark)` after it name the rows whose state differs, net, as a comparison of two
whole copies of the store would (a row inserted then deleted, or changed and set back,
is no change), but reading only the rows touched. Copying every row before and after
each write took ~35 % of fuzz-api's time at 10,000 cases, and grew with the store.

Not state (what the controller, or every request, changes by itself): OWN_TABLES and
OWN_COLUMNS. A row replaced by INSERT OR REPLACE shows as a new row (SQLite fires no
delete trigger for the row it replaces): still a change.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

OWN_TABLES = {"events", "operations", "meta", "tickets", "hosts"}
OWN_COLUMNS = {"observed_state", "observed_reason", "state_changed", "domain_xml", "addresses", "ready",
               "boot_console_offset", "running_spec", "updated", "last_error", "last_used", "last_seen", "up",
               "info", "down_since", "last_attempt", "connect_error", "cpu_warning", "restart_required",
               "instance_id", "pinned_cpus", "host", "state", "size", "progress", "finished", "started"}
LOG = "soak_changes"  # the triggers' log, and the prefix of their names


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _values(cols: list[str], ref: str) -> str:
    """One text per row: its columns of state, each as SQL's quote() writes it (exact for
    any type, blobs included)."""
    return "json_array(" + ", ".join(f"quote({ref}{_quote(c)})" for c in cols) + ")"


class StoreChanges:
    """Installs the triggers into the store at db_path (see the module); close() takes
    them out again (a store the soak goes on using)."""

    def __init__(self, db_path: Path):
        self.columns: dict[str, list[str]] = {}
        self.closed = False
        # autocommit: each read sees the latest commit; the triggers go in in one transaction
        self._db = sqlite3.connect(db_path, timeout=30, isolation_level=None, check_same_thread=False)
        with self._transaction() as db:
            db.execute(f"CREATE TABLE IF NOT EXISTS {LOG} (id INTEGER PRIMARY KEY, tbl TEXT NOT NULL, "
                       "row INTEGER NOT NULL, old TEXT)")
            tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
                      if not r[0].startswith("sqlite_") and r[0] not in OWN_TABLES and r[0] != LOG]
            for table in tables:
                cols = [r[1] for r in db.execute(f"PRAGMA table_info({_quote(table)})")
                        if r[1] not in OWN_COLUMNS]
                self.columns[table] = cols
                self._triggers(db, table, cols)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    @staticmethod
    def _triggers(db: sqlite3.Connection, table: str, cols: list[str]) -> None:
        name, tbl = _quote(table), "'" + table.replace("'", "''") + "'"
        log = f"INSERT INTO {LOG} (tbl, row, old) VALUES ({tbl}"
        db.execute(f"CREATE TRIGGER IF NOT EXISTS {_quote(f'{LOG}_{table}_insert')} AFTER INSERT ON {name} "
                   f"BEGIN {log}, NEW.rowid, NULL); END")
        db.execute(f"CREATE TRIGGER IF NOT EXISTS {_quote(f'{LOG}_{table}_delete')} AFTER DELETE ON {name} "
                   f"BEGIN {log}, OLD.rowid, {_values(cols, 'OLD.')}); END")
        if cols:  # an update of the controller's own columns alone is not logged
            changed = " OR ".join(f"OLD.{_quote(c)} IS NOT NEW.{_quote(c)}" for c in cols)
            db.execute(f"CREATE TRIGGER IF NOT EXISTS {_quote(f'{LOG}_{table}_update')} AFTER UPDATE ON {name} "
                       f"WHEN {changed} BEGIN {log}, OLD.rowid, {_values(cols, 'OLD.')}); END")

    def close(self) -> None:
        """The triggers and their log taken out of the store (once)."""
        if self.closed:
            return
        self.closed = True
        try:
            with self._transaction() as db:
                for table in self.columns:
                    for what in ("insert", "delete", "update"):
                        db.execute(f"DROP TRIGGER IF EXISTS {_quote(f'{LOG}_{table}_{what}')}")
                db.execute(f"DROP TABLE IF EXISTS {LOG}")
        finally:
            self._db.close()

    def mark(self) -> int:
        return int(self._db.execute(f"SELECT coalesce(max(id), 0) FROM {LOG}").fetchone()[0])

    def since(self, mark: int) -> list[str]:
        """The rows of state that differ from what they were at `mark`: 'vms row 3 (name
        web-1): desired_state, spec', 'pools +row 2 (name web)', 'keys -row 1'."""
        db = self._db
        db.execute("BEGIN")  # the log and the rows read as of one moment
        try:
            first: dict[tuple[str, int], str | None] = {}
            for tbl, row, old in db.execute(f"SELECT tbl, row, old FROM {LOG} WHERE id > ? ORDER BY id", (mark,)):
                first.setdefault((tbl, row), old)
            out = []
            for (tbl, row), old in sorted(first.items()):
                cols = self.columns[tbl]
                now = db.execute(f"SELECT {_values(cols, '')} FROM {_quote(tbl)} WHERE rowid = ?",
                                 (row,)).fetchone()
                new = now[0] if now else None
                if old == new:
                    continue
                a = dict(zip(cols, json.loads(old), strict=True)) if old is not None else None
                b = dict(zip(cols, json.loads(new), strict=True)) if new is not None else None
                label = f"{tbl} {'+' if a is None else '-' if b is None else ''}row {row}"
                named = b or a or {}
                if "name" in named:
                    label += f" (name {_unquote(named['name'])})"
                if a is not None and b is not None:
                    label += ": " + ", ".join(c for c in cols if a[c] != b[c])
                out.append(label)
            return out
        finally:
            db.execute("COMMIT")


def _unquote(text: str) -> str:
    """A text value as quote() wrote it, back ('it''s' -> it's); other types as written."""
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1].replace("''", "'")
    return text

"""The store's connections, transactions and migrations, and what every table's
records share.

SQLite is the source of truth. No rules live in the store (they are in the
service); it guarantees that every change is one transaction and that a write
naming a stale generation fails instead of overwriting someone else's change.
One connection per thread, WAL mode, so the API workers, the controller and the
mount can share the file. Every value reaches SQL as a bound parameter; the
only names formatted into SQL are columns checked against the table's own.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.store.changes import ChangeFeed
from appliance.store.schema import MIGRATIONS
from appliance.store.walindex import WalIndex

# The meta key of the appliance's instance id (appliance/serve.py), which every
# domain it defines names in its <metadata>.
INSTANCE_ID_KEY = "instance_id"

# A record as the store returns it: a table's columns, JSON columns decoded.
Row = dict[str, Any]


# Numbers the connections this process opens (read_stamp: a stamp names its connection).
_connections = itertools.count()


def marks(values: Sequence[object]) -> str:
    """`?, ?, ?`: one bound parameter per value of an IN list."""
    return ", ".join("?" * len(values))


class StoreBase:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = str(path)
        self.clock = clock
        self._local = threading.local()
        self._columns: dict[str, frozenset[str]] = {}
        # Commits seen by this process's waiting threads (store/changes.py).
        # Whether anything was committed, without a query (store/walindex.py).
        self.wal = WalIndex(self.path)
        self.changes = ChangeFeed(self.path, self.wal)
        self._private_files()
        with self.transaction() as db:
            self._migrate(db)

    def _private_files(self) -> None:
        """The store holds every spec and cloud-init user data: 0600, like the token.
        SQLite makes its -wal and -shm files with the database file's mode; a
        store from before this rule is narrowed here (as are its -wal and -shm)."""
        if self.path == ":memory:":
            return
        # Never open and close a descriptor of a database this process may have open:
        # closing any descriptor of a file drops every POSIX lock the process holds on
        # it (SQLite's among them; an API worker makes two Stores). Made here only when
        # it is not there yet; otherwise its mode is narrowed by path, below.
        with contextlib.suppress(FileExistsError):
            os.close(os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self.path + suffix, 0o600)

    # -- connections and transactions -------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db: sqlite_utils.Database | None = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(
                self.path, isolation_level=None, timeout=30, check_same_thread=False
            )
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            # One connection per thread: keep each page cache small (512 KiB; the
            # default 2 MiB x 8 threads x 3 processes showed in the memory bench).
            conn.execute("PRAGMA cache_size=-512")
            conn.execute("PRAGMA foreign_keys=ON")
            db = sqlite_utils.Database(conn)
            self._local.db = db
            self._local.serial = next(_connections)
        return db

    def read_stamp(self) -> tuple[int, object, int] | None:
        """A value that changes when anything is committed to the store, by any
        connection of any process: the wal-index header (store/walindex.py: every
        commit changes it, at once), or where there is none this process's change
        watcher's generation (store/changes.py: it sees another connection's commit
        within its POLL); with this thread's own connection (its serial) and its
        total_changes (which move at once when this thread writes). Take it before a
        read: while a later stamp is equal, the read would find the same rows, so its
        answer may be reused (tokens.resolver). None: no watcher yet (it is started),
        reuse nothing. Costs no query: a query's read lock was most of the price of a
        token's lookup, and the watcher a thread polling beside every API worker's
        requests (py-spy: a sixth of a loaded worker's busy samples)."""
        changed: object = self.wal.header()
        if changed is None:
            changed = self.changes.stamp()
            if changed is None:
                return None
        conn = self.db.conn
        return self._local.serial, changed, conn.total_changes

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite_utils.Database]:
        """BEGIN IMMEDIATE: writers queue on the lock instead of failing at commit."""
        db = self.db
        if getattr(self._local, "depth", 0):
            self._local.depth += 1
            try:
                yield db
            finally:
                self._local.depth -= 1
            return
        db.execute("BEGIN IMMEDIATE")
        self._local.depth = 1
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK")
            raise
        else:
            db.execute("COMMIT")
        finally:
            self._local.depth = 0

    def _migrate(self, db: sqlite_utils.Database) -> None:
        version: int = db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            migration(db)
            db.execute(f"PRAGMA user_version = {int(number)}")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    def ping(self) -> None:
        self.db.execute("SELECT 1").fetchone()

    # -- what the tables share -----------------------------------------------
    def columns(self, table: str) -> frozenset[str]:
        if table not in self._columns:
            self._columns[table] = frozenset(self.db.table(table).columns_dict)
        return self._columns[table]

    def _update(
        self,
        table: str,
        key: str,
        value: object,
        fields: Mapping[str, object],
        extra_set: str = "",
        extra_where: str = "",
        extra_params: Sequence[object] = (),
    ) -> int:
        """UPDATE one record's columns by its key; the number of rows changed.
        Column names come from code, and are checked against the table's own
        before they are formatted in: a misspelt field fails here, loudly."""
        unknown = set(fields) - self.columns(table)
        if unknown:
            raise ValueError(f"{table} has no column {sorted(unknown)[0]!r}")
        sets = ", ".join(
            [*(f"{column} = ?" for column in fields), *([extra_set] if extra_set else [])]
        )
        sql = f"UPDATE {table} SET {sets} WHERE {key} = ?{extra_where}"  # noqa: S608 - checked names, bound values
        cursor = self.db.execute(sql, [*fields.values(), value, *extra_params])
        return int(cursor.rowcount)

    def _rows(
        self,
        table: str,
        where: str,
        params: Sequence[object] = (),
        order_by: str | None = None,
        limit: int | None = None,
        select: str = "*",
    ) -> list[Row]:
        # The SQL sqlite-utils' Table.rows_where builds, without its per-call
        # check that the table exists (a query of sqlite_master: it doubled the
        # cost of `cat vms/X/state`). `table`, `select` and `order_by` are this
        # package's own constants; values are always bound parameters.
        sql = f"SELECT {select} FROM [{table}]"  # noqa: S608 - constants only, see above
        if where:
            sql += f" WHERE {where}"
        if order_by:
            sql += f" ORDER BY {order_by}"
        if limit is not None:
            sql += f" LIMIT {int(limit)}"
        return self._select(sql, params)

    def _select(self, sql: str, params: Sequence[object] = ()) -> list[Row]:
        """Rows of a SELECT as dicts. Not sqlite-utils' Database.query: since 4.0 it
        wraps every statement in a SAVEPOINT and its RELEASE (three statements and
        a transaction per read; a third of a GET /v1/vms/NAME)."""
        cursor = self.db.conn.execute(sql, list(params))
        keys = [d[0] for d in cursor.description]
        return [dict(zip(keys, row, strict=True)) for row in cursor]

    # -- the project of a VM record (operations and events are their VM's project's) --
    def project_of_vm(self, vm: Row) -> str | None:
        """The project of a VM record, read from the store when the record was
        selected without it (None: a VM the store no longer has)."""
        if vm.get("project"):
            return str(vm["project"])
        found = self.db.execute("SELECT project FROM vms WHERE id = ?", [vm["id"]]).fetchone()
        return found[0] if found else None

    # -- meta ---------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db.table("meta").upsert({"key": key, "value": value}, pk="key")

    def delete_meta(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", [key])


def read_meta(path: str | Path, key: str) -> str | None:
    """One meta value of the store at `path`, read only: no migration, no file made
    (None if there is no store there, or no such value). For a process that
    does not own the store (`vmctl exporter` reading its home's instance id)."""
    if not Path(path).is_file():
        return None
    try:
        conn = sqlite3.connect(f"{Path(path).absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    except sqlite3.Error:
        return None
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    except sqlite3.Error:  # not (yet) a store: no meta table
        return None
    finally:
        conn.close()
    return str(row[0]) if row else None

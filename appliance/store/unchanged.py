"""Rows read again only when the store changed: a VM's row, kept per thread while
no commit was made to the database since it was read.

Why: `cat vms/X/state` is the hot path of scripts that poll, and the mount
read the VM's row three times per `cat` (the kernel's getattr, then open, each
a SELECT, ~40-60 µs with its decoding). A read is served again here only while
no commit at all was made since: the wal-index header (store/walindex.py; or,
where there is none, SQLite's `PRAGMA data_version`) changes when any connection
(another thread, another process: the controller, the API) commits, and the
connection's own `total_changes` when it writes. Both are read before the SELECT whose result is
kept, so a commit racing that SELECT only costs one more read. Nothing here can
be stale: there is no time bound because there is no time at all, only
"unchanged since".

What is kept is the row as SQLite gave it; each caller gets it decoded anew
(its own dict and spec), as from a SELECT. Beside it, values made from that row
alone and never changed by their readers (store/vms.py `vm_derived`: a view's
JSON, a decoded row that callers only read) are kept under the same rule: read
again only after a commit. At most MAX_ROWS entries per thread; any commit forgets
them all. Reads inside a transaction of this thread skip it. The mark
is the newest commit, not the snapshot of a statement the thread left stepping: code that
iterates a cursor on the thread's connection must not read kept rows inside the loop
(store/walindex.py; the store's own reads take their results in full).
Opt-in per Store (the mount's: fs/mount.py; the API's: appliance/api/app.py, with
a smaller bound, its workers having 32 threads each): the check costs a read of
48 bytes of shared memory, the pragma's price (~3 µs and a hand-off of the GIL) where
there is no wal-index.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

from appliance.store.walindex import WalIndex

MAX_ROWS = 256

Key = tuple[str, ...]  # (project, name) for a raw row, (project, name, kind) for a value made of it
Mark = tuple[bytes | int, int]  # (wal-index header or data_version, total_changes)
Raw = Any  # a row as SELECT gave it (JSON columns not decoded), or a value made of it


def commit_mark(conn: sqlite3.Connection, wal: WalIndex | None) -> Mark:
    """What changes whenever anything is committed (see the module docstring): the
    wal-index header (store/walindex.py: no statement, the GIL kept) or, without one,
    SQLite's data_version; and the connection's own total_changes."""
    header = wal.header() if wal is not None else None
    if header is None:
        return int(conn.execute("PRAGMA data_version").fetchone()[0]), conn.total_changes
    return header, conn.total_changes


class UnchangedRows:
    """Raw rows (and values made of them) by key, per thread, forgotten at the first
    commit anyone makes."""

    def __init__(self, max_rows: int = MAX_ROWS, wal: WalIndex | None = None) -> None:
        self._local = threading.local()
        self.max_rows = max_rows
        self.wal = wal

    def get(self, conn: sqlite3.Connection, key: Key) -> tuple[Mark, Raw | None]:
        """The current mark, and the row kept for key if nothing was committed since."""
        now = commit_mark(conn, self.wal)
        kept: tuple[Mark, dict[Key, Raw]] | None = getattr(self._local, "rows", None)
        if kept is None or kept[0] != now:
            self._local.rows = (now, {})
            return now, None
        return now, kept[1].get(key)

    def put(self, mark: Mark, key: Key, row: Raw) -> None:
        """Keep a row (or a value made of one) read after `mark` was taken (dropped if a
        commit came in between)."""
        kept: tuple[Mark, dict[Key, Raw]] | None = getattr(self._local, "rows", None)
        if kept is None or kept[0] != mark:
            return
        if len(kept[1]) >= self.max_rows:
            kept[1].clear()
        kept[1][key] = row

"""Commits to the store, seen by the threads of one process that wait for them.

Why: a request that waits for its operation (every write by default, and
`GET /v1/operations/ID?wait=N`) used to read its operation's row every 10 ms.
Forty such waits were 4,000 queries a second in one API worker, each taking
the GIL, and on a busy 2-CPU host `/healthz` beside them missed a 1 s budget
(the CI run of issue 14). Here one thread per process reads SQLite's
the wal-index header every millisecond (store/walindex.py; where there is
none, `PRAGMA data_version` on a connection of its own every 10 ms), which
changes when any connection (the controller's, in another process, or this
process's other threads) commits; waiters sleep on a condition until it does, then read
their row once. With nothing committed, forty waits cost nothing at all.

The watcher runs only while someone waits and stops itself after IDLE_STOP
seconds without waiters, so a process that never waits has no such thread
(and gunicorn forks its workers before any is started).
"""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator

from appliance.store.walindex import WalIndex

# How often the watcher asks SQLite whether anything was committed: the
# latency a waiter sees at worst, for one cheap pragma (no table is read).
POLL = 0.01
# The same where the store has a wal-index to read (store/walindex.py): a read of
# shared memory, no statement, so it is looked at ten times as often while someone
# waits (a write's answer came ~5 ms after its operation ended, on average).
HEADER_POLL = 0.001
# A waiter reads its row at least this often even if no commit was seen:
# a net under the watcher, not the way waits normally end.
MAX_WAIT = 1.0
# The watcher stops after this long without waiters.
IDLE_STOP = 2.0


class ChangeFeed:
    def __init__(self, path: str, wal: WalIndex | None = None):
        self.path = path
        self.wal = wal
        self._cond = threading.Condition()
        self._generation = 0  # bumped on each commit the watcher sees
        self._waiters = 0
        self._leased = -IDLE_STOP  # when stamp() was last asked (monotonic)
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()  # the running watcher's: set once it has its baseline

    @contextlib.contextmanager
    def watching(self) -> Iterator[ChangeFeed]:
        """Count the caller as a waiter (starting the watcher if it is not
        running, once it has read its baseline: a commit after this returns is
        seen) for the length of the block."""
        with self._cond:
            self._waiters += 1
            if self._thread is None:
                self._start()
            ready = self._ready
        ready.wait(MAX_WAIT)
        try:
            yield self
        finally:
            with self._cond:
                self._waiters -= 1

    def stamp(self) -> int | None:
        """For readers that reuse an answer while nothing was committed
        (tokens.resolver): the generation while the watcher runs and has its
        baseline, else None (the watcher is started: nothing read before it
        watched may be reused). Keeps the watcher running IDLE_STOP more seconds."""
        with self._cond:
            self._leased = time.monotonic()
            if self._thread is None:
                self._start()
                return None
            return self._generation if self._ready.is_set() else None

    @property
    def generation(self) -> int:
        """Take this before reading what you wait on; pass it to wait()."""
        with self._cond:
            return self._generation

    def _start(self) -> None:
        """(Under the condition.) A new watcher; the generation moves, since the
        commits between the last watcher's end and this one's baseline are seen by none."""
        self._generation += 1
        self._ready = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, args=(self._ready,), name="store-changes", daemon=True
        )
        self._thread.start()

    def wait(self, seen: int, timeout: float) -> None:
        """Until a commit after `seen` was taken, or min(timeout, MAX_WAIT) passed."""
        with self._cond:
            self._cond.wait_for(lambda: self._generation != seen, min(timeout, MAX_WAIT))

    def _version(self, conn: sqlite3.Connection) -> object:
        """What every commit changes: the wal-index header, or where there is none the
        connection's data_version."""
        header = self.wal.header() if self.wal is not None else None
        return header if header is not None else conn.execute("PRAGMA data_version").fetchone()[0]

    def _watch(self, ready: threading.Event) -> None:
        conn = None
        try:
            conn = sqlite3.connect(self.path, check_same_thread=False)
            version = self._version(conn)
            poll = HEADER_POLL if isinstance(version, bytes) else POLL
            ready.set()
            idle_since: float | None = None
            while True:
                time.sleep(poll)
                now = self._version(conn)
                with self._cond:
                    if now != version:
                        version = now
                        self._generation += 1
                        self._cond.notify_all()
                    if self._waiters:
                        idle_since = None
                    elif idle_since is None:
                        idle_since = time.monotonic()
                    # idle: no waiter, and no stamp() asked, for IDLE_STOP
                    elif time.monotonic() - max(idle_since, self._leased) >= IDLE_STOP:
                        self._thread = None
                        return
        except sqlite3.Error:
            # The store went away (a test's home removed, the process ending):
            # waiters fall back on MAX_WAIT, and the next waiter starts a watcher.
            with self._cond:
                self._thread = None
        finally:
            ready.set()
            if conn is not None:
                conn.close()

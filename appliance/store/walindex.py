"""Whether anything was committed to the store, read from SQLite's wal-index header: no query.

Why: the mount and the API serve a VM's row again while nothing was committed
(store/unchanged.py). They asked SQLite with `PRAGMA data_version`, a statement, and
Python's sqlite3 releases the GIL around every statement it steps. In a process whose
threads share the GIL that release is a hand-off: the event loop (uvicorn's, trio's) takes
the GIL and the request waits for it back. py-spy of one API worker under `wrk` found
~47 % of its busy samples inside that pragma's line, for a statement that costs ~3 µs
alone; the bare Falcon app it is measured against makes no call that releases the GIL.

How: in WAL mode every connection maps the database's `-shm` file, whose first 48 bytes
are the wal-index header (https://www.sqlite.org/walformat.html, "The WAL-Index Header"):
among its fields `iChange`, which every committed transaction increments, `mxFrame`, the
last valid frame of the WAL, and the salts, which change when the WAL is restarted. A
writer updates the header before its COMMIT returns, so a header that reads the same now
as before means that no commit completed in between; reading it is a memory read, with
the GIL held throughout. A commit updating the header while it is read gives bytes equal
to neither the old nor the new header: read as "changed", one query more, never a stale
answer. A checkpoint copies pages into the database without changing what a reader sees;
a RESTART or TRUNCATE checkpoint rewrites the header (walRestartHdr): a read more, no more.

The header is the newest commit, not the snapshot the caller's connection reads: a thread
that kept a statement stepping on its connection (a cursor left half-read) reads under an
older snapshot, and a row it read there would be kept under the newer header. The store
reads every result in full (StoreBase._rows, fetchone/fetchall), so no statement is left
open between its calls; code that iterates a cursor must not read kept rows inside the
loop (store/unchanged.py says so too).

Reading it opens nothing: the header is read where SQLite itself mapped the file in this
process (found once in /proc/self/maps). Opening the file here would be a trap: closing
any descriptor of a file drops every POSIX lock the process holds on it, and SQLite's
WAL locks are POSIX locks on the `-shm`; an `os.close` of a second descriptor let two
processes write at once (the quota test of concurrent creates from four processes saw
7 VMs made for a quota of 5). SQLite keeps its mapping while any of the process's
connections to the database is open, and unlinks the file when the last connection to
it closes (another would then make a new one, which an old mapping would not show), so
this object holds a connection of its own for as long as it reads the mapping. Where there
is no mapping to read (a database not in WAL mode, `:memory:`, a system without /proc, a
mapping not found), header() is None and callers ask SQLite instead; so it is in a child
forked after the index was made: SQLite's connections do not survive a fork (the child's
would share the parent's locks and mapping), and appliance/forked.py and gunicorn fork
before any connection exists.
"""

from __future__ import annotations

import ctypes
import os
import sqlite3
import threading

# The first copy of the wal-index header (WalIndexHdr: 48 bytes; a second copy follows).
HEADER_BYTES = 48

# Bumped in a forked child (os.getpid() per read would be a system call per read).
_forks = [0]
os.register_at_fork(after_in_child=lambda: _forks.__setitem__(0, _forks[0] + 1))


class WalIndex:
    """The wal-index header of one database, where SQLite mapped it in this process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._address: int | None = None
        self._view: ctypes.Array[ctypes.c_char] | None = None  # the header's bytes, where mapped
        self._conn: sqlite3.Connection | None = None
        self._unusable = path == ":memory:"
        self._fork = _forks[0]

    def header(self) -> bytes | None:
        """The header's bytes now; None when the database has no wal-index to read here."""
        view = self._view
        if view is None or self._fork != _forks[0]:
            address = self._find()
            if address is None:
                return None
            view = self._view = (ctypes.c_char * HEADER_BYTES).from_address(address)
        # A copy of the 48 bytes, as ctypes.string_at makes, without a foreign call
        # (~0.03 µs against ~0.4 µs: 2-5 reads per API request and per `cat`).
        return view.raw

    def _find(self) -> int | None:
        with self._lock:
            if self._fork != _forks[0]:  # made before a fork: never read here (docstring)
                self._address, self._unusable = None, True
            if self._address is not None or self._unusable:
                return self._address
            self._unusable = True  # unless found below: one try, not one per read
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False)
            except sqlite3.Error:
                return None
            mode = None
            try:
                mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
                # A read makes SQLite map the -shm (the first connection in WAL mode made it),
                # beside the database's real file (SQLite follows a symbolic link).
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
                address = mapped_at(os.path.realpath(self.path) + "-shm")
            except (sqlite3.Error, OSError):
                address = None
            if str(mode).lower() != "wal" or address is None:
                conn.close()
                return None
            self._conn, self._address, self._unusable = conn, address, False
            return address


def mapped_at(path: str) -> int | None:
    """Where this process maps the start of the file at path (SQLite's mapping), from
    /proc/self/maps: `start-end perms offset dev inode pathname`. The file is the one
    whose inode is there with its device, or with its path (an overlay file system
    shows another device in the maps than stat gives)."""
    shm, real = os.stat(path), os.path.realpath(path)
    with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            if len(fields) < 6 or fields[4] != str(shm.st_ino) or int(fields[2], 16) != 0:
                continue
            if _device(fields[3]) != shm.st_dev and fields[5].rstrip("\n") != real:
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start >= 2 * HEADER_BYTES:
                return start
    return None


def _device(field: str) -> int:
    major, minor = (int(x, 16) for x in field.split(":"))
    return os.makedev(major, minor)

"""SQLite, the source of truth: schema, migrations and plain record access.

No rules live here (they are in service.py); this module only guarantees that
every change is one transaction and that a write naming a stale generation
fails instead of overwriting someone else's change. One connection per thread,
WAL mode, so the API workers, the controller and the mount can share the file.
"""
from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import sqlite_utils

from appliance.errors import NotFound, PreconditionFailed
from appliance.model import DEFAULT_CPU_RATIO, DEFAULT_DISK_RATIO, DEFAULT_RAM_RATIO


def _v1(db: sqlite_utils.Database) -> None:
    db["meta"].create({"key": str, "value": str}, pk="key")
    db["vms"].create(
        {
            "id": str,  # uuid; also the libvirt domain's uuid
            "name": str,
            "spec": str,  # JSON, normalised by spec.validate
            "desired_state": str,  # running | stopped | paused
            "observed_state": str,  # running | stopped | paused | crashed | unknown ...
            "observed_reason": str,
            "host": str,
            "generation": int,
            "created": float,
            "updated": float,
            "state_changed": float,
            "mac": str,
            "domain_xml": str,
            "restart_required": int,
            "last_error": str,
            "addresses": str,  # JSON list, as DHCP leases / the guest agent report them
        },
        pk="id",
        not_null={"name", "spec", "desired_state", "generation"},
    )
    db["vms"].create_index(["name"], unique=True)
    db["operations"].create(
        {
            "id": str,
            "vm_id": str,
            "vm_name": str,
            "kind": str,  # create start stop force-stop pause resume reboot rename delete converge
            "status": str,  # pending running succeeded failed cancelled
            "progress": int,
            "params": str,
            "error": str,
            "created": float,
            "started": float,
            "finished": float,
        },
        pk="id",
    )
    db["operations"].create_index(["status", "created"])
    db["operations"].create_index(["vm_id", "status"])
    db["events"].create(
        {
            "id": int,
            "time": float,
            "vm_id": str,
            "vm_name": str,
            "kind": str,
            "message": str,
            "operation": str,
        },
        pk="id",
    )
    db["events"].create_index(["vm_id", "id"])
    db["images"].create(
        {
            "name": str,
            "path": str,
            "format": str,
            "virtual_size": int,
            "actual_size": int,
            "created": float,
            "source": str,
        },
        pk="name",
    )
    db["hosts"].create(
        {
            "name": str,
            "uri": str,
            "state": str,  # enabled | disabled | maintenance
            "up": int,
            "last_seen": float,
            "info": str,  # JSON inventory from libvirt
        },
        pk="name",
    )


def _v2(db: sqlite_utils.Database) -> None:
    """Probes: readiness as the prober last judged it, and where the console
    log stood when the guest last started (console probes read from there)."""
    db["vms"].add_column("ready", int)
    db["vms"].add_column("boot_console_offset", int)


def _v3(db: sqlite_utils.Database) -> None:
    """Several hosts: per-host overcommit ratios, labels and storage; server
    groups; a VM is always placed (its host holds its claim, stopped or not)."""
    hosts = db["hosts"]
    for column, kind in (("cpu_ratio", float), ("ram_ratio", float), ("disk_ratio", float),
                         ("reserved_memory_mib", int), ("labels", str), ("storage", str),
                         ("migration_address", str), ("created", float), ("down_since", float)):
        hosts.add_column(column, kind)
    db.execute("UPDATE hosts SET cpu_ratio = ?, ram_ratio = ?, disk_ratio = ?, reserved_memory_mib = 0, "
               "labels = '{}', storage = 'shared'", [DEFAULT_CPU_RATIO, DEFAULT_RAM_RATIO, DEFAULT_DISK_RATIO])
    db["groups"].create({"name": str, "policy": str, "created": float}, pk="name")
    # Before hosts could be added, every VM lived on the one local host.
    db.execute("UPDATE vms SET host = 'local' WHERE host IS NULL OR host = ''")


# Each migration runs once, in a transaction, in order; PRAGMA user_version
# records how many have run. Append, never edit.
MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3]

VM_JSON_FIELDS = ("spec",)


def _decode_vm(row: dict) -> dict:
    row = dict(row)
    row["spec"] = json.loads(row["spec"])
    row["restart_required"] = bool(row.get("restart_required"))
    return row


def _decode_op(row: dict) -> dict:
    row = dict(row)
    row["params"] = json.loads(row["params"] or "{}")
    return row


# _SQL_NOTE: the f-strings below put column names and WHERE clauses into SQL;
# both are written by this module's callers in code, never taken from input,
# and every value is a bound parameter. (Issue 10 replaces the `where: str`
# parameters with typed queries.)


class Store:
    def __init__(self, path: str | Path, clock: Callable[[], float] = time.time):
        self.path = str(path)
        self.clock = clock
        self._local = threading.local()
        self._private_files()
        with self.transaction() as db:
            self._migrate(db)

    def _private_files(self) -> None:
        """The store holds every spec and cloud-init user data: 0600, like the token.
        SQLite makes its -wal and -shm files with the database file's mode; a
        store from before this rule is narrowed here (as are its -wal and -shm)."""
        if self.path == ":memory:":
            return
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.chmod(self.path + suffix, 0o600)

    # -- connections and transactions -------------------------------------
    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=30, check_same_thread=False)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=30000")
            # One connection per thread: keep each page cache small (512 KiB; the
            # default 2 MiB x 8 threads x 3 processes showed in the memory bench).
            conn.execute("PRAGMA cache_size=-512")
            conn.execute("PRAGMA foreign_keys=ON")
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

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
        version = db.execute("PRAGMA user_version").fetchone()[0]
        for number, migration in enumerate(MIGRATIONS[version:], start=version + 1):
            migration(db)
            db.execute(f"PRAGMA user_version = {number}")

    def close(self) -> None:
        db = getattr(self._local, "db", None)
        if db is not None:
            db.conn.close()
            self._local.db = None

    def ping(self) -> None:
        self.db.execute("SELECT 1").fetchone()

    # -- meta ---------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
        return row[0] if row else default

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction() as db:
            db["meta"].upsert({"key": key, "value": value}, pk="key")

    def delete_meta(self, key: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM meta WHERE key = ?", [key])

    # -- VMs -----------------------------------------------------------------
    def get_vm(self, name: str) -> dict:
        rows = list(self.db.query("SELECT * FROM vms WHERE name = ?", [name]))
        if not rows:
            raise NotFound(f"no VM named {name!r}", "name")
        return _decode_vm(rows[0])

    def get_vm_by_id(self, vm_id: str) -> dict | None:
        rows = list(self.db.query("SELECT * FROM vms WHERE id = ?", [vm_id]))
        return _decode_vm(rows[0]) if rows else None

    def vm_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM vms WHERE name = ?", [name]).fetchone() is not None

    def list_vms(self, where: str = "", params: list | None = None, with_xml: bool = True) -> list[dict]:
        """All VMs (or those matching `where`); without the domain XML (~4.5 kB
        each) when the caller does not show it."""
        columns = "*" if with_xml else ", ".join(c for c in self._vm_columns() if c != "domain_xml")
        sql = f"SELECT {columns} FROM vms" + (f" WHERE {where}" if where else "") + " ORDER BY name"  # noqa: S608 - see _SQL_NOTE
        return [_decode_vm(r) for r in self.db.query(sql, params or [])]

    def _vm_columns(self) -> list[str]:
        if not hasattr(self, "_columns"):
            self._columns = [row[1] for row in self.db.execute("PRAGMA table_info(vms)")]
        return self._columns

    def list_vm_names(self) -> list[str]:
        return [r[0] for r in self.db.execute("SELECT name FROM vms ORDER BY name")]

    def count_vms(self) -> int:
        return self.db.execute("SELECT count(*) FROM vms").fetchone()[0]

    def insert_vm(self, row: dict) -> None:
        row = dict(row)
        row["spec"] = json.dumps(row["spec"], sort_keys=True)
        self.db["vms"].insert(row)

    def update_vm(self, vm_id: str, expect_generation: int | None = None, bump: bool = True, **fields: Any) -> None:
        """Update one VM. With expect_generation, fail unless it is still current
        (compare-and-set); with bump, the generation advances (spec changes do;
        observed-state updates from the controller do not)."""
        if "spec" in fields:
            fields["spec"] = json.dumps(fields["spec"], sort_keys=True)
        fields["updated"] = self.clock()
        sets = ", ".join(f"{k} = ?" for k in fields)
        if bump:
            sets += ", generation = generation + 1"
        sql = f"UPDATE vms SET {sets} WHERE id = ?"  # noqa: S608 - see _SQL_NOTE
        params = [*fields.values(), vm_id]
        if expect_generation is not None:
            sql += " AND generation = ?"
            params.append(expect_generation)
        cursor = self.db.execute(sql, params)
        if cursor.rowcount == 0:
            if expect_generation is not None and self.get_vm_by_id(vm_id) is not None:
                raise PreconditionFailed("the VM was changed by someone else; read it again", "generation")
            raise NotFound(f"no VM with id {vm_id}", "name")

    def delete_vm(self, vm_id: str) -> None:
        self.db.execute("DELETE FROM vms WHERE id = ?", [vm_id])

    # -- operations ------------------------------------------------------------
    def insert_operation(self, row: dict) -> None:
        row = dict(row)
        row["params"] = json.dumps(row.get("params") or {})
        self.db["operations"].insert(row)

    def add_operation(self, op_id: str, vm: dict, kind: str, params: dict | None = None) -> dict:
        """Record a pending operation on a VM; return it as the service shows it."""
        op = {
            "id": op_id, "vm_id": vm["id"], "vm_name": vm["name"], "kind": kind, "status": "pending",
            "progress": 0, "params": params or {}, "error": None, "created": self.clock(),
            "started": None, "finished": None,
        }
        self.insert_operation(op)
        return op

    def get_operation(self, op_id: str) -> dict:
        rows = list(self.db.query("SELECT * FROM operations WHERE id = ?", [op_id]))
        if not rows:
            raise NotFound(f"no operation {op_id!r}", "id")
        return _decode_op(rows[0])

    def list_operations(self, where: str = "", params: list | None = None, limit: int = 200) -> list[dict]:
        sql = "SELECT * FROM operations" + (f" WHERE {where}" if where else "")  # noqa: S608 - see _SQL_NOTE
        sql += " ORDER BY created DESC, rowid DESC LIMIT ?"
        return [_decode_op(r) for r in self.db.query(sql, [*(params or []), limit])]

    def next_operations(self) -> list[dict]:
        """Unfinished operations, oldest first."""
        sql = "SELECT * FROM operations WHERE status IN ('pending', 'running') ORDER BY created, rowid"
        return [_decode_op(r) for r in self.db.query(sql)]

    def claim_operation(self, op_id: str, now: float) -> bool:
        """Mark an unfinished operation running; False if it finished (or was
        cancelled) since it was listed, so that it never runs twice."""
        cursor = self.db.execute(
            "UPDATE operations SET status = 'running', started = coalesce(started, ?) "
            "WHERE id = ? AND status IN ('pending', 'running')", [now, op_id])
        return cursor.rowcount == 1

    def update_operation(self, op_id: str, **fields: Any) -> None:
        if "params" in fields:
            fields["params"] = json.dumps(fields["params"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE operations SET {sets} WHERE id = ?", [*fields.values(), op_id])  # noqa: S608 - see _SQL_NOTE

    # -- events ------------------------------------------------------------------
    def add_event(self, kind: str, message: str, vm: dict | None = None, operation: str | None = None) -> None:
        self.db["events"].insert(
            {
                "time": self.clock(),
                "vm_id": vm["id"] if vm else None,
                "vm_name": vm["name"] if vm else None,
                "kind": kind,
                "message": message,
                "operation": operation,
            }
        )

    def list_events(self, vm_id: str | None = None, since: int = 0, limit: int = 1000) -> list[dict]:
        where, params = "id > ?", [since]
        if vm_id is not None:
            where += " AND vm_id = ?"
            params.append(vm_id)
        sql = f"SELECT * FROM (SELECT * FROM events WHERE {where} ORDER BY id DESC LIMIT ?) ORDER BY id"  # noqa: S608 - see _SQL_NOTE
        return list(self.db.query(sql, [*params, limit]))

    # -- images --------------------------------------------------------------------
    def get_image(self, name: str) -> dict:
        rows = list(self.db.query("SELECT * FROM images WHERE name = ?", [name]))
        if not rows:
            raise NotFound(f"no image named {name!r}", "image")
        return rows[0]

    def list_images(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM images ORDER BY name"))

    def insert_image(self, row: dict) -> None:
        self.db["images"].insert(row)

    def delete_image(self, name: str) -> None:
        self.db.execute("DELETE FROM images WHERE name = ?", [name])

    # -- hosts ---------------------------------------------------------------------
    def upsert_host(self, row: dict) -> None:
        row = dict(row)
        if "info" in row and not isinstance(row["info"], str):
            row["info"] = json.dumps(row["info"])
        if "labels" in row and not isinstance(row["labels"], str):
            row["labels"] = json.dumps(row["labels"], sort_keys=True)
        with self.transaction() as db:
            db["hosts"].upsert(row, pk="name")

    def list_hosts(self, where: str = "", params: list | None = None) -> list[dict]:
        sql = "SELECT * FROM hosts" + (f" WHERE {where}" if where else "") + " ORDER BY name"  # noqa: S608 - see _SQL_NOTE
        rows = list(self.db.query(sql, params or []))
        for row in rows:
            row["info"] = json.loads(row["info"] or "{}")
            row["labels"] = json.loads(row["labels"] or "{}")
        return rows

    def get_host(self, name: str) -> dict:
        rows = self.list_hosts("name = ?", [name])
        if not rows:
            raise NotFound(f"no host named {name!r}", "host")
        return rows[0]

    def host_exists(self, name: str) -> bool:
        return self.db.execute("SELECT 1 FROM hosts WHERE name = ?", [name]).fetchone() is not None

    def update_host(self, name: str, **fields: Any) -> None:
        if "labels" in fields:
            fields["labels"] = json.dumps(fields["labels"], sort_keys=True)
        if "info" in fields and not isinstance(fields["info"], str):
            fields["info"] = json.dumps(fields["info"])
        sets = ", ".join(f"{k} = ?" for k in fields)
        self.db.execute(f"UPDATE hosts SET {sets} WHERE name = ?", [*fields.values(), name])  # noqa: S608 - see _SQL_NOTE

    def delete_host(self, name: str) -> None:
        self.db.execute("DELETE FROM hosts WHERE name = ?", [name])

    # -- server groups ----------------------------------------------------------------
    def list_groups(self) -> list[dict]:
        return list(self.db.query("SELECT * FROM groups ORDER BY name"))

    def get_group(self, name: str) -> dict:
        rows = list(self.db.query("SELECT * FROM groups WHERE name = ?", [name]))
        if not rows:
            raise NotFound(f"no server group named {name!r}", "group")
        return rows[0]

    def insert_group(self, row: dict) -> None:
        self.db["groups"].insert(row)

    def delete_group(self, name: str) -> None:
        self.db.execute("DELETE FROM groups WHERE name = ?", [name])

    # -- bulk reads for the controller's resync: a fixed number of queries per pass ----------
    def list_vms_for_resync(self) -> list[dict]:
        """Every VM as the resync compares it with libvirt: neither its domain
        XML (~4.5 kB each; `has_domain_xml` says whether it has one) nor its
        spec, of which only `network_type` is read (decoding 2,000 specs every
        pass was half of the pass's CPU)."""
        sql = ("SELECT id, name, host, desired_state, observed_state, observed_reason, state_changed, mac, "
               "addresses, domain_xml IS NOT NULL AS has_domain_xml, "
               "json_extract(spec, '$.network.type') AS network_type FROM vms")
        return list(self.db.query(sql))

    def vm_ids_with_open_operations(self) -> set[str]:
        """Ids of the VMs with a pending or running operation (one query)."""
        sql = "SELECT DISTINCT vm_id FROM operations WHERE status IN ('pending', 'running')"
        return {r[0] for r in self.db.execute(sql)}

"""Upgrades keep data (issue 16): every fixture home (tests/fixtures/homes/vN,
made by an older commit's own code, see its README) opened with today's code.

The migrations still due run once, in one transaction, in order; nothing the
old version stored is lost (each row of its manifest is still there, with the
same values, except what a migration rewrites on purpose, listed in REWRITES);
today's service reads it all; a second open runs no migration; and a migration
that fails midway leaves the old schema and data as they were."""
from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from appliance.access import SYSTEM, acting_as
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store, base, schema

HOMES_DIR = Path(__file__).resolve().parents[2] / "fixtures" / "homes"
HOMES = sorted((d for d in HOMES_DIR.glob("v*") if (d / "manifest.json").is_file()),
               key=lambda d: int(d.name[1:]))
VERSIONS = [int(d.name[1:]) for d in HOMES]
LATEST = len(schema.MIGRATIONS)
# The oldest fixture and the newest one older than today's schema.
OLDEST, LATEST_BUT_ONE = VERSIONS[0], max(v for v in VERSIONS if v < LATEST)

# (table, column) -> whether the new value is the old one as a migration may rewrite it.
REWRITES: dict[tuple[str, str], Callable[[Any, Any], bool]] = {
    # _v3: before hosts could be added, every VM lived on the one local host.
    ("vms", "host"): lambda old, new: new == old or (old in (None, "") and new == "local"),
    # _v14_null_projects: what schema v4's code left without a project is the default one's.
    ("groups", "project"): lambda old, new: new == old or (old is None and new == "default"),
    ("operations", "project"): lambda old, new: new == old or (old is None and new == "default"),
}
# Primary keys of the tables the manifests hold (rowid order otherwise).
KEYS = {"vms": ("id",), "hosts": ("name",), "groups": ("name",), "images": ("name",),
        "projects": ("name",), "users": ("name",), "tokens": ("id",), "networks": ("id",),
        "operations": ("id",), "events": ("id",), "meta": ("key",),
        "unix_identities": ("kind", "unix_name")}


def _manifest(home: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((home / "manifest.json").read_text())
    return data


def _copy_home(fixture: Path, tmp_path: Path) -> Config:
    home = tmp_path / "home"
    home.mkdir()
    for name in ("appliance.db", "config.json"):
        shutil.copyfile(fixture / name, home / name)
    return Config.load(home)


def _recording(monkeypatch, extra: dict[int, Callable[[Any], None]] | None = None) -> list[str]:
    """Replace the store's migration list by the same migrations, each noting its
    name when it runs; `extra`: migrations inserted before the given index."""
    ran: list[str] = []

    def noted(migration: Callable[[Any], None]) -> Callable[[Any], None]:
        def run(db: Any) -> None:
            ran.append(migration.__name__)
            migration(db)
        run.__name__ = migration.__name__
        return run

    wrapped = [noted(m) for m in schema.MIGRATIONS]
    for index, migration in sorted((extra or {}).items(), reverse=True):
        wrapped.insert(index, noted(migration))
    monkeypatch.setattr(base, "MIGRATIONS", wrapped)
    return ran


def _snapshot(path: Path) -> tuple[int, list[tuple[str, str]], dict[str, list[tuple[Any, ...]]]]:
    """user_version, the schema's SQL and every table's rows, read with sqlite3."""
    conn = sqlite3.connect(path)
    try:
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        ddl = sorted(conn.execute("SELECT name, sql FROM sqlite_master WHERE sql IS NOT NULL"))
        tables = [name for name, sql in ddl if sql.startswith("CREATE TABLE")]
        rows = {t: sorted(map(tuple, conn.execute(f"SELECT * FROM [{t}]")), key=repr)  # noqa: S608
                for t in tables}
    finally:
        conn.close()
    return version, ddl, rows


def _row_key(table: str, row: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(row[k] for k in KEYS[table])


def _assert_kept(path: Path, manifest: dict[str, Any]) -> None:
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    try:
        for table, kept in manifest["tables"].items():
            rows = [dict(r) for r in conn.execute(f"SELECT * FROM [{table}]")]  # noqa: S608
            assert len(rows) >= kept["count"], f"{table}: {len(rows)} rows, had {kept['count']}"
            if table not in KEYS:
                continue
            now = {_row_key(table, r): r for r in rows}
            for old in kept["rows"]:
                key = _row_key(table, old)
                assert key in now, f"{table} {key} lost"
                for column, value in old.items():
                    new = now[key][column]
                    same = REWRITES.get((table, column), lambda a, b: a == b)
                    assert same(value, new), f"{table} {key} {column}: {value!r} became {new!r}"
    finally:
        conn.close()


def test_the_fixtures_cover_the_oldest_and_the_latest_but_one_schema() -> None:
    assert OLDEST == 1
    assert LATEST_BUT_ONE < LATEST  # the newest released one (13 never was on main: 12, then 14)
    for home, version in zip(HOMES, VERSIONS, strict=True):
        manifest = _manifest(home)
        assert manifest["schema_version"] == version
        assert manifest["tables"]["vms"]["count"] >= 3  # something to lose
        assert _snapshot(home / "appliance.db")[0] == version


@pytest.mark.parametrize("fixture", HOMES, ids=[h.name for h in HOMES])
def test_an_old_home_upgrades_once_and_keeps_its_data(fixture, tmp_path, monkeypatch) -> None:
    manifest = _manifest(fixture)
    version = manifest["schema_version"]
    config = _copy_home(fixture, tmp_path)
    ran = _recording(monkeypatch)
    store = Store(config.db_path)
    assert ran == [m.__name__ for m in schema.MIGRATIONS[version:]]
    assert store.db.execute("PRAGMA user_version").fetchone()[0] == LATEST
    _assert_kept(config.db_path, manifest)
    # Today's service reads what the old one wrote.
    svc = Service(store, config)
    vms = manifest["tables"]["vms"]["rows"]
    for vm in vms:
        project = vm.get("project") or "default"
        with acting_as(SYSTEM.in_project(project)):
            view = svc.get_vm(vm["name"])
        assert view["spec"]["memory"] == json.loads(vm["spec"])["memory"]
    hosts = {h["name"] for h in manifest["tables"].get("hosts", {"rows": []})["rows"]}
    assert {h["name"] for h in svc.list_hosts()} == hosts
    if "groups" in manifest["tables"]:
        assert [g["name"] for g in svc.list_groups()] == ["web"]
    if "users" in manifest["tables"]:
        assert {u["name"] for u in svc.list_users()} == {u["name"] for u in manifest["tables"]["users"]["rows"]}
    store.close()
    # A second open: nothing left to run, nothing changed.
    before = _snapshot(config.db_path)
    ran.clear()
    Store(config.db_path).close()
    assert ran == []
    assert _snapshot(config.db_path) == before


@pytest.mark.parametrize("version", sorted({OLDEST, LATEST_BUT_ONE}))
@pytest.mark.parametrize("where", ["first", "last"])
def test_a_migration_failing_midway_leaves_the_old_schema(version, where, tmp_path, monkeypatch) -> None:
    """The failing migration comes after the first due one ("first", so at least
    one has changed the schema before it) or after all of them ("last"); it makes
    a table and changes rows before it fails. Afterwards the file is exactly the
    old version's, and the upgrade without it succeeds."""
    fixture = HOMES[VERSIONS.index(version)]
    config = _copy_home(fixture, tmp_path)
    before = _snapshot(config.db_path)

    def _broken(db: Any) -> None:
        db.execute("CREATE TABLE half_done (x INTEGER)")
        db.execute("UPDATE vms SET name = name || '-x'")
        raise RuntimeError("migration failed")

    index = version + 1 if where == "first" else LATEST
    ran = _recording(monkeypatch, {index: _broken})
    with pytest.raises(RuntimeError, match="migration failed"):
        Store(config.db_path)
    assert ran[-1] == "_broken"
    assert len(ran) == index - version + 1
    assert _snapshot(config.db_path) == before
    monkeypatch.setattr(base, "MIGRATIONS", schema.MIGRATIONS)
    Store(config.db_path).close()
    assert _snapshot(config.db_path)[0] == LATEST
    _assert_kept(config.db_path, _manifest(fixture))

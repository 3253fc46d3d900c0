"""vmctl admin backup | restore (issue 16): the home's store and configuration,
with real SQLite files, a real archive, and real things that show a home is
served (a process holding the serve lock, a bound controller socket, an HTTP
server at the config's address)."""
from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import json
import os
import socket
import sqlite3
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

import pytest

from appliance.cli import main
from appliance.config import Config
from appliance.home_backup import BackupError, _write_archive, backup
from appliance.home_restore import restore
from appliance.store import MIGRATIONS, Store


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def home(tmp_path) -> Path:
    """A home with a real store (every migration), a config whose API address
    nothing listens on, and a token."""
    config = Config(home=tmp_path / "home", listen=f"127.0.0.1:{_free_port()}")
    config.prepare()
    config.save()
    config.token(create=True)
    store = Store(config.db_path)
    store.set_meta("fixture", "before")
    store.close()
    return config.home


def _meta(home: Path, key: str) -> str | None:
    conn = sqlite3.connect(home / "appliance.db")
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = ?", [key]).fetchone()
    finally:
        conn.close()
    return row[0] if row else None


def _set_meta(home: Path, key: str, value: str) -> None:
    store = Store(home / "appliance.db")
    store.set_meta(key, value)
    store.close()


def test_backup_then_restore_brings_back_the_store_and_config(home, tmp_path) -> None:
    archive = tmp_path / "home.tar"
    token = (home / "token").read_text()
    manifest = backup(home, archive)
    assert archive.stat().st_mode & 0o777 == 0o600
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert names[0] == "manifest.json"
        assert set(names[1:]) == {"appliance.db", "config.json", "token"}
        db = tar.extractfile("appliance.db").read()
    assert hashlib.sha256(db).hexdigest() == manifest["files"]["appliance.db"]["sha256"]
    assert manifest["schema_version"] == len(MIGRATIONS)
    assert manifest["counts"]["meta"] >= 1
    # The home changes after the backup: a new value, a lost token, a new TLS file.
    _set_meta(home, "fixture", "after")
    (home / "token").unlink()
    (home / "tls").mkdir()
    (home / "tls" / "extra.pem").write_text("kept\n")
    summary = restore(home, archive)
    assert _meta(home, "fixture") == "before"
    assert (home / "token").read_text() == token
    assert (home / "tls" / "extra.pem").read_text() == "kept\n"  # not in the archive: untouched
    assert (home / "appliance.db").stat().st_mode & 0o777 == 0o600
    aside = Path(summary["aside"])
    assert aside.parent == home and aside.name.startswith("pre-restore-")
    assert _meta(aside, "fixture") == "after"  # the replaced store, whole
    assert not list(home.glob(".restore-*")) and not list(home.glob(".backup-*"))
    assert summary["migrations_due"] == 0
    Store(home / "appliance.db").close()  # today's code opens it


def test_a_backup_taken_while_writes_happen_is_one_consistent_snapshot(home, tmp_path) -> None:
    """A writer commits, in one transaction each, an event and the meta counter of
    events written; every backup taken meanwhile holds as many events as its
    counter says, passes integrity_check, and some commits land during a backup."""
    db_path = home / "appliance.db"
    conn = sqlite3.connect(db_path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    # ~16 MiB of rows, so that a backup takes long enough for commits to land meanwhile.
    conn.execute("CREATE TABLE padding (x BLOB)")
    conn.execute("BEGIN")
    conn.executemany("INSERT INTO padding VALUES (?)", [(os.urandom(4096),) for _ in range(4000)])
    conn.execute("COMMIT")
    conn.close()
    stop = threading.Event()
    written = [0]

    def writer() -> None:
        store = Store(db_path)
        while not stop.is_set():
            with store.transaction() as db:
                n = written[0] + 1
                db.execute("INSERT INTO events (time, kind, message) VALUES (?, 'w', ?)",
                           [time.time(), str(n)])
                db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('written', ?)", [str(n)])
            written[0] = n
        store.close()

    thread = threading.Thread(target=writer)
    thread.start()
    during = []
    try:
        while written[0] < 5:
            time.sleep(0.01)
        for i in range(4):
            before = written[0]
            backup(home, tmp_path / f"b{i}.tar")
            during.append(written[0] - before)
            with tarfile.open(tmp_path / f"b{i}.tar") as tar:
                (tmp_path / f"b{i}.db").write_bytes(tar.extractfile("appliance.db").read())
            check = sqlite3.connect(tmp_path / f"b{i}.db")
            assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            events = check.execute("SELECT count(*) FROM events WHERE kind = 'w'").fetchone()[0]
            counter = int(check.execute("SELECT value FROM meta WHERE key = 'written'").fetchone()[0])
            check.close()
            assert events == counter
            assert before <= counter <= written[0]
    finally:
        stop.set()
        thread.join(30)
    assert max(during) > 0, "no commit landed while a backup ran"


def _archive_of(home: Path, tmp_path: Path) -> Path:
    archive = tmp_path / "home.tar"
    backup(home, archive)
    _set_meta(home, "fixture", "after")
    return archive


def _assert_untouched(home: Path) -> None:
    assert _meta(home, "fixture") == "after"
    assert not list(home.glob("pre-restore-*")) and not list(home.glob(".restore-*"))


def test_restore_refuses_while_a_serve_holds_the_home_lock(home, tmp_path) -> None:
    archive = _archive_of(home, tmp_path)
    code = ("import fcntl, os, sys, time\n"
            "fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o644)\n"
            "fcntl.flock(fd, fcntl.LOCK_EX)\n"
            "os.pwrite(fd, f'{os.getpid()} 127.0.0.1:8080\\n'.encode(), 0)\n"
            "print('locked', flush=True)\n"
            "time.sleep(60)\n")
    (home / "run").mkdir(exist_ok=True)
    holder = subprocess.Popen([sys.executable, "-c", code, str(home / "run" / "serve.lock")],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(BackupError, match=f"is being served .pid {holder.pid}.: stop it first"):
            restore(home, archive)
        _assert_untouched(home)
    finally:
        holder.kill()
        holder.wait()
    restore(home, archive)  # the lock is gone with its process
    assert _meta(home, "fixture") == "before"


def test_restore_refuses_while_the_controller_socket_answers(home, tmp_path) -> None:
    archive = _archive_of(home, tmp_path)
    (home / "run").mkdir(exist_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as controller:
        controller.bind(str(home / "run" / "controller.sock"))
        with pytest.raises(BackupError, match="controller listens"):
            restore(home, archive)
    _assert_untouched(home)


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server API
        body = b'{"ok": true}'
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


def test_restore_refuses_while_the_api_answers_at_the_homes_address(home, tmp_path) -> None:
    archive = _archive_of(home, tmp_path)
    config = Config.load(home)
    host, _, port = config.listen.rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), _Health)
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        with pytest.raises(BackupError, match="answers at http://127.0.0.1"):
            restore(home, archive)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
    _assert_untouched(home)


def test_restore_refuses_a_store_newer_than_this_code(home, tmp_path) -> None:
    conn = sqlite3.connect(home / "appliance.db")
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    archive = _archive_of(home, tmp_path)
    with pytest.raises(BackupError, match=f"schema version {len(MIGRATIONS) + 1}, newer"):
        restore(home, archive)
    _assert_untouched(home)


def _rewrite(archive: Path, change) -> None:
    """Rewrite the archive's members through change(name, data) -> data, the
    manifest made to match (a damage the checksums cannot see)."""
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
    manifest = json.loads(members.pop("manifest.json"))
    work = archive.parent / "rewrite"
    work.mkdir()
    paths = []
    for name, data in members.items():
        path = work / name.replace("/", "_")
        path.write_bytes(change(name, data))
        manifest["files"][name] = {"size": path.stat().st_size,
                                   "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        paths.append((name, path))
    archive.unlink()
    _write_archive(archive, manifest, paths)


def test_restore_refuses_a_damaged_archive(home, tmp_path) -> None:
    archive = _archive_of(home, tmp_path)
    data = bytearray(archive.read_bytes())
    at = data.index(b"SQLite format 3") + 4096 + 100  # inside the store's second page
    data[at] ^= 0xFF
    damaged = tmp_path / "damaged.tar"
    damaged.write_bytes(bytes(data))
    with pytest.raises(BackupError, match="checksum"):
        restore(home, damaged)
    _assert_untouched(home)


def test_restore_refuses_a_store_failing_the_integrity_check(home, tmp_path) -> None:
    """A store whose pages read well but whose index disagrees with its table
    (one key changed in the file, the manifest made to match)."""
    conn = sqlite3.connect(home / "appliance.db")
    conn.execute("CREATE TABLE keyed (k TEXT)")
    conn.execute("CREATE INDEX keyed_k ON keyed (k)")
    conn.executemany("INSERT INTO keyed VALUES (?)", [(f"key-{i:06d}",) for i in range(200)])
    conn.commit()
    conn.close()
    archive = _archive_of(home, tmp_path)

    def corrupt(name: str, data: bytes) -> bytes:
        return data.replace(b"key-000050", b"key-000051", 1) if name == "appliance.db" else data

    _rewrite(archive, corrupt)
    with pytest.raises(BackupError, match="integrity check"):
        restore(home, archive)
    _assert_untouched(home)
    # backup refuses such a store too
    Path(home / "appliance.db").write_bytes(corrupt("appliance.db", (home / "appliance.db").read_bytes()))
    with pytest.raises(BackupError, match="integrity check"):
        backup(home, tmp_path / "again.tar")


@pytest.mark.parametrize("name", ["../escape", "/etc/cron.d/x", "tls/../../x", "images/demo.qcow2"])
def test_restore_refuses_members_outside_the_backup(home, tmp_path, name) -> None:
    archive = _archive_of(home, tmp_path)
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    manifest = json.loads(members[0][1])
    manifest["files"][name] = {"size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        data = json.dumps(manifest).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for member, content in members[1:]:
            tar.addfile(member, io.BytesIO(content))
        info = tarfile.TarInfo(name)
        info.size = 1
        tar.addfile(info, io.BytesIO(b"x"))
    with pytest.raises(BackupError, match="unexpected file"):
        restore(home, evil)
    _assert_untouched(home)


def test_restore_sets_the_old_wal_aside_with_the_old_store(home, tmp_path) -> None:
    """An old store left with a -wal (an unclean stop) is set aside whole; its -wal
    never meets the restored store."""
    archive = _archive_of(home, tmp_path)
    keeper = sqlite3.connect(home / "appliance.db", isolation_level=None)
    keeper.execute("PRAGMA journal_mode=WAL")
    keeper.execute("PRAGMA wal_autocheckpoint=0")
    keeper.execute("UPDATE meta SET value = 'in-wal' WHERE key = 'fixture'")
    with contextlib.suppress(sqlite3.Error):  # keep the -wal after our own close
        keeper.execute("PRAGMA locking_mode=EXCLUSIVE")
    assert (home / "appliance.db-wal").stat().st_size > 0
    summary = restore(home, archive)
    keeper.close()
    assert _meta(home, "fixture") == "before"
    assert _meta(Path(summary["aside"]), "fixture") == "in-wal"


def test_vmctl_admin_backup_and_restore(home, tmp_path, capsys) -> None:
    archive = tmp_path / "cli.tar"
    assert main(["--home", str(home), "admin", "backup", str(archive)]) == 0
    assert capsys.readouterr().out.startswith(f"{archive}: schema v{len(MIGRATIONS)}, 0 VMs")
    assert main(["--home", str(home), "admin", "backup", str(archive)]) == 1
    assert "exists (--force replaces it)" in capsys.readouterr().err
    assert main(["--home", str(home), "admin", "backup", str(archive), "--force"]) == 0
    _set_meta(home, "fixture", "after")
    capsys.readouterr()
    assert main(["--home", str(home), "--json", "admin", "restore", str(archive)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["schema_version"] == len(MIGRATIONS) and out["migrations_due"] == 0
    assert _meta(home, "fixture") == "before"
    assert main(["--home", str(home), "admin", "restore", str(tmp_path / "missing.tar")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file" in err


def _served_with(home: Path, settings: Path) -> None:
    """The home as `vmctl serve --config SETTINGS` leaves it: config.json names the file."""
    config = Config.load(home)
    config.config_file = str(settings)
    config.save()


def test_the_serve_s_settings_file_is_kept_and_restored_only_when_asked(home, tmp_path,
                                                                       capsys) -> None:
    """The .deb's /etc/vm-appliance/config.toml (here a file outside the home) is in
    the archive; a restore leaves the live one alone unless --config-file names where
    it goes, and then checks it as serve reads it and keeps the replaced one aside."""
    etc = tmp_path / "etc"
    etc.mkdir()
    settings = etc / "config.toml"
    settings.write_text('workers = 3\n')
    settings.chmod(0o640)
    _served_with(home, settings)
    archive = tmp_path / "home.tar"
    manifest = backup(home, archive)
    assert manifest["config_file"] == str(settings)
    with tarfile.open(archive) as tar:
        assert tar.extractfile("config.toml").read() == b"workers = 3\n"
    settings.write_text('workers = 5\n')
    # without the flag: said, not done
    assert main(["--home", str(home), "admin", "restore", str(archive)]) == 0
    out = capsys.readouterr().out
    assert settings.read_text() == 'workers = 5\n'
    assert f"was not restored: --config-file {settings} puts it back" in out
    assert not (home / "config.toml").exists()
    # with it: put back, the replaced one aside, the mode the admin gave it kept
    assert main(["--home", str(home), "admin", "restore", str(archive),
                 "--config-file", str(settings)]) == 0
    assert f"restored to {settings}" in capsys.readouterr().out
    assert settings.read_text() == 'workers = 3\n' and settings.stat().st_mode & 0o777 == 0o640
    asides = sorted(home.glob("pre-restore-*/config.toml"))
    assert [p.read_text() for p in asides] == ['workers = 5\n']
    assert not list(etc.glob(".config.toml.*"))


def test_a_settings_file_serve_would_refuse_is_not_restored(home, tmp_path) -> None:
    settings = tmp_path / "config.toml"
    settings.write_text('workers = 3\n')
    _served_with(home, settings)
    archive = tmp_path / "home.tar"
    backup(home, archive)
    _rewrite(archive, lambda name, data: b'wokers = 3\n' if name == "config.toml" else data)
    _set_meta(home, "fixture", "after")
    with pytest.raises(BackupError, match="wokers: no such key"):
        restore(home, archive, config_file=settings)
    _assert_untouched(home)
    assert settings.read_text() == 'workers = 3\n'
    archive.unlink()
    config = Config.load(home)
    config.config_file = None  # a serve without --config: no settings file in the archive
    config.save()
    backup(home, archive)
    with pytest.raises(BackupError, match="holds no settings file"):
        restore(home, archive, config_file=settings)
    _served_with(home, tmp_path / "gone.toml")  # the serve's file is gone: said, no archive
    with pytest.raises(BackupError, match="gone.toml: No such file"):
        backup(home, tmp_path / "other.tar")
    assert not (tmp_path / "other.tar").exists()


def test_serve_records_the_settings_file_it_runs_with(tmp_path, monkeypatch) -> None:
    import appliance.serve
    from exporter import shared_metrics

    seen = []
    monkeypatch.setattr(shared_metrics, "enter", lambda directory: directory)
    monkeypatch.setattr(appliance.serve, "serve", lambda config, demo_image: seen.append(config) or 0)
    settings = tmp_path / "config.toml"
    settings.write_text(f'home = "{tmp_path / "h"}"\n')
    assert main(["serve", "--config", str(settings)]) == 0
    assert seen[-1].config_file == str(settings)
    Config(home=tmp_path / "h", config_file="/stale").save()
    assert main(["--home", str(tmp_path / "h"), "serve"]) == 0
    assert seen[-1].config_file is None  # a later serve without --config: none

"""The appliance's own backup (issue 16): `vmctl admin backup FILE` and
`vmctl admin restore FILE`. Not the VMs' disks (those are `vmctl backup`): the
store, which says what every VM, host, project and user is, and the home's
configuration (config.json, the bootstrap token, the API's TLS files, the keys
of ssh hosts), and the settings file the serve was started with (`vmctl serve
--config FILE`, recorded in config.json: the .deb's /etc/vm-appliance/config.toml,
outside the home), as the member config.toml, its path in the manifest's
config_file. A restore puts that one back only when asked (--config-file PATH:
home_restore.py says why).

The archive is a tar file, mode 0600 (it holds the token and private keys),
whose first member is manifest.json: the format, the store's schema version,
its tables' row counts, and each file's size and SHA-256. The store is copied
with SQLite's online backup API in one step, so the copy is one consistent
snapshot even while the appliance writes (in WAL mode writers do not wait for it).

A restore refuses while the home is served (the serve lock, the controller's
and console broker's sockets, the API at the config's address), checks the
archive (names, sizes, checksums, a schema version this code can migrate from,
PRAGMA integrity_check) in a staging directory inside the home, then puts each
file in place with a rename (atomic), the old ones kept in HOME/pre-restore-TIME/.
While it works it holds the serve lock, so a serve started meanwhile waits out.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import socket
import sqlite3
import stat
import tarfile
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from appliance import home_lock
from appliance.config import Config
from appliance.durable import replacing
from appliance.notify import listening

FORMAT = "vm-appliance-home-backup"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
STORE = "appliance.db"
# The configuration kept beside the store: files of the home, and the small
# directories whose every regular file is kept (one level, no links).
CONFIG_FILES = ("config.json", "token")
CONFIG_DIRS = ("tls", "ssh")
SETTINGS = "config.toml"  # the member holding the serve's --config file
MAX_CONFIG_FILE = 1 << 20  # a config file, a certificate, a key
MAX_MANIFEST = 1 << 20
MAX_CONFIG_MEMBERS = 64


class BackupError(Exception):
    """Why a backup or a restore was refused; nothing was changed."""


# -- backup ---------------------------------------------------------------------
def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_facts(path: Path) -> dict[str, Any]:
    """The schema version, integrity_check's verdict and each table's row count."""
    conn = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        check = [row[0] for row in conn.execute("PRAGMA integrity_check(20)")]
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")]
        counts = {t: int(conn.execute(f"SELECT count(*) FROM [{t}]").fetchone()[0])  # noqa: S608 - names from sqlite_master
                  for t in sorted(tables)}
    except sqlite3.DatabaseError as err:
        raise BackupError(f"the store is not a readable SQLite database: {err}") from None
    finally:
        conn.close()
    return {"schema_version": version, "integrity": check, "counts": counts}


def copy_store(source: Path, dest: Path) -> None:
    """SQLite's online backup of `source` into a new file `dest`, in one step: one
    read transaction, so one consistent snapshot whatever commits meanwhile."""
    src = sqlite3.connect(f"{source.absolute().as_uri()}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(dest)
    try:
        src.execute("PRAGMA busy_timeout=30000")
        src.backup(dst, pages=-1)
    finally:
        dst.close()
        src.close()


def _config_files(home: Path) -> list[tuple[str, Path]]:
    found = [(name, home / name) for name in CONFIG_FILES]
    for directory in CONFIG_DIRS:
        if (home / directory).is_dir() and not (home / directory).is_symlink():
            found += [(f"{directory}/{p.name}", p) for p in sorted((home / directory).iterdir())]
    kept = [(name, path) for name, path in found
            if path.is_file() and not path.is_symlink() and path.stat().st_size <= MAX_CONFIG_FILE]
    return kept[:MAX_CONFIG_MEMBERS]


def _settings_file(config: Config) -> list[tuple[str, Path]]:
    """The serve's --config file as a member, when it ran with one (BackupError when
    that file is gone or is no small regular file: a backup without it would not
    bring the appliance back as it runs)."""
    if config.config_file is None:
        return []
    path = Path(config.config_file)
    try:
        info = path.stat()
    except OSError as err:
        raise BackupError(f"the serve's settings file {path}: {err.strerror}") from None
    if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_CONFIG_FILE:
        raise BackupError(f"the serve's settings file {path} is not a regular file "
                          f"of at most {MAX_CONFIG_FILE} bytes")
    return [(SETTINGS, path)]


def backup(home: Path, archive: Path, replace: bool = False) -> dict[str, Any]:
    """Write the home's store and configuration to `archive` (a tar file, 0600); the
    manifest it holds is returned."""
    config = Config.load(home)
    if not config.db_path.is_file():
        raise BackupError(f"no store at {config.db_path}")
    archive = archive.absolute()
    if archive.exists() and not replace:
        raise BackupError(f"{archive} exists (--force replaces it)")
    with tempfile.TemporaryDirectory(prefix=".backup-", dir=config.home) as work:
        staged = Path(work) / STORE
        copy_store(config.db_path, staged)
        facts = store_facts(staged)
        if facts["integrity"] != ["ok"]:
            raise BackupError("the store fails SQLite's integrity check: "
                              + "; ".join(facts["integrity"][:3]))
        settings = _settings_file(config)
        members = [(STORE, staged), *_config_files(config.home), *settings]
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "created": time.time(),
            "home": str(config.home), "schema_version": facts["schema_version"],
            "config_file": config.config_file if settings else None,
            "counts": facts["counts"],
            "files": {name: {"size": path.stat().st_size, "sha256": _sha256(path)}
                      for name, path in members},
        }
        _write_archive(archive, manifest, members)
    return manifest


def _write_archive(archive: Path, manifest: dict[str, Any],
                   members: list[tuple[str, Path]]) -> None:
    """The tar written to a private temporary file beside `archive`, renamed over it."""
    with replacing(archive, 0o600) as out, \
            tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        data = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
        info = tarfile.TarInfo(MANIFEST)
        info.size, info.mode, info.mtime = len(data), 0o600, int(manifest["created"])
        tar.addfile(info, io.BytesIO(data))
        for name, path in members:
            info = tarfile.TarInfo(name)
            stat = path.stat()
            info.size, info.mode, info.mtime = stat.st_size, 0o600, int(stat.st_mtime)
            with open(path, "rb") as f:
                tar.addfile(info, f)


# -- is the home served? ------------------------------------------------------------
@contextlib.contextmanager
def serve_lock(home: Path) -> Iterator[None]:
    """Hold the home's serve lock (HOME/run/serve.lock) for the restore: refused at
    once when a serve holds it."""
    try:
        lock = home_lock.acquire(home, home_lock.RESTORING)
    except home_lock.AlreadyServing as err:
        doing = "restored" if err.listen == home_lock.RESTORING else "served"
        raise BackupError(f"{home} is being {doing} (pid {err.pid or '?'}): "
                          "stop it first") from None
    try:
        yield
    finally:
        lock.release()


def _stream_answers(path: Path) -> bool:
    if not path.is_socket():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
    return True


def served_by(config: Config, api_timeout: float = 2.0) -> str | None:
    """What shows the home is served now (None: nothing): a serve from before the
    serve lock holds none, so its controller's and console broker's sockets, and
    the API at the config's address, are asked too."""
    if listening(config.notify_socket):
        return f"its controller listens on {config.notify_socket}"
    if _stream_answers(config.console_socket):
        return f"its console broker listens on {config.console_socket}"
    from appliance import tls
    from appliance.client import APIError, Client, home_fingerprint

    https = tls.tls_enabled(config)
    url = f"{'https' if https else 'http'}://{config.listen}"
    try:  # the home's own address (not VMCTL_URL's), no token: /healthz is public
        client = Client(url, None, timeout=api_timeout,
                        fingerprint=home_fingerprint(config) if https else None)
        client.get("/healthz")
    except (OSError, ValueError):
        return None
    except APIError as err:
        if err.status == 0:  # nothing answers there
            return None
    return f"an appliance answers at {url} (the home's listen address)"

"""`vmctl admin restore FILE`: put an archive of `vmctl admin backup` (see
appliance/home_backup.py) back into a home that is not being served.

Every member is checked before anything in the home changes: its name (the
store, config.json, token, tls/NAME, ssh/NAME; regular files only), its size
and SHA-256 against the manifest, and the store itself (a schema version no
newer than this code's migrations, PRAGMA integrity_check). The members are
written to a private staging directory inside the home (so that each rename is
on one file system), then each is renamed over the home's file: a reader sees
the old file or the new one, never a mix. The files replaced are kept, as they
were, in HOME/pre-restore-TIME/ (the store with its -wal, if it had one).
A store older than this code is restored as it is: the next start migrates it.

The serve's settings file (config.toml in the archive, from the path in the
manifest's config_file: /etc/vm-appliance/config.toml for the .deb) is restored
only with --config-file PATH, PATH named by the admin: it lives outside the home
(a conffile of the package, its mode the admin's), the archive's recorded path is
not trusted to say where root writes, and a restore onto another machine or a
newer package should not silently take that machine's settings (its listen
address, its paths). It is checked as serve would read it (appliance/configfile.py)
before anything changes, written by a rename, the file it replaces kept in the
pre-restore directory as config.toml.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
import tarfile
import tempfile
import time
from pathlib import Path
from typing import IO, Any

from appliance.config import Config
from appliance.durable import fsync_dir, replacing
from appliance.home_backup import (
    CONFIG_DIRS,
    CONFIG_FILES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    MAX_CONFIG_FILE,
    MAX_CONFIG_MEMBERS,
    MAX_MANIFEST,
    SETTINGS,
    STORE,
    BackupError,
    serve_lock,
    served_by,
    store_facts,
)
from appliance.store.schema import MIGRATIONS

FILE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,63}")


def _allowed(name: str) -> bool:
    if name in (STORE, SETTINGS) or name in CONFIG_FILES:
        return True
    directory, _, base = name.partition("/")
    return directory in CONFIG_DIRS and FILE_NAME.fullmatch(base) is not None


def _read_manifest(tar: tarfile.TarFile) -> dict[str, Any]:
    first = tar.next()
    if first is None or first.name != MANIFEST or not first.isreg() or first.size > MAX_MANIFEST:
        raise BackupError(f"not an appliance backup: its first member is not {MANIFEST}")
    extracted = tar.extractfile(first)
    assert extracted is not None  # noqa: S101 - a regular member always has a file
    try:
        manifest = json.loads(extracted.read())
    except ValueError:
        raise BackupError(f"not an appliance backup: {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError("not an appliance backup (its manifest names another format)")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise BackupError(f"a backup of format {manifest.get('format_version')!r}; "
                          f"this version reads {FORMAT_VERSION}")
    files = manifest.get("files")
    if not isinstance(files, dict) or STORE not in files or len(files) > MAX_CONFIG_MEMBERS + 1:
        raise BackupError("the manifest does not list the store")
    for name, facts in files.items():
        if not _allowed(name) or not isinstance(facts, dict) \
                or not isinstance(facts.get("size"), int) \
                or not isinstance(facts.get("sha256"), str):
            raise BackupError(f"the manifest lists an unexpected file {name[:80]!r}")
    return manifest


def _copy_member(source: IO[bytes], dest: Path, size: int) -> str:
    """Copy exactly `size` bytes into a new private file; their SHA-256."""
    digest = hashlib.sha256()
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out:
        left = size
        while left:
            block = source.read(min(left, 1 << 20))
            if not block:
                raise BackupError(f"{dest.name}: the archive is truncated")
            digest.update(block)
            out.write(block)
            left -= len(block)
        out.flush()
        os.fsync(out.fileno())
    return digest.hexdigest()


def stage(archive: Path, staging: Path) -> dict[str, Any]:
    """Unpack and check the archive into `staging`; its manifest."""
    try:
        tar = tarfile.open(archive, mode="r:")  # noqa: SIM115 - closed below
    except (OSError, tarfile.TarError) as err:
        raise BackupError(f"cannot read {archive}: {err}") from None
    with tar:
        manifest = _read_manifest(tar)
        files: dict[str, Any] = manifest["files"]
        free = shutil.disk_usage(staging).free
        if files[STORE]["size"] > free:
            raise BackupError(f"the store needs {files[STORE]['size']} bytes; "
                              f"{staging.parent} has {free} free")
        seen: set[str] = set()
        while (member := tar.next()) is not None:
            name = member.name
            if name not in files or name in seen or not member.isreg():
                raise BackupError(f"unexpected member {name[:80]!r} in the archive")
            limit = files[STORE]["size"] if name == STORE else MAX_CONFIG_FILE
            if member.size != files[name]["size"] or member.size > limit:
                raise BackupError(f"{name}: its size is not the manifest's")
            dest = staging / name
            dest.parent.mkdir(mode=0o700, exist_ok=True)
            source = tar.extractfile(member)
            assert source is not None  # noqa: S101 - a regular member always has a file
            if _copy_member(source, dest, member.size) != files[name]["sha256"]:
                raise BackupError(f"{name}: its checksum is not the manifest's (damaged archive)")
            seen.add(name)
    missing = sorted(set(files) - seen)
    if missing:
        raise BackupError(f"the archive lacks {', '.join(missing)}")
    facts = store_facts(staging / STORE)
    if facts["integrity"] != ["ok"]:
        raise BackupError("the store fails SQLite's integrity check: "
                          + "; ".join(facts["integrity"][:3]))
    if facts["schema_version"] > len(MIGRATIONS):
        raise BackupError(f"the store has schema version {facts['schema_version']}, newer than "
                          f"this appliance's {len(MIGRATIONS)}: restore it with a newer "
                          "vm-appliance")
    if facts["schema_version"] != manifest.get("schema_version"):
        raise BackupError("the store's schema version is not the manifest's")
    return manifest


def _checkpoint(db_path: Path) -> None:
    """Fold the old store's WAL into it, so that the file set aside is whole by
    itself (best effort: a damaged store is set aside with its -wal as it is)."""
    with contextlib.suppress(sqlite3.Error):
        conn = sqlite3.connect(db_path, timeout=5)
        try:
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            conn.close()


def _keep(path: Path, aside: Path) -> None:
    """A second name for `path` in `aside` (the path itself stays until replaced)."""
    dest = aside / path.name
    try:
        os.link(path, dest)
    except OSError:
        shutil.copy2(path, dest)


def _swap(home: Path, staging: Path, names: list[str], aside: Path) -> None:
    db_path = home / STORE
    if db_path.exists():
        _checkpoint(db_path)
    for name in [STORE, *(n for n in names if n != STORE)]:
        target = home / name
        target.parent.mkdir(mode=0o700, exist_ok=True)
        if target.is_file():
            (aside / name).parent.mkdir(mode=0o700, exist_ok=True)
            _keep(target, (aside / name).parent)
        if name == STORE:
            # The old -wal and -shm must not meet the new store: aside, with the old file.
            for suffix in ("-wal", "-shm"):
                extra = home / f"{STORE}{suffix}"
                if extra.exists():
                    os.replace(extra, aside / extra.name)
        os.replace(staging / name, target)
        fsync_dir(target.parent)


def _check_settings(staged: Path, home: Path) -> None:
    from appliance import configfile

    try:
        configfile.load(staged, home)
    except configfile.ConfigFileError as err:
        raise BackupError(f"the archive's settings file is not one serve takes: "
                          f"{str(err).removeprefix(str(staged) + ': ')}") from None


def _put_settings(staged: Path, dest: Path, aside: Path) -> None:
    """The archive's settings file over `dest` by a rename (the old one kept in
    `aside`; its mode kept, else 0644 as the package installs it)."""
    mode = 0o644
    if dest.is_file():
        mode = dest.stat().st_mode & 0o777
        shutil.copy2(dest, aside / SETTINGS)
    with replacing(dest, mode) as out, open(staged, "rb") as source:
        shutil.copyfileobj(source, out)
    fsync_dir(dest.parent)


def restore(home: Path, archive: Path, config_file: Path | None = None) -> dict[str, Any]:
    """Restore `archive` into `home` (refused while it is served); a summary.
    config_file: where to put the archive's settings file (None: it is not restored)."""
    config = Config.load(home)
    home = config.home
    if not archive.is_file():
        raise BackupError(f"{archive}: no such file")
    if config_file is not None:
        config_file = config_file.absolute()
        if not config_file.parent.is_dir():
            raise BackupError(f"--config-file {config_file}: no such directory "
                              f"{config_file.parent}")
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    with serve_lock(home):
        why = served_by(config)
        if why:
            raise BackupError(f"the appliance serves {home} ({why}): stop it first")
        staging = Path(tempfile.mkdtemp(prefix=".restore-", dir=home))
        try:
            manifest = stage(archive, staging)
            if config_file is not None:
                if SETTINGS not in manifest["files"]:
                    raise BackupError("--config-file: the archive holds no settings file "
                                      "(the serve it was taken from ran without --config)")
                _check_settings(staging / SETTINGS, home)
            aside = home / time.strftime("pre-restore-%Y%m%dT%H%M%SZ", time.gmtime())
            aside = Path(tempfile.mkdtemp(prefix=aside.name + "-", dir=home))
            _swap(home, staging, sorted(n for n in manifest["files"] if n != SETTINGS), aside)
            if config_file is not None:
                _put_settings(staging / SETTINGS, config_file, aside)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    os.chmod(home / STORE, 0o600)
    archived = manifest.get("config_file") if SETTINGS in manifest["files"] else None
    return {"home": str(home), "archive": str(archive), "aside": str(aside),
            "schema_version": manifest["schema_version"], "counts": manifest["counts"],
            "files": sorted(manifest["files"]),
            "config_file": {"archived_from": archived if isinstance(archived, str)
                            and archived.isprintable() and len(archived) <= 4096 else None,
                            "restored_to": str(config_file) if config_file else None}
            if SETTINGS in manifest["files"] else None,
            "migrations_due": len(MIGRATIONS) - manifest["schema_version"]}

"""Backup targets: directories of the appliance's machine (a local disk or an
NFS mount) that backups are written into, as TARGET/vm-appliance/VM_ID/...

Only admins add or remove one (the policy table). The appliance and QEMU run
as root and write there, so a target's path is checked hard: absolute and
canonical (what the admin typed is what is used: no symlink, `..` or `.`), an
existing directory, not `/`, not a system directory or inside one, not the
appliance's own home (nor a folder holding it), and not writable by every
user (anyone could plant a symlink where the appliance writes). What is read
back from a target is checked again when it is used (appliance/backup_chain.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from appliance.errors import Conflict, Invalid
from appliance.model.states import BackupStatus
from appliance.model.values import validate_name
from appliance.paths import inside
from appliance.service.base import ServiceBase
from appliance.store import Row

MAX_PATH = 1024
TARGET_FIELDS = frozenset({"name", "path"})
# Directories no target may be (the system's own, and the roots people keep data under).
NOT_TARGETS = frozenset({
    "/", "/bin", "/boot", "/dev", "/etc", "/home", "/lib", "/lib32", "/lib64", "/libx32",
    "/media", "/mnt", "/opt", "/proc", "/root", "/run", "/sbin", "/srv", "/sys",
    "/tmp", "/usr", "/var", "/var/lib", "/var/tmp",  # noqa: S108 - refused, not used
})
# Directories no target may be inside.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32",
                "/proc", "/run", "/sbin", "/sys", "/usr", "/var/lib/libvirt", "/var/lib/dpkg",
                "/var/lib/apt", "/var/log", "/var/cache", "/var/spool", "/var/mail")


def _space(path: str) -> tuple[int | None, int | None]:
    """(free bytes, total bytes) of the file system holding path; None when unreadable."""
    try:
        info = os.statvfs(path)
    except OSError:
        return None, None
    return info.f_bavail * info.f_frsize, info.f_blocks * info.f_frsize


def check_target_path(path: Any, home: Path, import_dir: Path | None,
                      mount_point: Path | None = None) -> str:
    """The path, if a target may be there; Invalid with field "path" and the reason."""
    if not isinstance(path, str) or not path:
        raise Invalid("required: an absolute directory path", "path")
    if len(path) > MAX_PATH or "\0" in path:
        raise Invalid(f"must be at most {MAX_PATH} characters, without NUL", "path")
    if not path.startswith("/"):
        raise Invalid("must be an absolute path", "path")
    real = os.path.realpath(path)
    if real != path:
        raise Invalid(
            "must be canonical: no symlink, '..', '.', '//' or trailing '/' "
            f"(it resolves to {real})", "path")
    try:
        status = os.lstat(path)
    except OSError:
        raise Invalid("no such directory", "path") from None
    if not stat.S_ISDIR(status.st_mode):
        raise Invalid("not a directory", "path")
    if path in NOT_TARGETS:
        raise Invalid(f"{path} is a system directory; use a folder of its own", "path")
    for tree in SYSTEM_TREES:
        if inside(path, tree):
            raise Invalid(f"inside the system directory {tree}", "path")
    # the mount may be outside home (an absolute `mount`): a target in it would have
    # the controller's mkdir and writes taken as the mount's commands (a snapshot...)
    for own in (home, import_dir, mount_point):
        if own is not None and (inside(path, own) or inside(own, path)):
            raise Invalid("overlaps the appliance's own directories", "path")
    if status.st_mode & stat.S_IWOTH:
        raise Invalid("writable by every user (anyone could replace what the appliance "
                      "writes there); chmod o-w it", "path")
    return path


class BackupTargets(ServiceBase):
    def _target_dict(self, row: Row) -> dict[str, Any]:
        free, total = _space(row["path"])
        return {
            "name": row["name"],
            "path": row["path"],
            "created": row["created"],
            "available": os.path.isdir(row["path"]),  # an NFS share that is not mounted: False
            "free_bytes": free,
            "total_bytes": total,
            "backups": self.store.backups_in_target(row["name"]),
        }

    def list_backup_targets(self) -> list[dict[str, Any]]:
        return [self._target_dict(row) for row in self.store.list_backup_targets()]

    def get_backup_target(self, name: str) -> dict[str, Any]:
        return self._target_dict(self.store.get_backup_target(name))

    def add_backup_target(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = set(body) - TARGET_FIELDS
        if unknown:
            raise Invalid("unknown field; known fields are name, path", sorted(unknown)[0])
        name = validate_name(body.get("name"), "name")
        path = check_target_path(body.get("path"), self.config.home, self.config.import_dir,
                                 self.config.mount_point)
        with self.store.transaction():
            if self.store.backup_target_exists(name):
                raise Conflict(f"a backup target named {name!r} exists", "name")
            for other in self.store.list_backup_targets():
                if inside(path, other["path"]) or inside(other["path"], path):
                    raise Conflict(f"overlaps backup target {other['name']} ({other['path']})",
                                   "path")
            self.store.insert_backup_target({"name": name, "path": path, "created": self.clock()})
            self.store.add_event("backup-target-added", f"backup target {name} added ({path})")
        return self.get_backup_target(name)

    def remove_backup_target(self, name: str, forget: bool = False) -> None:
        """Refused while backups in it are listed, unless `forget`: then their
        records go (the files stay in the directory)."""
        if not isinstance(forget, bool):
            raise Invalid("must be true or false", "forget")
        with self.store.transaction():
            self.store.get_backup_target(name)
            running = self.store.list_backups(target=name, statuses=[BackupStatus.RUNNING],
                                              limit=1)
            if running:
                raise Conflict(f"backup {running[0]['id']} is being written there", "name")
            count = self.store.backups_in_target(name)
            if count and not forget:
                raise Conflict(
                    f"{count} backup(s) are listed in target {name}; delete them first, or "
                    "remove the target with forget=true (their records go, their files stay)",
                    "name")
            self.store.delete_backups_in_target(name)
            self.store.delete_backup_target(name)
            self.store.add_event(
                "backup-target-removed",
                f"backup target {name} removed" + (f"; {count} backup record(s) forgotten "
                                                   "(the files stay)" if count else ""))

"""The mount's snapshots, backups and backup targets (issue 13), at the REST paths:

    vms/NAME/snapshots/            mkdir S = take a disk-only snapshot, rmdir S = delete it
    vms/NAME/snapshots/S/          info.json (ro), action (rw: `echo revert > action`)
    vms/NAME/backups/ID.json       ro  one backup of the VM (its chain: parent, depends_on)
    backup-targets/NAME.json       ro  a directory backups are written to (its free space)

fs/tree.py hands every path under these to this module (`claims`), under
projects/P/vms/ too (the tree strips the prefix and acts in P). The snapshot
directory's files are the table REST reads (appliance/snapshot_files.py); each
read, write, mkdir and rmdir is one service call, and every refusal is the
service's error, turned into its errno at the mount's boundary (ENOENT, EINVAL,
EBUSY...), but for a name taken, which is EEXIST as mkdir(2) says.
"""
from __future__ import annotations

import errno
from collections.abc import Callable

import pyfuse3

from appliance import errors
from appliance.file_kinds import Written, json_text
from appliance.service import Service
from appliance.snapshot_files import SNAPSHOT_FILES, key
from fs.nodes import Node, Path, file_node, json_name

SNAPSHOTS, BACKUPS = "snapshots", "backups"
VM_DIRS = (SNAPSHOTS, BACKUPS)  # what vms/NAME/ holds besides its table's files
TARGETS = "backup-targets"


class BackupTree:
    def __init__(self, service: Service, started: float, clock: Callable[[], float]):
        self.service = service
        self.started = started
        self.clock = clock

    # -- which paths are these ------------------------------------------------------------
    @staticmethod
    def claims(path: Path) -> bool:
        """vms/NAME/snapshots..., vms/NAME/backups..., backup-targets... (after projects/P/)."""
        return ((len(path) >= 3 and path[0] == "vms" and path[2] in VM_DIRS)
                or (bool(path) and path[0] == TARGETS))

    @staticmethod
    def is_dir(path: Path) -> bool:
        return (path == (TARGETS,) or (len(path) == 3 and path[0] == "vms" and path[2] in VM_DIRS)
                or (len(path) == 4 and path[0] == "vms" and path[2] == SNAPSHOTS))

    @staticmethod
    def is_snapshots_dir(path: Path) -> bool:
        """vms/NAME/snapshots: where mkdir and rmdir take and delete snapshots."""
        return len(path) == 3 and path[0] == "vms" and path[2] == SNAPSHOTS

    # -- what a path is, holds, reads ------------------------------------------------------
    def stat(self, path: Path) -> Node:
        if path[0] == TARGETS:
            if len(path) == 1:
                return Node(True, created=self.started, changed=self.started)
            if len(path) == 2:
                return self._json_node(self._target(path[1]))
            raise errors.NotFound(f"no {'/'.join(path)[:200]!r} here")
        vm = self.service.vm_row(path[1], with_xml=False)
        if len(path) == 3:
            return Node(True, created=vm["created"], changed=vm["updated"])
        if path[2] == BACKUPS and len(path) == 4:
            return self._json_node(self._backup(vm, path[3]))
        if path[2] == SNAPSHOTS and len(path) in (4, 5):
            snapshot = self.service.get_snapshot(path[1], path[3])
            created = snapshot["created"]
            if len(path) == 4:
                return Node(True, created=created, changed=created)
            file = SNAPSHOT_FILES.file(path[4])
            text = file.read(self.service, key(path[1], path[3]))
            return file_node(text.encode(), created, created, file.writable)
        raise errors.NotFound(f"no {'/'.join(path)[:200]!r} here")

    def entries(self, path: Path) -> list[tuple[str, Node]]:
        if path == (TARGETS,):
            return [(f"{t['name']}.json", self._json_node(t))
                    for t in self.service.list_backup_targets()]
        if not self.is_dir(path):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        name = path[1]
        if path[2] == BACKUPS:  # the VM's own, as GET /v1/vms/NAME/backups lists them
            return [(f"{b['id']}.json", self._json_node(b))
                    for b in self.service.list_backups(vm=name, vm_must_exist=True)]
        if len(path) == 3:
            return [(s["name"], Node(True, created=s["created"], changed=s["created"]))
                    for s in self.service.list_snapshots(name)]
        return [(file, self.stat((*path, file))) for file in SNAPSHOT_FILES]

    def content(self, path: Path) -> bytes:
        if path[0] == TARGETS and len(path) == 2:
            return json_text(self._target(path[1])).encode()
        if len(path) == 4 and path[2] == BACKUPS:
            vm = self.service.vm_row(path[1], with_xml=False)
            return json_text(self._backup(vm, path[3])).encode()
        if len(path) == 5 and path[2] == SNAPSHOTS:
            return SNAPSHOT_FILES.read(self.service, key(path[1], path[3]), path[4]).encode()
        raise errors.NotFound(f"no file {'/'.join(path)[:200]!r} here")

    def _json_node(self, item: dict) -> Node:
        created = item.get("created") or self.started
        changed = item.get("finished") or created
        return file_node(json_text(item).encode(), created, changed)

    def _target(self, file: str) -> dict:
        return self.service.get_backup_target(json_name(file, "backup target"))

    def _backup(self, vm: dict, file: str) -> dict:
        """The backup ID.json names, if it is this VM's (another VM's: not here)."""
        backup = self.service.get_backup(json_name(file, "backup"))
        if backup.get("vm_id") != vm["id"]:
            raise errors.NotFound(f"no backup {file[:64]!r} of {vm['name']}")
        return backup

    # -- changes ---------------------------------------------------------------------------
    def write(self, path: Path, text: str) -> Written:
        """vms/NAME/snapshots/S/action alone is writable (the table says how)."""
        if len(path) != 5 or path[2] != SNAPSHOTS:
            raise errors.Forbidden(f"{'/'.join(path)[:200]} is read-only")
        return SNAPSHOT_FILES.write(self.service, key(path[1], path[3]), path[4], text)

    def take_snapshot(self, path: Path) -> dict:
        """mkdir vms/NAME/snapshots/S: a disk-only snapshot (its operation, to wait for);
        EEXIST for a name the VM's snapshots have."""
        vm, name = path[1], path[3]
        try:
            self.service.get_snapshot(vm, name)
        except errors.NotFound:
            return self.service.create_snapshot(vm, {"name": name, "memory": False})
        raise pyfuse3.FUSEError(errno.EEXIST)

    def delete_snapshot(self, path: Path) -> dict:
        return self.service.delete_snapshot(path[1], path[3])

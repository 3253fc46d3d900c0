"""The resource tree as the mount shows it: what a path is (stat), what a
directory holds (list), what a file reads (content), and where a write goes.

The tree is DESIGN.md's, at the same names as the REST paths:

    vms/NAME/{the files of appliance.files.VM_FILES}
    hosts/NAME/{the files of appliance.files.HOST_FILES}
    images/NAME.json   templates/NAME.json   groups/NAME.json   events
    networks/NAME.json   (fs/group_files.py)
    projects/P/vms/NAME/...   projects/P/quota   (fs/projects.py)
    vms/NAME/snapshots/, vms/NAME/backups/, backup-targets/   (fs/backup_tree.py)
    pools/NAME/{the files of appliance.pool_files.POOL_FILES}   (fs/pool_tree.py)
    vms/NAME/disks/, vms/NAME/cdroms/   (fs/disk_tree.py)

vms/, groups/, networks/ and events are the caller's project's (the service scopes
them); projects/P/vms/ is vms/ with the caller acting in P: the methods
that take a path see it as vms/... (`projects.in_project`).

The files of a VM or a host directory are looked up in appliance.files, the
table REST reads too: their content, whether they are writable, how a write is
applied. Nothing here names one of them.

Creating a host or a server group takes more than one shell command, so the
tree keeps the unfinished part in memory, in this process only:
`mkdir hosts/NAME` stages a directory holding one writable file, `uri`; the
write to it calls service.add_host and the directory becomes the host's. A
staged directory nothing was written to is gone at unmount (`rmdir` drops it
sooner). Likewise a file made in groups/ or templates/ (the shell's O_CREAT)
is an empty writable file until its JSON is written (service.create_group;
templates/: fs/template_files.py), and gone when closed without one.

Times: FUSE has no birth time; `created` shows as st_atime, `changed` as
st_mtime and st_ctime.
"""
from __future__ import annotations

import errno
import time
from collections.abc import Callable

import pyfuse3

from appliance import errors
from appliance.files import HOST_FILES, VM_FILES, Directory, File, Log, events_text, json_text
from appliance.service import Service
from fs import projects
from fs.backup_tree import TARGETS, VM_DIRS, BackupTree
from fs.disk_tree import VM_DIRS as DISK_DIRS
from fs.disk_tree import DiskTree
from fs.group_files import NETWORKS, GroupFiles
from fs.nodes import Node, Path, json_name
from fs.nodes import file_node as _file
from fs.pool_tree import POOLS, PoolTree
from fs.screenshots import Screenshots
from fs.staged_hosts import STAGED_HOST_FILE, StagedHosts
from fs.template_files import TemplateFiles

TOP_DIRS = ("vms", "images", "templates", "hosts", "groups", projects.PROJECTS, TARGETS, POOLS,
            "networks")
# The directories of one VM or host, each holding the files of its table.
TABLES: dict[str, Directory] = {"vms": VM_FILES, "hosts": HOST_FILES}

_in_project = projects.in_project


class Tree:
    def __init__(self, service: Service, clock: Callable[[], float], started: float):
        self.service = service
        self.clock = clock
        self.started = started
        # Made here and not yet in the store (see the module docstring).
        self.staged_hosts = StagedHosts(service, clock, started)  # hosts/NAME: fs/staged_hosts.py
        self.new_files: dict[Path, float] = {}
        self.screenshots = Screenshots()
        # vms/NAME/snapshots/..., vms/NAME/backups/..., backup-targets/...: fs/backup_tree.py
        self.backups = BackupTree(service, started, clock)
        self.templates = TemplateFiles(service, self.new_files)  # templates/NAME.json
        self.groups = GroupFiles(service, self.new_files)  # groups/NAME.json
        self.networks = GroupFiles(service, self.new_files, NETWORKS, "networks")  # issue 15
        self.named = {"groups": self.groups, "networks": self.networks}  # NAME.json, rm
        self.pools = PoolTree(service, started)  # pools/...: fs/pool_tree.py
        self.disks = DiskTree(service, clock)  # vms/NAME/disks/..., cdroms/...: fs/disk_tree.py

    # -- what a path is -------------------------------------------------------------------
    def _subtree(self, path: Path) -> PoolTree | DiskTree | BackupTree | None:
        """The part of the tree with a module of its own that serves `path`, if any."""
        for subtree in (self.pools, self.disks, self.backups):
            if subtree.claims(path):
                return subtree
        return None

    @_in_project
    def stat(self, path: Path) -> Node:
        if not path:
            return self._static_dir()
        subtree = self._subtree(path)
        if subtree is not None:
            return subtree.stat(path)
        top, depth = path[0], len(path)
        if path == ("events",):
            return _file(self.content(path), self.started, self.clock())
        if top not in TOP_DIRS:
            raise errors.NotFound(f"no {top!r} here")
        if depth == 1:
            return self._static_dir()
        if top == projects.PROJECTS:
            return self._stat_in_projects(path)
        if top in TABLES:
            return self._stat_in_object(path)
        if depth == 2 and top in self.named:
            return self.named[top].stat(path)
        if depth == 2 and top == "templates":
            return self.templates.stat(path)
        if depth == 2:
            return _file(self.content(path), self.started, self.started)
        raise errors.NotFound(f"no {'/'.join(path)!r} here")

    @staticmethod
    def is_dir(path: Path) -> bool:
        path = projects.split(path)[1]
        return (len(path) == 0 or (len(path) == 1 and path[0] in TOP_DIRS)
                or (len(path) == 2 and path[0] in TABLES) or projects.is_dir(path)
                or BackupTree.is_dir(path) or PoolTree.is_dir(path) or DiskTree.is_dir(path))

    def _static_dir(self) -> Node:
        return Node(True, created=self.started, changed=self.started)

    def _stat_in_projects(self, path: Path) -> Node:
        """projects/P and projects/P/quota (projects/P/vms/... is vms/'s: _in_project)."""
        if len(path) == 2:
            projects.check_visible(self.service, path[1])
            return self._static_dir()
        return _file(self.content(path), self.started, self.clock())

    def _stat_in_object(self, path: Path) -> Node:
        """vms/NAME, hosts/NAME and the files of their tables."""
        top, name, depth = path[0], path[1], len(path)
        kept = VM_FILES.by_name.get(path[2]) if depth == 3 and top == "vms" else None
        if kept is not None and kept.of_row:  # no _times: the node kept carries them
            return self._of_row(kept, name)[0]
        times = self._times(top, name)
        if times is None:  # staged by mkdir: only its uri, to write
            return self.staged_hosts.stat(name, path)
        if depth == 2:
            return Node(True, created=times[0], changed=times[1])
        elif depth == 3:
            return self._table_file(TABLES[top].file(path[2]), name, *times)
        raise errors.NotFound(f"no {'/'.join(path)!r} here")

    def _of_row(self, file: File, name: str) -> tuple[Node, bytes]:
        """A VM file made of the VM's row alone (File.of_row): its node and its bytes, made
        once while nothing is committed (store.vm_derived: a `cat` polling `state` then
        reads and renders the row once, not at its getattr and again at its open). The
        node is shared by the stats that get it: nothing changes a tree's node."""
        def made(row: dict) -> tuple[Node, bytes]:
            data = file.read(self.service, name).encode()
            return _file(data, row["created"], row["updated"], file.writable), data

        return self.service.kept_of_vm(name, f"file:{file.name}", made)

    def _times(self, top: str, name: str) -> tuple[float, float] | None:
        """When the VM or host was made and last changed; None for a host directory staged
        by mkdir; NotFound for neither."""
        if top == "vms":  # the row, not the VM's whole view: this is every stat's
            vm = self.service.vm_row_read(name)
            return vm["created"], vm["updated"]
        host = self.staged_hosts.host(name)
        if host is None:
            return None
        return self.started, host["last_seen"] or self.started

    def _table_file(self, file: File, name: str, created: float, changed: float,
                    listing: bool = False) -> Node:
        if file.snapshot is not None:  # taken for a stat of the file, not for a listing
            size = self.screenshots.size_of(self.service, file, name, listing)
            return Node(False, size=size, created=created, changed=self.clock(), volatile=True)
        if file.log is not None:  # its size and time are the log's (none yet: empty)
            found = file.log.stat(self.service, name)
            size, changed = found if found is not None else (0, created)
            return Node(False, writable=file.writable, size=size, created=created, changed=changed)
        return _file(file.read(self.service, name).encode(), created, changed, file.writable)

    def _named(self, top: str) -> GroupFiles | TemplateFiles:
        return self.templates if top == "templates" else self.named[top]

    def named_file_exists(self, path: Path) -> bool:  # groups/, networks/, templates/NAME.json
        return self._named(path[0]).exists(path[1])

    def remove_named_file(self, path: Path) -> None:  # rm of one: delete the group, the template
        self._named(path[0]).remove(path)

    # -- what a directory holds -----------------------------------------------------------------
    @_in_project
    def entries(self, path: Path) -> list[tuple[str, Node]]:
        if not path:
            return ([(name, self._static_dir()) for name in TOP_DIRS]
                    + [("events", self.stat(("events",)))])
        subtree = self._subtree(path)
        if subtree is not None:
            return subtree.entries(path)
        if not self.stat(path).is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        top = path[0]
        if top == projects.PROJECTS:
            names = projects.entries(self.service, path)
            return [(name, self.stat(path + (name,))) for name in names]
        if len(path) == 2:
            return self._list_object(top, path[1])
        if top == "vms":
            return [(vm["name"], Node(True, created=vm["created"], changed=vm["updated"]))
                    for vm in self.service.list_vms()]
        if top == "hosts":
            return self.staged_hosts.entries()
        if top in self.named:
            return self.named[top].entries()
        if top == "images":
            return [(f"{image['name']}.json",
                     _file(json_text(image).encode(), image["created"], image["created"]))
                    for image in self.service.list_images()]
        return self.templates.entries()

    def _list_object(self, top: str, name: str) -> list[tuple[str, Node]]:
        times = self._times(top, name)
        if times is None:
            return [(STAGED_HOST_FILE, self.stat((top, name, STAGED_HOST_FILE)))]
        files = [(file.name, self._table_file(file, name, *times, listing=True))
                 for file in TABLES[top].entries]
        return files + ([(d, Node(True, created=times[0], changed=times[1]))
                         for d in VM_DIRS + DISK_DIRS]
                        if top == "vms" else [])

    # -- what a file reads ------------------------------------------------------------------
    @_in_project
    def content(self, path: Path) -> bytes:
        top, name = path[0], path[1] if len(path) > 1 else ""
        subtree = self._subtree(path)
        if subtree is not None:
            return subtree.content(path)
        if path == ("events",):
            text = events_text(self.service.list_events())
        elif top == projects.PROJECTS:
            text = projects.content(self.service, path)
        elif top in TABLES and len(path) == 3:
            staged = top == "hosts" and self.staged_hosts.host(name) is None
            file = None if staged else TABLES[top].file(path[2])
            if file is not None and file.snapshot is not None:
                return self.screenshots.content(self.service, file, name)
            if file is not None and file.of_row and top == "vms":
                return self._of_row(file, name)[1]
            text = "" if file is None else file.read(self.service, name)
        elif top == "images" and len(path) == 2:
            text = json_text(self.service.get_image(json_name(name, "image")))
        elif top == "templates" and len(path) == 2:
            text = self.templates.content(path)
        elif top in self.named and len(path) == 2:
            text = self.named[top].content(path)
        else:
            raise errors.NotFound(f"no {'/'.join(path)!r} here")
        return text.encode()

    @staticmethod
    def table_file(path: Path) -> File | None:
        """The table's entry for a file of a VM or host directory (under projects/P/ too)."""
        path = projects.split(path)[1]
        if path and path[0] in TABLES and len(path) == 3 and path[2] in TABLES[path[0]]:
            return TABLES[path[0]].file(path[2])
        return None

    @classmethod
    def log(cls, path: Path) -> Log | None:
        """The log a file is read from at an offset (the console), if it is one."""
        file = cls.table_file(path)
        return None if file is None else file.log

    @_in_project
    def read_log(self, path: Path, offset: int, size: int) -> bytes:
        """Bytes of a log file (the console) at an offset."""
        log = self.log(path)
        if log is None:
            raise errors.NotFound(f"{'/'.join(path)!r} is not a log")
        return log.read_at(self.service, path[1], offset, size)

    @_in_project
    def open(self, path: Path, writes: bool, reads: bool) -> bytes | None:
        """Check an open against the tree; return the content a reader will get
        (None: a log, read at each read's offset, or nothing to read)."""
        if self.is_dir(path):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if writes and not self.stat(path).writable:
            raise pyfuse3.FUSEError(errno.EACCES)
        if self.log(path) is not None:
            if not writes:
                self.stat(path)  # it exists
            return None
        return self.content(path) if reads else None

    # -- where a write goes (worker threads; each waits for its operation) -------------------------
    @_in_project
    def write(self, path: Path, text: str) -> None:
        top = path[0]
        if self.pools.claims(path):  # recorded; the pool controller converges
            self.pools.write(path, text)
        elif self.backups.claims(path) or self.disks.claims(path):  # a revert, a disk, a CD-ROM
            subtree = self.disks if self.disks.claims(path) else self.backups
            self._wait(subtree.write(path, text).operations)
        elif top in TABLES and len(path) == 3:
            if top == "hosts" and self.staged_hosts.host(path[1]) is None:
                self.staged_hosts.add(path[1], text)
                return
            written = TABLES[top].writer(path[2])(self.service, path[1], text, None)
            # A VM's state or host (a migration), a host's maintenance (the drain's moves).
            self._wait(written.operations)
        elif top in self.named and len(path) == 2:
            self.named[top].create(path[1], text)
        elif top == "templates" and len(path) == 2:
            self.templates.write(path, text)
        else:
            raise errors.Forbidden(f"{'/'.join(path)} is read-only")

    def _wait(self, operations: tuple[dict, ...]) -> None:
        """Until every operation ended (Failed, Conflict for a cancelled one), within one
        wait_timeout in all."""
        deadline = time.monotonic() + self.service.config.wait_timeout
        for op in operations:
            self.service.finish(op, timeout=max(0.0, deadline - time.monotonic()))

    @_in_project
    def type_into(self, path: Path, data: bytes) -> None:
        """Bytes written to the console: typed as they are; nothing to wait for."""
        file = self.table_file(path)
        if file is None or file.write_bytes is None:
            raise errors.Forbidden(f"{'/'.join(path)} does not take bytes")
        file.write_bytes(self.service, path[1], data)

    @staticmethod
    def in_table(path: Path) -> bool:
        """Whether the path names a file of a VM or host directory (its table's or not),
        under projects/P/ too."""
        path = projects.split(path)[1]
        return len(path) == 3 and path[0] in TABLES

    @_in_project
    def remove_file(self, path: Path) -> None:
        """`rm` of a file of a table: what the table says removing it does (the lock:
        unlock); Forbidden (EACCES) for the others."""
        TABLES[path[0]].clearer(path[2])(self.service, path[1])

    # vms/NAME (or projects/P/vms/NAME): mkdir, rmdir, mv within one vms/ directory.
    @staticmethod
    def is_vms_dir(path: Path) -> bool:
        return projects.split(path)[1] == ("vms",)

    @_in_project
    def create_vm(self, path: Path) -> None:
        self.service.finish(self.service.create_vm({"name": path[1], "state": "stopped"})[1])

    @_in_project
    def delete_vm(self, path: Path) -> None:
        self.service.finish(self.service.delete_vm(path[1]))

    @_in_project
    def rename_vm(self, path: Path, new_name: str) -> None:
        self.service.finish(self.service.rename_vm(path[1], new_name)[1])

    # pools/NAME: mkdir makes a pool of 0 replicas, rmdir deletes it and its members.
    is_pools_dir = staticmethod(PoolTree.is_pools_dir)

    def create_pool(self, path: Path) -> None:
        self.pools.create(path)

    def delete_pool(self, path: Path) -> None:
        self.pools.delete(path, self._wait)

    # vms/NAME/snapshots/S (or under projects/P/): mkdir takes a snapshot, rmdir deletes it.
    @staticmethod
    def is_snapshots_dir(path: Path) -> bool:
        return BackupTree.is_snapshots_dir(projects.split(path)[1])

    @_in_project
    def take_snapshot(self, path: Path) -> None:
        self._wait((self.backups.take_snapshot(path),))

    @_in_project
    def delete_snapshot(self, path: Path) -> None:
        self._wait((self.backups.delete_snapshot(path),))

"""The FUSE operations: a path and a verb in, one service call out.

The tree is DESIGN.md's resource tree, at the same names as the REST paths:

    vms/NAME/{state,spec.json,cpus,memory,host,addresses,console,events,status.json,domain.xml}
    hosts/NAME/{state,uri,capacity,allocated,vms,status.json}
    images/NAME.json   templates/NAME.json   groups/NAME.json   events

No rules live here. Which VM and host files are writable is the service's
VM_FILES and HOST_FILES tables; values are checked by the service; every
refusal is one of the service's exceptions, turned into the errno its class
carries (errno_of), in `boundary`, the one place where exceptions leave this module.

Creating a host or a server group takes more than one shell command, so the
mount keeps the unfinished part in memory, in this process only:
`mkdir hosts/NAME` stages a directory holding one writable file, `uri`; the
write to it calls service.add_host and the directory becomes the host's. A
staged directory nothing was written to is gone at unmount (`rmdir` drops it
sooner). Likewise a file made in groups/ (the shell's O_CREAT) is an empty
writable file until its JSON is written (service.create_group), and gone
when closed without one.

Writes, and listings of whole collections, run in a worker thread: they block
(a write waits for its operation: a VM's state, a VM's host (a live
migration), a host's maintenance (the drain's migrations)), and the trio loop keeps serving other
requests meanwhile. Reads of one row (lookup, getattr, open, read) run on the
loop: in WAL mode a reader never waits for a writer, the read takes ~30 µs and
a hop to a thread ~200 µs (measured), so a `cat` stays within 2x of a bare
pyfuse3 file system.

Writes: a shell writes a whole value in one write(), and reports errors from
write() but not from close(). So a write applies the value as soon as the
buffer holds a complete one (a newline-terminated value, a complete JSON
document for spec.json and groups/NAME.json, or a value the service accepts
as it is) and fails right there with the service's errno. Anything short of
that is kept per open file and applied at flush (close), where only careful
writers (cp, tee, Python) see the error. A value longer than its file's cap
(fs/limits.py) is EFBIG and dropped whole, never padded out to its offset.

Reads: every file is opened with direct_io, so `cat` sees the current value
whatever size the kernel remembered. The content is fetched at open, and again
when a later read starts at offset 0 or reaches the end of what was fetched, so
`tail -f events` and `tail -f console` (read from the serial log at the asked
offset) follow growth.

Times: FUSE has no birth time; st_atime shows when the thing was created,
st_mtime and st_ctime its last change.
"""
from __future__ import annotations

import errno
import functools
import itertools
import json
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pyfuse3
import trio

from appliance import errors, jsonio
from appliance.service import HOST_FILES, VM_FILES, Service
from fs import limits
from fs.inodes import Inodes

log = logging.getLogger("vmctl.fs")

# Attribute and entry caches: the mount agrees with REST within this.
CACHE_SECONDS = 1.0
# Within one open file, content younger than this is served again instead of
# fetched anew (a `cat` reads twice: the value, then the end of file).
FRESH_SECONDS = 0.1
TOP_DIRS = ("vms", "images", "templates", "hosts", "groups")
RENAME_EXCHANGE = 2

Path = tuple[str, ...]


def errno_of(err: BaseException) -> int:
    """The service's errors carry their errno (appliance/errors.py); anything else is EIO."""
    return err.errno if isinstance(err, errors.ApplianceError) else errno.EIO


def boundary(method: Callable) -> Callable:
    """Where exceptions leave the file system: as an errno, never as a crash of pyfuse3.main."""

    @functools.wraps(method)
    async def wrapper(self: ApplianceFS, *args: Any) -> Any:
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError:
            raise
        except errors.ApplianceError as err:
            code = errno_of(err)
            log.info("%s: %s: %s", method.__name__, errno.errorcode[code], limits.excerpt(err.reason))
            raise pyfuse3.FUSEError(code) from None
        except Exception:
            log.exception("%s(%s) failed", method.__name__, ", ".join(limits.excerpt(a, 60) for a in args))
            raise pyfuse3.FUSEError(errno.EIO) from None

    return wrapper


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


@dataclass
class Node:
    """What getattr reports about one path."""

    is_dir: bool
    writable: bool = False
    size: int = 0
    created: float = 0.0
    changed: float = 0.0


@dataclass
class Handle:
    """An open file: what was last read, and written bytes not yet applied."""

    path: Path
    writable: bool
    content: bytes | None = None
    fetched: float = 0.0  # when content was read from the service
    buffer: bytearray = field(default_factory=bytearray)
    base: int = 0  # the file offset of buffer[0]
    made: bool = False  # opened by create(): a new file that exists while open


class ApplianceFS(pyfuse3.Operations):
    def __init__(self, service: Service, clock: Callable[[], float] = time.time, group: int | None = None):
        """group: the gid that may use the mount besides its owner (with allow_other);
        None: the owner alone, as FUSE has it by default."""
        super().__init__()
        self.service = service
        self.clock = clock
        self.started = clock()
        self.uid = os.getuid()
        self.gid = os.getgid() if group is None else group
        # Without a group, modes as a local file system's; with one, nothing for others,
        # and hosts/ and groups/ are the owner's to change (limits.OWNER_ONLY_TOPS).
        self.modes = (0o755, 0o644, 0o444) if group is None else (0o770, 0o660, 0o440)
        self.owner_modes = (0o755, 0o644, 0o444) if group is None else (0o750, 0o640, 0o440)
        self.inodes = Inodes()
        self.files: dict[int, Handle] = {}
        self.dirs: dict[int, tuple[Path, list[tuple[str, Node]]]] = {}
        self._handles = itertools.count(1)
        # Made here and not yet in the store (see the module docstring): name -> when.
        self.staged_hosts: dict[str, float] = {}
        self.new_files: dict[Path, float] = {}

    # -- calling the service ----------------------------------------------------------
    @staticmethod
    async def _run(fn: Callable, *args: Any) -> Any:
        """A call that may block: in a worker thread."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)

    @staticmethod
    def _read(fn: Callable, *args: Any) -> Any:
        """A read of one row or one small file: on the loop (see the module docstring)."""
        return fn(*args)

    # -- the tree (these run in worker threads) -------------------------------------------
    def _stat(self, path: Path) -> Node:
        if not path:
            return self._static_dir()
        top, depth = path[0], len(path)
        if top == "events" and depth == 1:
            return self._file(self._content(path), self.started, self.clock())
        if top not in TOP_DIRS:
            raise errors.NotFound(f"no {top!r} here")
        if depth == 1:
            return self._static_dir()
        if top == "vms":
            vm = self.service.get_vm(path[1])
            if depth == 2:
                return Node(True, created=vm["created"], changed=vm["updated"])
            if depth == 3 and path[2] in VM_FILES:
                return self._vm_file(vm, path[2])
        elif top == "hosts":
            host = self._host(path[1])
            if host is None:  # staged by mkdir: only its uri, to write
                made = self.staged_hosts[path[1]]
                if depth == 2:
                    return Node(True, created=made, changed=made)
                if depth == 3 and path[2] == "uri":
                    return Node(False, writable=True, created=made, changed=made)
            else:
                changed = host["last_seen"] or self.started
                if depth == 2:
                    return Node(True, created=self.started, changed=changed)
                if depth == 3 and path[2] in HOST_FILES:
                    content = self.service.read_host_file(path[1], path[2]).encode()
                    return self._file(content, self.started, changed, writable=HOST_FILES[path[2]])
        elif top == "groups" and depth == 2:
            made = self.new_files.get(path)
            if made is not None and not self._group_exists(path[1]):
                return Node(False, writable=True, created=made, changed=made)
            group = self._group(path[1])
            return self._file(_json(group).encode(), group["created"], group["created"])
        elif depth == 2:
            return self._file(self._content(path), self.started, self.started)
        raise errors.NotFound(f"no {'/'.join(path)!r} here")

    def _static_dir(self) -> Node:
        return Node(True, created=self.started, changed=self.started)

    @staticmethod
    def _file(content: bytes, created: float, changed: float, writable: bool = False) -> Node:
        return Node(False, writable=writable, size=len(content), created=created, changed=changed)

    def _vm_file(self, vm: dict, file: str) -> Node:
        if file == "console":
            try:
                info = os.stat(self.service.console_path(vm["name"]))
            except FileNotFoundError:
                return Node(False, created=vm["created"], changed=vm["created"])
            return Node(False, size=info.st_size, created=vm["created"], changed=info.st_mtime)
        content = self.service.read_vm_file(vm["name"], file).encode()
        return self._file(content, vm["created"], vm["updated"], writable=VM_FILES[file])

    def _host(self, name: str) -> dict | None:
        """The host's view; None for a directory staged by mkdir (NotFound for neither)."""
        try:
            return self.service.get_host(name)
        except errors.NotFound:
            if name in self.staged_hosts:
                return None
            raise

    def _group(self, file: str) -> dict:
        if not file.endswith(".json"):
            raise errors.NotFound(f"no group file {file!r}; groups show as NAME.json")
        return self.service.get_group(file[: -len(".json")])

    def _group_exists(self, file: str) -> bool:
        try:
            self._group(file)
        except errors.NotFound:
            return False
        return True

    def _content(self, path: Path) -> bytes:
        top, name = path[0], path[1] if len(path) > 1 else ""
        if top == "events":
            text = self.service.format_events(self.service.list_events())
        elif top == "vms":
            text = self.service.read_vm_file(name, path[2])
        elif top == "images":
            if not name.endswith(".json"):
                raise errors.NotFound(f"no image file {name!r}; images show as NAME.json")
            text = _json(self.service.get_image(name[: -len(".json")]))
        elif top == "templates":
            templates = self.service.list_templates()
            if not name.endswith(".json") or name[: -len(".json")] not in templates:
                raise errors.NotFound(f"no template file {name!r}")
            text = _json(templates[name[: -len(".json")]])
        elif top == "hosts":
            if self._host(name) is None:
                text = ""  # the staged uri, not written yet
            else:
                text = self.service.read_host_file(name, path[2])
        elif top == "groups":
            if path in self.new_files and not self._group_exists(name):
                text = ""
            else:
                text = _json(self._group(name))
        else:
            raise errors.NotFound(f"no {'/'.join(path)!r} here")
        return text.encode()

    def _list(self, path: Path) -> list[tuple[str, Node]]:
        if not path:
            return [(name, self._static_dir()) for name in TOP_DIRS] + [("events", self._stat(("events",)))]
        node = self._stat(path)
        if not node.is_dir:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        top = path[0]
        if top == "vms" and len(path) == 1:
            return [(vm["name"], Node(True, created=vm["created"], changed=vm["updated"]))
                    for vm in self.service.list_vms()]
        if top == "vms":
            vm = self.service.get_vm(path[1])
            return [(file, self._vm_file(vm, file)) for file in VM_FILES]
        if top == "images":
            return [(f"{image['name']}.json", self._file(_json(image).encode(), image["created"], image["created"]))
                    for image in self.service.list_images()]
        if top == "templates":
            return [(f"{name}.json", self._file(_json(t).encode(), self.started, self.started))
                    for name, t in self.service.list_templates().items()]
        if top == "groups":
            entries = [(f"{g['name']}.json", self._file(_json(g).encode(), g["created"], g["created"]))
                       for g in self.service.list_groups()]
            known = {name for name, _ in entries}
            return entries + [(p[1], Node(False, writable=True, created=made, changed=made))
                              for p, made in list(self.new_files.items()) if p[1] not in known]
        if top == "hosts" and len(path) == 1:
            hosts = self.service.list_hosts()
            known = {host["name"] for host in hosts}
            return ([(host["name"], Node(True, created=self.started, changed=host["last_seen"] or self.started))
                     for host in hosts]
                    + [(name, Node(True, created=made, changed=made))
                       for name, made in list(self.staged_hosts.items()) if name not in known])
        if self._host(path[1]) is None:
            return [("uri", self._stat(path + ("uri",)))]
        return [(file, self._stat(path + (file,))) for file in HOST_FILES]

    def _open(self, path: Path, writes: bool, reads: bool) -> bytes | None:
        """Check an open against the tree; return the content a reader will get."""
        if self._is_dir(path):
            raise pyfuse3.FUSEError(errno.EISDIR)
        if path[0] == "vms" and len(path) == 3:
            if writes and not VM_FILES.get(path[2], False):
                raise pyfuse3.FUSEError(errno.EACCES)
            if path[2] == "console" or not reads:
                if path[2] not in VM_FILES:
                    raise errors.NotFound(f"no file {path[2]!r} in a VM", "file")
                self.service.get_vm(path[1])  # it exists
                return None
        elif writes:
            if path[0] not in ("hosts", "groups") or not self._stat(path).writable:
                raise pyfuse3.FUSEError(errno.EACCES)
            if not reads:
                return None
        return self._content(path)

    @staticmethod
    def _is_dir(path: Path) -> bool:
        return (len(path) == 0 or (len(path) == 1 and path[0] in TOP_DIRS)
                or (len(path) == 2 and path[0] in ("vms", "hosts")))

    # -- the writes (worker threads; each waits for its operation) -------------------------
    def _write(self, path: Path, text: str) -> None:
        if path[0] == "vms":
            self._write_vm_file(path[1], path[2], text)
        elif path[0] == "hosts":
            self._write_host_file(path[1], path[2], text)
        elif path[0] == "groups":
            self._create_group(path[1], text)
        else:
            raise errors.Forbidden(f"{'/'.join(path)} is read-only")

    def _write_vm_file(self, name: str, file: str, text: str) -> None:
        # host: a migration (or an offline move), waited for as a state change is
        self.service.finish(self.service.write_vm_file(name, file, text))

    def _write_host_file(self, name: str, file: str, text: str) -> None:
        if file == "uri" and self._host(name) is None:
            self.service.add_host({"name": name, "uri": text.strip()})
            self.staged_hosts.pop(name, None)
            return
        answer = self.service.write_host_file(name, file, text)
        # maintenance: wait for the drain's moves, as a VM's state write waits for its operation
        drain = answer.get("drain") or {}
        deadline = time.monotonic() + self.service.config.wait_timeout
        for entry in drain.get("migrating", []) + drain.get("moving", []):
            if entry.get("operation"):
                self.service.finish({"id": entry["operation"]}, timeout=max(0.0, deadline - time.monotonic()))

    def _create_group(self, file: str, text: str) -> None:
        if not file.endswith(".json"):
            raise errors.Invalid("a server group's file is NAME.json", "name")
        name = file[: -len(".json")]
        try:
            body = jsonio.loads(text)
        except ValueError as err:
            raise errors.Invalid(f"not JSON: {err}", file) from None
        if not isinstance(body, dict):
            raise errors.Invalid('must be a JSON object such as {"policy": "anti-affinity"}', file)
        if body.get("name", name) != name:
            raise errors.Invalid(f"the group is named by its file, {name!r}", "name")
        self.service.create_group({**body, "name": name})

    def _create_vm(self, name: str) -> None:
        self.service.finish(self.service.create_vm({"name": name, "state": "stopped"})[1])

    def _delete_vm(self, name: str) -> None:
        self.service.finish(self.service.delete_vm(name))

    def _rename_vm(self, name: str, new_name: str) -> None:
        self.service.finish(self.service.rename_vm(name, new_name)[1])

    # -- attributes ---------------------------------------------------------------------
    def _attrs(self, inode: int, node: Node) -> pyfuse3.EntryAttributes:
        attrs = pyfuse3.EntryAttributes()
        attrs.st_ino = inode
        attrs.generation = 0
        attrs.entry_timeout = CACHE_SECONDS
        attrs.attr_timeout = CACHE_SECONDS
        modes = self.owner_modes if limits.owner_only(self.inodes.paths.get(inode, ())) else self.modes
        if node.is_dir:
            attrs.st_mode = stat.S_IFDIR | modes[0]
            attrs.st_nlink = 2
        else:
            attrs.st_mode = stat.S_IFREG | (modes[1] if node.writable else modes[2])
            attrs.st_nlink = 1
        attrs.st_uid = self.uid
        attrs.st_gid = self.gid
        attrs.st_size = node.size
        attrs.st_blksize = 4096
        attrs.st_blocks = (node.size + 511) // 512
        attrs.st_atime_ns = int(node.created * 1e9)
        attrs.st_mtime_ns = int(node.changed * 1e9)
        attrs.st_ctime_ns = int(node.changed * 1e9)
        return attrs

    # -- pyfuse3 operations ----------------------------------------------------------------
    @boundary
    async def lookup(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(parent_inode) + (os.fsdecode(name),)
        node = self._read(self._stat, path)
        return self._attrs(self.inodes.remember(path), node)

    @boundary
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    @boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        node = self._read(self._stat, self.inodes.path(inode))
        return self._attrs(inode, node)

    @boundary
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(inode)
        node = self._read(self._stat, path)
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_size:
            # O_TRUNC and `truncate -s 0`: nothing to do, a write brings the whole value.
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if not node.writable:
                raise pyfuse3.FUSEError(errno.EACCES)
            limits.check_owner(path, ctx.uid, self.uid)
            limits.check_size(path, attr.st_size)
            if attr.st_size != 0:
                raise pyfuse3.FUSEError(errno.EINVAL)
            handle = self.files.get(fh) if fh is not None else None
            if handle is not None:
                handle.buffer.clear()
                handle.base = 0
        # Times (touch) are accepted and ignored: they come from the appliance.
        return self._attrs(inode, node)

    @boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_namemax = 255
        return data

    # -- directories
    @boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self.inodes.path(inode)
        entries = await self._run(self._list, path)
        fh = next(self._handles)
        self.dirs[fh] = (path, entries)
        return fh

    @boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        path, entries = self.dirs[fh]
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            inode = self.inodes.inode(path + (name,))
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(inode, node), index + 1):
                break
            self.inodes.remember(path + (name,))

    @boundary
    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    @boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.inodes.path(parent_inode)
        path = parent + (os.fsdecode(name),)
        limits.check_owner(path, ctx.uid, self.uid)
        if parent in (("vms",), ("hosts",)):
            limits.check_name(path[1])
        if parent == ("vms",):
            await self._run(self._create_vm, path[1])
        elif parent == ("hosts",):
            self._read(self._stage_host, path[1])
        else:
            raise pyfuse3.FUSEError(errno.EACCES)
        node = await self._run(self._stat, path)
        return self._attrs(self.inodes.remember(path), node)

    def _stage_host(self, name: str) -> None:
        """mkdir hosts/NAME: a directory in this mount's memory until its uri is written."""
        if name in self.staged_hosts or any(h["name"] == name for h in self.service.list_hosts()):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self.staged_hosts[name] = self.clock()

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self.inodes.path(parent_inode)
        path = parent + (os.fsdecode(name),)
        limits.check_owner(path, ctx.uid, self.uid)
        if parent == ("vms",):
            await self._run(self._delete_vm, path[1])
        elif parent == ("hosts",):
            if self._read(self._host, path[1]) is None:
                self.staged_hosts.pop(path[1], None)  # staged, never added: nothing in the store
            else:
                await self._run(self.service.delete_host, path[1])
                self.staged_hosts.pop(path[1], None)
        else:
            raise pyfuse3.FUSEError(errno.EACCES)
        self.inodes.drop(path)

    @boundary
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        if not self.inodes.path(parent_inode_old) == self.inodes.path(parent_inode_new) == ("vms",):
            raise pyfuse3.FUSEError(errno.EACCES)
        old, new = os.fsdecode(name_old), limits.check_name(os.fsdecode(name_new))
        await self._run(self._rename_vm, old, new)
        self.inodes.move(("vms", old), ("vms", new))

    # -- new files: groups/NAME.json alone (a write of its JSON creates the group)
    @boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        path = self.inodes.path(parent_inode) + (os.fsdecode(name),)
        if path[0] != "groups" or len(path) != 2 or not path[1].endswith(".json"):
            raise pyfuse3.FUSEError(errno.EACCES)
        limits.check_owner(path, ctx.uid, self.uid)
        limits.check_name(path[1][: -len(".json")])
        if path in self.new_files or self._read(self._group_exists, path[1]):
            raise pyfuse3.FUSEError(errno.EEXIST)
        made = self.clock()
        self.new_files[path] = made
        fh = next(self._handles)
        self.files[fh] = Handle(path, True, b"", fetched=made, made=True)
        attrs = self._attrs(self.inodes.remember(path), Node(False, writable=True, created=made, changed=made))
        # Not cached: it exists while open, and is the group's read-only file or nothing after.
        attrs.entry_timeout = attrs.attr_timeout = 0
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False), attrs

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self.inodes.path(parent_inode) + (os.fsdecode(name),)
        if path[0] != "groups" or len(path) != 2:
            raise pyfuse3.FUSEError(errno.EACCES)
        limits.check_owner(path, ctx.uid, self.uid)
        if path in self.new_files and not self._read(self._group_exists, path[1]):
            self.new_files.pop(path, None)  # made, never written: nothing in the store
        else:
            self._read(self._group, path[1])  # NotFound for a name that is not NAME.json
            await self._run(self.service.delete_group, path[1][: -len(".json")])
        self.inodes.drop(path)

    # -- what cannot be done here

    @boundary
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EACCES)

    @boundary
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EACCES)

    @boundary
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        raise pyfuse3.FUSEError(errno.EACCES)

    # -- files
    @boundary
    async def open(self, inode: int, flags: int, ctx: pyfuse3.RequestContext) -> pyfuse3.FileInfo:
        path = self.inodes.path(inode)
        mode = flags & os.O_ACCMODE
        if mode != os.O_RDONLY:
            limits.check_owner(path, ctx.uid, self.uid)
        content = self._read(self._open, path, mode != os.O_RDONLY, mode != os.O_WRONLY)
        fh = next(self._handles)
        self.files[fh] = Handle(path, mode != os.O_RDONLY, content, fetched=self.clock())
        return pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.files[fh]
        path = handle.path
        if path[0] == "vms" and path[2] == "console":
            return self._read(self.service.read_console, path[1], off, size)
        fresh = self.clock() - handle.fetched < FRESH_SECONDS
        if handle.content is None or not fresh and (off == 0 or off >= len(handle.content)):
            handle.content = self._read(self._content, path)
            handle.fetched = self.clock()
        return handle.content[off: off + size]

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.files[fh]
        if not handle.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        pos = off - handle.base
        if pos < 0:  # rewriting from before what was applied: a new value
            handle.buffer.clear()
            handle.base, pos = off, 0
        if pos + len(buf) > limits.max_bytes(handle.path):
            # The value would outgrow its file: refused whole, and nothing padded or kept.
            handle.buffer.clear()
            raise pyfuse3.FUSEError(errno.EFBIG)
        if pos > len(handle.buffer):
            handle.buffer.extend(b"\0" * (pos - len(handle.buffer)))
        handle.buffer[pos: pos + len(buf)] = buf
        await self._apply(handle, final=False)
        return len(buf)

    @boundary
    async def flush(self, fh: int) -> None:
        handle = self.files.get(fh)
        if handle is not None and handle.buffer:
            await self._apply(handle, final=True)

    @boundary
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh, None)
        if handle is None:
            return
        try:
            if handle.buffer:
                await self._apply(handle, final=True)
        except errors.ApplianceError as err:
            log.info("release: %s left unapplied: %s", "/".join(handle.path), limits.excerpt(err.reason))
        finally:
            if handle.made:
                self.new_files.pop(handle.path, None)

    async def _apply(self, handle: Handle, final: bool) -> None:
        """Apply the buffered value when it is complete; a refused value is dropped, not retried."""
        file = handle.path[-1]
        try:
            text = bytes(handle.buffer).decode("utf-8")
        except UnicodeDecodeError:
            if not final:
                return  # perhaps a character split across writes
            self._consumed(handle)
            raise errors.Invalid("the value must be UTF-8 text", file) from None
        if handle.base and not text.strip():
            self._consumed(handle)  # the newline (or spaces) after a value already applied
            return
        complete = self._complete(file, text)
        if file.endswith(".json") and not complete and not final:
            return
        try:
            await self._run(self._write, handle.path, text)
        except errors.Invalid:
            if not complete and not final:
                return  # perhaps the first part of a value split over several writes
            self._consumed(handle)
            raise
        except BaseException:
            self._consumed(handle)
            raise
        self._consumed(handle)

    @staticmethod
    def _complete(file: str, text: str) -> bool:
        """Framing only, no validation: is this the whole value the writer meant?"""
        if file.endswith(".json"):
            try:
                jsonio.loads(text)
            except ValueError:
                return False
            return True
        return text.endswith("\n")

    @staticmethod
    def _consumed(handle: Handle) -> None:
        handle.base += len(handle.buffer)
        handle.buffer.clear()

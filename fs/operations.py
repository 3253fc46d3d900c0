"""The FUSE operations: a path and a verb in, one call of the tree out.

pyfuse3's glue alone: the tree (fs/tree.py) says what a path is, holds and
reads, and where a write goes; open files are fs/handles.py's; the limits on
what a caller may write and make are fs/limits.py's. Every refusal is one of
the service's exceptions, turned into the errno its class carries (errno_of), in `boundary`,
the one place where exceptions leave the file system (fs/boundary.py).

Every request is its caller's (fs/guard.py, fs/identity.py): the ones that
carry a RequestContext are checked against the policy table and served
`acting_as` that caller; read, write, flush and release, which carry none, act
as whoever opened the file (kept in its Handle).

Writes, and listings of whole collections, run in a worker thread: they block
(a write waits for its operation: a VM's state, a VM's host (a live
migration), a host's maintenance (the drain's migrations)), and the trio loop
keeps serving other requests meanwhile. Reads of one row (lookup, getattr,
open, read) run on the loop: in WAL mode a reader never waits for a writer,
the read takes ~30 µs and a hop to a thread ~200 µs (measured), so a `cat`
stays within 2x of a bare pyfuse3 file system; but screen.png's stat and open
take a screenshot, in a thread (`_tree`).
"""
from __future__ import annotations

import errno
import functools
import itertools
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from appliance import errors
from appliance.access.principal import Principal, acting_as
from appliance.service import Service
from fs import audit, limits
from fs.attributes import CACHE_SECONDS, entry_attributes
from fs.boundary import boundary, errno_of
from fs.editing import MadeFiles
from fs.guard import Guard
from fs.handles import Handle, file_info
from fs.identity import Identities
from fs.inodes import Inodes
from fs.tree import Node, Path, Tree

log = logging.getLogger("vmctl.fs")

RENAME_EXCHANGE = 2
# The directories whose NAME.json files are made by a write (create) and removed by rm.
NAMED_FILES = ("groups", "templates", "networks")

__all__ = ["CACHE_SECONDS", "ApplianceFS", "Inodes", "boundary", "errno_of"]


class ApplianceFS(pyfuse3.Operations):
    def __init__(self, service: Service, clock: Callable[[], float] = time.time,
                 group: int | None = None, shared: bool = False):
        """group: the mount group (its files' gid; its members are operators in the default
        project unless the map says otherwise); shared: other users can reach the mount
        (allow_other), so what a path shows depends on who asks (see _attrs)."""
        super().__init__()
        self.service = service
        self.clock = clock
        self.tree = Tree(service, clock, started=clock())
        self.uid = os.getuid()
        self.gid = os.getgid() if group is None else group
        self.shared = shared
        self.guard = Guard(service, Identities(service.store, self.uid, group), self._run)
        self.inodes = Inodes()
        self.made = MadeFiles(self)  # editors' temporary files, cp FILE images/ (fs/editing.py)
        self.files: dict[int, Handle] = {}
        self.dirs: dict[int, tuple[Path, list[tuple[str, Node]]]] = {}
        self._handles = itertools.count(1)

    # -- calling the tree -----------------------------------------------------------------
    @staticmethod
    async def _run(fn: Callable, *args: Any) -> Any:
        """A call that may block: in a worker thread."""
        return await trio.to_thread.run_sync(functools.partial(fn, *args), abandon_on_cancel=True)

    @staticmethod
    def _read(fn: Callable, *args: Any) -> Any:
        """A read of one row or one small file: on the loop (see the module docstring)."""
        return fn(*args)

    async def _tree(self, fn: Callable, path: Path, *args: Any) -> Any:
        """A tree call that reads one row: on the loop; for a file made when it is read
        (screen.png: a screenshot, ~0.1 s and up to the broker's timeout) in a thread."""
        file = self.tree.table_file(path)
        if file is not None and file.snapshot is not None:
            return await self._run(fn, path, *args)
        return fn(path, *args)

    async def _write(self, path: Path, value: str | bytes) -> None:
        """Apply a value to a file, or type bytes into the console: the one place the
        mount's file writes reach the service."""
        try:
            if isinstance(value, bytes):
                await self._run(self.tree.type_into, path, value)
            else:
                await self._run(self.tree.write, path, value)
        except BaseException as err:
            audit.applied(path, err)
            raise
        audit.applied(path, None)

    async def _allow(self, ctx: pyfuse3.RequestContext, verb: str, path: Path) -> Principal:
        """The guard's answer; for a temporary file or an import, as fs/editing.py decides."""
        return await self.guard.allow(ctx, verb, path, MadeFiles.decided_as(path, verb))

    async def _stat(self, path: Path, uid: int) -> Node:
        """The caller's own temporary file or import (fs/editing.py), or the tree's."""
        node = self.made.stat(path, uid)
        return node if node is not None else await self._tree(self.tree.stat, path)

    # -- attributes ---------------------------------------------------------------------
    def _attrs(self, inode: int, node: Node) -> pyfuse3.EntryAttributes:
        """The node's attributes as this mount shows them (fs/attributes.py)."""
        path = self.inodes.paths.get(inode, ())
        others = self.shared and self.guard.identities.anyone()
        return entry_attributes(inode, node, path, self.uid, self.gid, others)

    # -- pyfuse3 operations ----------------------------------------------------------------
    @boundary
    async def lookup(self, parent_inode: int, name: bytes,
                     ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(parent_inode) + (os.fsdecode(name),)
        with acting_as(await self.guard.allow(ctx, "read", path)):
            node = await self._stat(path, ctx.uid)
        return self._attrs(self.inodes.remember(path), node)

    @boundary
    async def forget(self, inode_list: list[tuple[int, int]]) -> None:
        for inode, count in inode_list:
            self.inodes.forget(inode, count)

    @boundary
    async def getattr(self, inode: int, ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(inode)
        with acting_as(await self.guard.allow(ctx, "read", path)):
            node = await self._stat(path, ctx.uid)
        return self._attrs(inode, node)

    @boundary
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes,
                      fields: pyfuse3.SetattrFields, fh: int | None,
                      ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        path = self.inodes.path(inode)
        verb = "write" if fields.update_size else "read"  # times are ignored (below)
        with acting_as(await self._allow(ctx, verb, path)):
            node = await self._stat(path, ctx.uid)
        if node.private:  # a temporary file, an import (fs/editing.py)
            await self.made.setattr(path, ctx.uid, fields, attr.st_size, fh)
            return self._attrs(inode, await self._stat(path, ctx.uid))
        if fields.update_mode or fields.update_uid or fields.update_gid:
            raise pyfuse3.FUSEError(errno.EPERM)
        if fields.update_size:
            # O_TRUNC and `truncate -s 0`: nothing to do, a write brings the whole value.
            if node.is_dir:
                raise pyfuse3.FUSEError(errno.EISDIR)
            if not node.writable:
                raise pyfuse3.FUSEError(errno.EACCES)
            limits.check_size(path, attr.st_size)
            if attr.st_size != 0:
                raise pyfuse3.FUSEError(errno.EINVAL)
            handle = self.files.get(fh) if fh is not None else None
            if handle is not None:
                handle.truncate()
        # Times (touch) are accepted and ignored: they come from the appliance.
        return self._attrs(inode, node)

    @boundary
    async def statfs(self, ctx: pyfuse3.RequestContext) -> pyfuse3.StatvfsData:
        await self.guard.allow(ctx, "read", ())
        data = pyfuse3.StatvfsData()
        data.f_bsize = data.f_frsize = 4096
        data.f_namemax = 255
        return data

    # -- directories
    @boundary
    async def opendir(self, inode: int, ctx: pyfuse3.RequestContext) -> int:
        path = self.inodes.path(inode)
        with acting_as(await self.guard.allow(ctx, "read", path)):
            entries = await self._run(self.tree.entries, path)
        entries += self.made.entries(path, ctx.uid)  # the caller's own (fs/editing.py)
        fh = next(self._handles)
        self.dirs[fh] = (path, entries)
        return fh

    @boundary
    async def readdir(self, fh: int, start_id: int, token: pyfuse3.ReaddirToken) -> None:
        path, entries = self.dirs[fh]
        for index in range(start_id, len(entries)):
            name, node = entries[index]
            inode = self.inodes.inode(path + (name,))
            attrs = self._attrs(inode, node)
            if not pyfuse3.readdir_reply(token, os.fsencode(name), attrs, index + 1):
                break
            self.inodes.remember(path + (name,))

    @boundary
    async def releasedir(self, fh: int) -> None:
        self.dirs.pop(fh, None)

    def _dir_ops(self, parent: Path) -> tuple[Callable[[Path], Any], Callable[[Path], Any]]:
        """What mkdir and rmdir do in PARENT, each given the directory's path: a VM, a
        snapshot of one (fs/backup_tree.py), a pool (0 replicas; rmdir takes its members
        too: fs/pool_tree.py), a data disk (fs/disk_tree.py), a host being added. EACCES
        anywhere else."""
        tree = self.tree
        if tree.is_vms_dir(parent):
            return tree.create_vm, tree.delete_vm
        if tree.is_snapshots_dir(parent):
            return tree.take_snapshot, tree.delete_snapshot
        if tree.is_pools_dir(parent):
            return tree.create_pool, tree.delete_pool
        if tree.disks.is_disks_parent(parent):
            return tree.disks.add_disk, tree.disks.remove_disk
        if parent == ("hosts",):
            staged = tree.staged_hosts
            return (lambda path: staged.stage(path[1])), (lambda path: staged.remove(path[1]))
        raise pyfuse3.FUSEError(errno.EACCES)

    @boundary
    async def mkdir(self, parent_inode: int, name: bytes, mode: int,
                    ctx: pyfuse3.RequestContext) -> pyfuse3.EntryAttributes:
        parent = self.inodes.path(parent_inode)
        path = parent + (os.fsdecode(name),)
        make, _remove = self._dir_ops(parent)
        with acting_as(await self.guard.allow(ctx, "mkdir", path)):
            limits.check_name(path[-1])
            await self._run(make, path)
            node = await self._run(self.tree.stat, path)
        return self._attrs(self.inodes.remember(path), node)

    @boundary
    async def rmdir(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        parent = self.inodes.path(parent_inode)
        path = parent + (os.fsdecode(name),)
        _make, remove = self._dir_ops(parent)
        with acting_as(await self.guard.allow(ctx, "rmdir", path)):
            await self._run(remove, path)
        self.inodes.drop(path)

    @boundary
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int,
                     name_new: bytes, flags: int, ctx: pyfuse3.RequestContext) -> None:
        if flags & RENAME_EXCHANGE:
            raise pyfuse3.FUSEError(errno.EINVAL)
        parent = self.inodes.path(parent_inode_old)
        target = self.inodes.path(parent_inode_new) + (os.fsdecode(name_new),)
        if await self.made.rename(parent + (os.fsdecode(name_old),), target, ctx):
            return  # an editor's save (fs/editing.py)
        # Within one vms/ directory (a VM does not change project by mv).
        if parent != self.inodes.path(parent_inode_new) or not self.tree.is_vms_dir(parent):
            raise pyfuse3.FUSEError(errno.EACCES)
        old = os.fsdecode(name_old)
        with acting_as(await self.guard.allow(ctx, "rename", parent + (old,))):
            new = limits.check_name(os.fsdecode(name_new))
            await self._run(self.tree.rename_vm, parent + (old,), new)
        self.inodes.move(parent + (old,), parent + (new,))

    # -- new files: groups/NAME.json and templates/NAME.json (a write of its JSON creates
    # it); removing one deletes it, removing a table's file is its clear (vms/NAME/lock)
    @boundary
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: pyfuse3.RequestContext) -> tuple[pyfuse3.FileInfo,
                                                           pyfuse3.EntryAttributes]:
        path = self.inodes.path(parent_inode) + (os.fsdecode(name),)
        own = await self.made.create(path, ctx)  # a temporary file, an import
        if own is not None:
            return own
        if path[0] not in NAMED_FILES or len(path) != 2 or not path[1].endswith(".json"):
            raise pyfuse3.FUSEError(errno.EACCES)
        principal = await self.guard.allow(ctx, "create", path)
        limits.check_name(path[1][: -len(".json")])
        with acting_as(principal):
            if path in self.tree.new_files or self._read(self.tree.named_file_exists, path):
                raise pyfuse3.FUSEError(errno.EEXIST)
        made = self.clock()
        self.tree.new_files[path] = made
        fh = next(self._handles)
        self.files[fh] = Handle(path, True, b"", fetched=made, made=True, principal=principal,
                                uid=ctx.uid)
        node = Node(False, writable=True, created=made, changed=made)
        attrs = self._attrs(self.inodes.remember(path), node)
        # Not cached: it exists while open, and is the group's read-only file or nothing after.
        attrs.entry_timeout = attrs.attr_timeout = 0
        return file_info(fh, read_only=False), attrs

    @boundary
    async def unlink(self, parent_inode: int, name: bytes, ctx: pyfuse3.RequestContext) -> None:
        path = self.inodes.path(parent_inode) + (os.fsdecode(name),)
        if await self.made.unlink(path, ctx):  # a temporary file, an import, an image
            return
        if self.tree.in_table(path):  # `rm vms/NAME/lock`: the file's clear (unlock)
            with acting_as(await self.guard.allow(ctx, "unlink", path)):
                await self._run(self.tree.remove_file, path)
            return
        if path[0] not in NAMED_FILES or len(path) != 2:
            raise pyfuse3.FUSEError(errno.EACCES)
        with acting_as(await self.guard.allow(ctx, "unlink", path)):
            if path in self.tree.new_files and not self._read(self.tree.named_file_exists, path):
                self.tree.new_files.pop(path, None)  # made, never written: nothing stored
            else:
                await self._run(self.tree.remove_named_file, path)
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
        principal = await self._allow(ctx, "read" if mode == os.O_RDONLY else "write", path)
        own = self.made.open(path, flags, principal, ctx.uid)  # fs/editing.py
        if own is not None:
            return own
        with acting_as(principal):
            content = await self._tree(self.tree.open, path, mode != os.O_RDONLY,
                                       mode != os.O_WRONLY)
        file, fh = self.tree.table_file(path), next(self._handles)
        fixed, typed = (file.snapshot is not None, file.write_bytes is not None) if file else (
            False, False)
        if fixed:  # screen.png: EBUSY when open ones hold too much already
            self.tree.screenshots.lend(len(content or b""))
        self.files[fh] = Handle(path, mode != os.O_RDONLY, content, fetched=self.clock(),
                                log=self.tree.log(path), principal=principal, uid=ctx.uid,
                                fixed=fixed, typed=typed)
        return file_info(fh, read_only=mode == os.O_RDONLY)

    @boundary
    async def read(self, fh: int, off: int, size: int) -> bytes:
        handle = self.files[fh]
        if handle.scratch is not None:
            return self.made.scratch.read(handle.scratch, off, size)
        with acting_as(handle.principal):
            if handle.log is not None:
                return self._read(self.tree.read_log, handle.path, off, size)
            if handle.stale(off, self.clock()):
                handle.content = self._read(self.tree.content, handle.path)
                handle.fetched = self.clock()
        assert handle.content is not None  # noqa: S101 - fetched just above when missing
        return handle.content[off: off + size]

    @boundary
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        handle = self.files[fh]
        if await self.made.write(handle, off, buf):  # a temporary file, an import
            return len(buf)
        handle.take(off, buf)
        with acting_as(handle.principal):
            if handle.typed:  # the console: these bytes, typed now, whatever the offset
                await self._write(handle.path, bytes(buf))
            else:
                await handle.apply(final=False, write=self._write)
        return len(buf)

    @boundary
    async def flush(self, fh: int) -> None:
        handle = self.files.get(fh)
        if handle is not None and handle.image is not None:
            await self.made.flush(handle)
        elif handle is not None and handle.buffer:
            with acting_as(handle.principal):
                await handle.apply(final=True, write=self._write)

    @boundary
    async def release(self, fh: int) -> None:
        handle = self.files.pop(fh, None)
        if handle is None:
            return
        try:
            await self.made.release(handle)
            if handle.buffer:
                with acting_as(handle.principal):
                    await handle.apply(final=True, write=self._write)
        except errors.ApplianceError as err:
            log.info("release: %s left unapplied: %s", "/".join(handle.path),
                     limits.excerpt(err.reason))
        finally:
            if handle.made:
                self.tree.new_files.pop(handle.path, None)
            if handle.fixed:
                self.tree.screenshots.give_back(len(handle.content or b""))


"""The mount's files a caller makes to write something else with (issue 16), kept
apart from fs/operations.py, which hands them here first: editors' temporary
files (fs/scratch.py: `sed -i`, vim, Python's os.replace) and images copied into
images/ (fs/image_imports.py: `cp FILE images/`).

Both are their maker's own: the uid that made one sees it, no one else. Both are
bounded, and neither names a host file: a temporary file is bytes in this
process, an import a file the image store makes in HOME/images.
"""
from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

import pyfuse3

from appliance.access.principal import Principal, acting_as
from fs import audit, image_imports, limits, scratch
from fs.handles import Handle, file_info
from fs.nodes import Node, Path

if TYPE_CHECKING:
    from fs.operations import ApplianceFS

Created = tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]


class MadeFiles:
    def __init__(self, fs: ApplianceFS):
        self.fs = fs
        self.scratch = scratch.ScratchFiles()
        self.imports = image_imports.ImageImports(fs.service)
        # The mount point as /proc shows it (fs/mount.py): None, no look at who holds an
        # import (unit tests without a mount).
        self.mountpoint: str | None = None

    @staticmethod
    def decided_as(path: Path, verb: str) -> tuple[str, Path] | None:
        """A change of an editor's temporary file is decided as the change of its
        directory's file (fs/scratch.py), an import's write as its making."""
        return scratch.decided_as(path, verb) or image_imports.decided_as(path, verb)

    def stat(self, path: Path, uid: int | None) -> Node | None:
        """The caller's own temporary file or import at path, if any."""
        node = self.scratch.stat(path, uid)
        return node if node is not None else self.imports.stat(path, uid)

    def entries(self, directory: Path, uid: int | None) -> list[tuple[str, Node]]:
        return self.scratch.entries(directory, uid) + self.imports.entries(directory, uid)

    async def create(self, path: Path, ctx: pyfuse3.RequestContext) -> Created | None:
        """A new temporary file or import, the caller's own; None for any other name."""
        fs, is_import = self.fs, image_imports.takes(path)
        if not (is_import or scratch.is_scratch_name(path)):
            return None
        principal = await fs._allow(ctx, "create", path)
        with acting_as(principal):
            if is_import:
                found = await fs._run(self.imports.begin, path, ctx.uid)
                handle = Handle(path, True, principal=principal, uid=ctx.uid, image=found)
                node = self.imports.node(found)
            else:
                await fs._run(fs.tree.stat, path[:-1])  # the VM or pool is the caller's
                file = self.scratch.create(path, ctx.uid)
                handle = Handle(path, True, principal=principal, uid=ctx.uid, scratch=file)
                node = self.scratch.node(file)
        fh = next(fs._handles)
        fs.files[fh] = handle
        return file_info(fh, read_only=False), fs._attrs(fs.inodes.remember(path), node)

    def open(self, path: Path, flags: int, principal: Principal,
             uid: int) -> pyfuse3.FileInfo | None:
        """A temporary file opened again; an import cannot be (EBUSY); None: neither."""
        if self.imports.get(path, uid) is not None:  # written by its create's handle only
            raise pyfuse3.FUSEError(errno.EBUSY)
        if self.scratch.get(path, uid) is None:
            return None
        writes = flags & os.O_ACCMODE != os.O_RDONLY
        fh = next(self.fs._handles)
        self.fs.files[fh] = Handle(path, writes, principal=principal, uid=uid,
                                   scratch=self.scratch.open(path, uid))
        return file_info(fh, read_only=not writes)

    async def rename(self, source: Path, target: Path, ctx: pyfuse3.RequestContext) -> bool:
        """An editor's temporary file renamed over a file of its directory: one write of
        that file with its content, as `cp` makes (refused: nothing changes, and the
        temporary file stays); to another temporary name: moved. False: not one."""
        fs = self.fs
        if self.scratch.get(source, ctx.uid) is None:
            return False
        if source[:-1] != target[:-1]:
            raise pyfuse3.FUSEError(errno.EXDEV)
        if scratch.is_scratch_name(target):
            await fs._allow(ctx, "create", target)
            self.scratch.move(source, target, ctx.uid)
        else:
            with acting_as(await fs.guard.allow(ctx, "write", target)):
                text = self.scratch.text(source, ctx.uid)
                limits.check_size(target, len(text.encode()))
                await fs._write(target, text)
            self.scratch.remove(source, ctx.uid)
        fs.inodes.move(source, target)
        return True

    async def unlink(self, path: Path, ctx: pyfuse3.RequestContext) -> bool:
        """rm of a temporary file, an import, or an image (images/NAME.json); False: none."""
        fs = self.fs
        if scratch.is_scratch_name(path):
            await fs._allow(ctx, "unlink", path)
            self.scratch.remove(path, ctx.uid)
        elif path[0] == image_imports.IMAGES and len(path) == 2:
            with acting_as(await fs.guard.allow(ctx, "unlink", path)):
                await fs._run(self.imports.remove, path, ctx.uid)
        else:
            return False
        fs.inodes.drop(path)
        return True

    async def setattr(self, path: Path, uid: int, fields: pyfuse3.SetattrFields, size: int,
                      fh: int | None) -> None:
        """A setattr of one: its size; modes, owners and times are ignored."""
        if fields.update_size:
            handle = self.fs.files.get(fh) if fh is not None else None
            await self.resize(path, uid, size, handle)

    async def resize(self, path: Path, uid: int, size: int, handle: Handle | None) -> None:
        """A truncate of the caller's temporary file or import."""
        found = handle.image if handle is not None else self.imports.get(path, uid)
        if found is not None:
            await self.fs._run(self.imports.truncate, found, size)
            return
        file = self.scratch.get(path, uid)
        if file is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        self.scratch.truncate(file, size)

    async def write(self, handle: Handle, off: int, buf: bytes) -> bool:
        if handle.scratch is not None and handle.writable:
            self.scratch.write(handle.scratch, off, buf)
        elif handle.image is not None:  # cp FILE images/: to the import's file
            await self.fs._run(self.imports.write, handle.image, off, bytes(buf))
        else:
            return False
        return True

    async def flush(self, handle: Handle, final: bool = False) -> None:
        """An import's writer's close: checked and recorded as an upload (the audit trail
        has the outcome as the write of its file). A close before any byte is not the
        end (a shell's `> images/FILE` closes the fd it opened once it has a duplicate),
        nor is one while another process still holds the file (image_imports.
        held_elsewhere: a forked child's close, or its exit, finished the import with
        what had arrived while its parent went on writing); the release (final) is,
        whatever arrived."""
        if handle.image is None or handle.image.closed or not (final or handle.image.size):
            return
        if not final and self.mountpoint is not None and await self.fs._run(
                image_imports.held_elsewhere, os.path.join(self.mountpoint, *handle.path),
                handle.image.uid):
            return
        with acting_as(handle.principal):
            try:
                done = await self.fs._run(self.imports.finish, handle.path, handle.image)
            except BaseException as err:
                audit.applied(handle.path, err)
                raise
            if done is not None:
                audit.applied(handle.path, None)
        self.fs.inodes.drop(handle.path)

    async def release(self, handle: Handle) -> None:
        if handle.scratch is not None:
            self.scratch.release(handle.scratch)
        if handle.image is not None:  # not finished at a close: now (no one hears an error)
            await self.flush(handle, final=True)

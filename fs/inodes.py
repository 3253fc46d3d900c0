"""Inode numbers for the mount's paths, stable while the kernel remembers them."""
from __future__ import annotations

import itertools

import pyfuse3

from appliance import errors

Path = tuple[str, ...]


class Inodes:
    """Stable inode numbers: path -> inode while the kernel remembers it (lookup counts)."""

    def __init__(self) -> None:
        self.by_path: dict[Path, int] = {(): pyfuse3.ROOT_INODE}
        self.paths: dict[int, Path] = {pyfuse3.ROOT_INODE: ()}
        self.lookups: dict[int, int] = {}
        self._next = itertools.count(pyfuse3.ROOT_INODE + 1)

    def path(self, inode: int) -> Path:
        try:
            return self.paths[inode]
        except KeyError:
            raise errors.NotFound(f"inode {inode} is gone") from None

    def inode(self, path: Path) -> int:
        inode = self.by_path.get(path)
        if inode is None:
            inode = next(self._next)
            self.by_path[path] = inode
            self.paths[inode] = path
        return inode

    def remember(self, path: Path) -> int:
        """The inode for path, counting one more kernel reference to it."""
        inode = self.inode(path)
        self.lookups[inode] = self.lookups.get(inode, 0) + 1
        return inode

    def forget(self, inode: int, count: int) -> None:
        left = self.lookups.get(inode, 0) - count
        if left > 0:
            self.lookups[inode] = left
            return
        self.lookups.pop(inode, None)
        if inode == pyfuse3.ROOT_INODE:
            return
        path = self.paths.pop(inode, None)
        if path is not None and self.by_path.get(path) == inode:
            del self.by_path[path]

    def _under(self, prefix: Path) -> list[Path]:
        return [p for p in self.by_path if p[: len(prefix)] == prefix]

    def move(self, old: Path, new: Path) -> None:
        """A renamed directory keeps its inodes, and so do its files."""
        self.drop(new)
        for path in self._under(old):
            inode = self.by_path.pop(path)
            moved = new + path[len(old):]
            self.by_path[moved] = inode
            self.paths[inode] = moved

    def drop(self, prefix: Path) -> None:
        """A deleted directory: its names are free; the kernel forgets the inodes later."""
        for path in self._under(prefix):
            del self.by_path[path]

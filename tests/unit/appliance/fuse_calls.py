"""The mount's FUSE operations called as the kernel would for a shell's commands,
without a mount: the base the unit tests' shells build their commands on."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pyfuse3

from fs.operations import ApplianceFS


class FuseCalls:
    def __init__(self, service, uid: int = 0, gid: int | None = None):
        self.fs = ApplianceFS(service)
        self.ctx = SimpleNamespace(uid=uid, gid=uid if gid is None else gid, pid=os.getpid(),
                                   umask=0o022)

    async def inode(self, *path: str) -> int:
        """The inode of path (names below the root), looked up one name at a time."""
        inode = pyfuse3.ROOT_INODE
        for name in path:
            inode = (await self.fs.lookup(inode, name.encode(), self.ctx)).st_ino
        return inode

    async def errno_of(self, call) -> int:
        """The errno the FUSE call refuses with; 0 when it is done."""
        try:
            await call()
        except pyfuse3.FUSEError as err:
            return err.errno
        return 0

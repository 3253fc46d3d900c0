"""FOPEN_NOFLUSH for the mount's read-only opens: pyfuse3 built with
packaging/pyfuse3/noflush.patch (FileInfo.noflush), so that a reader's close costs
no FLUSH request; a writer's open still flushes, where a value refused at close is
reported (tests/fs/test_fs.py). These fail when the installed pyfuse3 is the
unpatched one (`make venv` builds it: packaging/pyfuse3/build.sh)."""
from __future__ import annotations

import os
from types import SimpleNamespace

import pyfuse3
import trio

from fs import handles
from fs.operations import ApplianceFS


def test_the_installed_pyfuse3_has_file_info_noflush():
    assert hasattr(pyfuse3.FileInfo, "noflush"), (
        "pyfuse3 lacks FileInfo.noflush: run `bash packaging/pyfuse3/build.sh VENV`")
    assert handles.NOFLUSH
    assert pyfuse3.FileInfo(fh=7, noflush=True).noflush
    assert not pyfuse3.FileInfo(fh=7).noflush  # pyfuse3's default is unchanged


def test_read_only_opens_skip_flush_and_writable_opens_keep_it(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    fs = ApplianceFS(service)
    ctx = SimpleNamespace(uid=0, gid=0, pid=os.getpid(), umask=0o022)

    async def open_state(flags: int) -> pyfuse3.FileInfo:
        inode = pyfuse3.ROOT_INODE
        for name in ("vms", "web1", "state"):
            inode = (await fs.lookup(inode, name.encode(), ctx)).st_ino
        info = await fs.open(inode, flags, ctx)
        await fs.release(info.fh)
        return info

    reader = trio.run(open_state, os.O_RDONLY)
    assert reader.noflush and reader.direct_io and not reader.keep_cache
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        writer = trio.run(open_state, flags)
        assert not writer.noflush and writer.direct_io

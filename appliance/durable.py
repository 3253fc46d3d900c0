"""Making a rename durable: after os.replace/os.link into a directory, the
directory itself is fsynced, or a crash may forget the new name (backup
manifests, the home's restore); and a file written whole beside its name,
then renamed over it (the home's backup archive, a restored settings file)."""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def replacing(dest: Path, mode: int) -> Iterator[BinaryIO]:
    """A private temporary file beside `dest` (its mode `mode` before any byte is
    written) for the block to fill; synced and renamed over `dest` when the block
    ends, removed if it fails: `dest` is the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", dir=dest.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, dest)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise

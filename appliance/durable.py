"""Making a rename durable: after os.replace/os.link into a directory, the
directory itself is fsynced, or a crash may forget the new name (backup
manifests, the home's restore)."""
from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(path: str | Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

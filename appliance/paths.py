"""Whether a path given by a caller lies inside a folder the admin allowed.

One rule for every such check (host URIs' socket= and keyfile=, image imports):
resolve every symlink and `..` first, and treat a path that cannot be resolved
(a link realpath may not read, as another mount namespace's /proc/PID/root,
which is EACCES even for root) as outside.
"""
from __future__ import annotations

import os
from pathlib import Path


def real_path(path: str | Path) -> Path | None:
    """The path with every symlink and `..` resolved; None when it cannot be."""
    try:
        return Path(os.path.realpath(path))
    except OSError:
        return None


def inside(path: str | Path, directory: str | Path, strictly: bool = False) -> bool:
    """Whether path, resolved, is directory (unless strictly) or lies under it, resolved."""
    real, root = real_path(path), real_path(directory)
    if real is None or root is None:
        return False
    return real.is_relative_to(root) and not (strictly and real == root)

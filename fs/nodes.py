"""What getattr reports about one path of the mount (fs/tree.py and the subtrees it
delegates to, fs/backup_tree.py)."""
from __future__ import annotations

from dataclasses import dataclass

from appliance import errors

Path = tuple[str, ...]


@dataclass
class Node:
    """What getattr reports about one path."""

    is_dir: bool
    writable: bool = False
    size: int = 0
    created: float = 0.0
    changed: float = 0.0
    volatile: bool = False  # made when read (screen.png): the kernel must not cache its size
    private: bool = False  # a caller's own temporary file (fs/scratch.py): writable by them


def file_node(content: bytes, created: float, changed: float, writable: bool = False) -> Node:
    return Node(False, writable=writable, size=len(content), created=created, changed=changed)


def json_name(file: str, what: str) -> str:
    """NAME of NAME.json; NotFound for any other file name."""
    if not file.endswith(".json"):
        raise errors.NotFound(f"no {what} file {file[:64]!r}; {what}s show as NAME.json")
    return file[: -len(".json")]

"""The mount's replica pools (issue 14), at the REST paths:

    pools/                 mkdir NAME = a pool of the default template and 0 replicas;
                           rmdir NAME = delete it and its members (waits for them)
    pools/NAME/            the files of appliance/pool_files.py's table:
                           template.json (rw), replicas (rw), paused (rw), status.json (ro)

fs/tree.py hands every path under pools/ to this module (`claims`). Each read
and write is one service call (appliance/service/pools.py); a write records what
the pool should be and returns: the pool controller converges its members, and
status.json says how far it is. mkdir makes the pool at once (with 0 replicas
nothing runs), so `mkdir pools/web; echo 3 > pools/web/replicas` is the whole
recipe; a template is then written to template.json (a new revision) or given
at create through REST or vmctl.
"""
from __future__ import annotations

import errno
from collections.abc import Callable

import pyfuse3

from appliance import errors
from appliance.access import caller
from appliance.pool_files import POOL_FILES
from appliance.service import Service
from fs.nodes import Node, Path, file_node

POOLS = "pools"


class PoolTree:
    def __init__(self, service: Service, started: float):
        self.service = service
        self.started = started

    @staticmethod
    def claims(path: Path) -> bool:
        return bool(path) and path[0] == POOLS

    @staticmethod
    def is_dir(path: Path) -> bool:
        return bool(path) and path[0] == POOLS and len(path) <= 2

    @staticmethod
    def is_pools_dir(path: Path) -> bool:
        return path == (POOLS,)

    def stat(self, path: Path) -> Node:
        if len(path) == 1:
            return Node(True, created=self.started, changed=self.started)
        pool = self.service.pool_row(path[1])
        if len(path) == 2:
            return Node(True, created=pool["created"], changed=pool["updated"])
        if len(path) == 3:
            file = POOL_FILES.file(path[2])
            text = file.read(self.service, path[1])
            return file_node(text.encode(), pool["created"], pool["updated"], file.writable)
        raise errors.NotFound(f"no {'/'.join(path)[:200]!r} here")

    def entries(self, path: Path) -> list[tuple[str, Node]]:
        if len(path) == 1:
            return [(p["name"], Node(True, created=p["created"], changed=p["updated"]))
                    for p in self.service.list_pools()]
        if len(path) != 2:
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        return [(file, self.stat((*path, file))) for file in POOL_FILES]

    def content(self, path: Path) -> bytes:
        if len(path) != 3:
            raise errors.NotFound(f"no file {'/'.join(path)[:200]!r} here")
        return POOL_FILES.read(self.service, path[1], path[2]).encode()

    def write(self, path: Path, text: str) -> None:
        if len(path) != 3:
            raise errors.Forbidden(f"{'/'.join(path)[:200]} is read-only")
        POOL_FILES.write(self.service, path[1], path[2], text)

    def create(self, path: Path) -> None:
        """mkdir pools/NAME: EEXIST for a pool of that name."""
        if self.service.store.pool_exists(caller().project, path[1]):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self.service.create_pool({"name": path[1]})

    def delete(self, path: Path, wait: Callable[[tuple[dict, ...]], None]) -> None:
        """rmdir pools/NAME: the pool and its members, waiting for their deletions."""
        wait(tuple(self.service.delete_pool(path[1])))

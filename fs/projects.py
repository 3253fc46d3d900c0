"""The mount's projects/: the projects the caller may act in (every one, for an
admin), each holding its VMs and its quota:

    projects/P/vms/NAME/...   the files of vms/NAME/, acting in project P
    projects/P/quota          one line per resource: `vms 3/5`, `cpus 6/unlimited`

`vms/` itself is the caller's own project's (the one they act in); a path
under projects/P/vms/ is the same path under vms/, served with the caller
acting in P (`split` and `acting_in`), so every rule, file and errno is the
one of vms/. A project the caller may not see is not there (ENOENT), as
through REST.
"""
from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, TypeVar

from appliance import errors
from appliance.access import acting_as, caller

if TYPE_CHECKING:
    from appliance.service import Service

Path = tuple[str, ...]
PROJECTS = "projects"
PROJECT_ENTRIES = ("vms", "quota")
# The quota file's lines, in this order (the keys of get_project's quota and usage).
QUOTA_RESOURCES = ("vms", "cpus", "memory_mib", "disk_gib")


def split(path: Path) -> tuple[str | None, Path]:
    """projects/P/vms/... -> (P, vms/...); any other path -> (None, the path)."""
    if len(path) >= 3 and path[0] == PROJECTS and path[2] == "vms":
        return path[1], path[2:]
    return None, path


def is_dir(path: Path) -> bool:
    """projects/ and projects/P (what is under projects/P/vms is vms/'s)."""
    return bool(path) and path[0] == PROJECTS and len(path) <= 2


def check_visible(service: Service, project: str) -> None:
    """NotFound unless the caller may act in the project, and it exists."""
    if project not in service.projects_visible():
        raise errors.NotFound(f"no project named {project[:64]!r}", "project")


@contextlib.contextmanager
def acting_in(service: Service, project: str | None) -> Iterator[None]:
    """The caller, acting in `project` (None: as they are) for what runs inside."""
    if project is None:
        yield
        return
    check_visible(service, project)
    with acting_as(caller().in_project(project)):
        yield


Method = TypeVar("Method", bound=Callable[..., Any])


def in_project(method: Method) -> Method:
    """For the tree's methods that take a path: a path under projects/P/vms/ is the same
    path under vms/, served with the caller acting in P (ENOENT for a project they may
    not see)."""

    @functools.wraps(method)
    def wrapper(self: Any, path: Path, *args: Any) -> Any:  # self: fs.tree.Tree
        project, inner = split(path)
        if project is None:
            return method(self, path, *args)
        with acting_in(self.service, project):
            return method(self, inner, *args)

    return wrapper  # type: ignore[return-value]


def entries(service: Service, path: Path) -> list[str]:
    """The names in projects/ or projects/P."""
    if len(path) == 1:
        return service.projects_visible()
    check_visible(service, path[1])
    return list(PROJECT_ENTRIES)


def quota_text(project: dict[str, Any]) -> str:
    """`RESOURCE USED/LIMIT` lines from get_project's view (a limit of null: unlimited)."""
    quota, usage = project.get("quota") or {}, project.get("usage") or {}
    lines = []
    for resource in QUOTA_RESOURCES:
        limit = quota.get(resource)
        shown = "unlimited" if limit is None else str(limit)
        lines.append(f"{resource} {usage.get(resource, 0)}/{shown}\n")
    return "".join(lines)


def content(service: Service, path: Path) -> str:
    """The text of projects/P/quota (no other file lives directly under projects/)."""
    if len(path) != 3 or path[2] != "quota":
        raise errors.NotFound(f"no {'/'.join(path)!r} here")
    with acting_in(service, path[1]):
        return quota_text(service.get_project(path[1]))

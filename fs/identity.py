"""Who is asking the mount: a FUSE request's uid, gid and pid become a Principal.

The kernel tells the file system, with every request that names a path, the
caller's fs uid, fs gid and thread id (pyfuse3's RequestContext); nothing else
the caller says is trusted. Who that is, is decided here:

- uid 0, and the mount's own owner, are admins (the owner of a mount that is
  not root's is its single user, as before users existed).
- The map (`vmctl mount-map`, the store's unix_identities) maps the others:
  `user alice --as alice` makes the Unix user alice the appliance user alice
  (their role, their projects); `group vmops --role operator --project web`
  gives every member of vmops that role in that project. A Unix name that is
  a number is that uid or gid (for ids without a passwd or group entry).
  `vmctl serve --mount-group G` is an entry of its own: G is operator in the
  default project unless the map names G.
- The caller's groups are its fs gid and the supplementary groups the kernel
  holds for its thread, read from /proc/PID/status (`Groups:`). The thread
  may be gone by then, or its pid reused: the groups are taken only when that
  file's fs uid and fs gid are the request's, else the fs gid alone counts.
  What is left is a thread of the same uid and gid reusing the pid between
  the request and the read (pids are not reused that fast but by a fork
  storm): it could get that thread's groups, never another uid's.
- Several entries combine per project, the strongest role winning; admin
  anywhere is admin (hosts and images have no project). The user entry's
  projects come first, its first one being where `vms/` is; with groups
  alone, the project of the strongest role (by name on a tie).
- A uid no entry maps gets nothing: None here, EACCES for every request.

Caching: the map is read again at most every MAP_SECONDS (a change by
`vmctl mount-map` counts within that); Unix names resolve with pwd and grp
then too. A thread's groups are kept for GROUPS_SECONDS, for at most
GROUPS_CACHE threads (an `ls -l` asks once per file).
"""
from __future__ import annotations

import pwd
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from appliance.access.mountmap import unix_id
from appliance.access.principal import DEFAULT_PROJECT, ROLES, Principal, Role
from appliance.errors import NotFound
from appliance.store import Store

MAP_SECONDS = 2.0
GROUPS_SECONDS = 1.0
GROUPS_CACHE = 256
STATUS_MAX_BYTES = 16 << 10  # /proc/PID/status is ~1.5 kB; a bounded read all the same
STRENGTH = {Role.MONITOR: 0, Role.VIEWER: 1, Role.OPERATOR: 2, Role.ADMIN: 3}
SOURCE = "mount"


@dataclass(frozen=True)
class Grant:
    """What one entry of the map gives: a role in projects, and for a user entry, who."""

    role: Role
    projects: tuple[str, ...]
    user: str | None = None


def thread_groups(pid: int, uid: int, gid: int) -> frozenset[int]:
    """The supplementary groups of thread pid, if it is still the caller (fs uid and fs gid
    agree with the request's); empty otherwise."""
    if pid <= 0:  # 0: the caller is in a pid namespace the mount cannot see
        return frozenset()
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            text = f.read(STATUS_MAX_BYTES).decode("utf-8", "replace")
    except OSError:
        return frozenset()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    try:
        if int(fields["Uid"].split()[3]) != uid or int(fields["Gid"].split()[3]) != gid:
            return frozenset()
        return frozenset(int(g) for g in fields.get("Groups", "").split())
    except (KeyError, IndexError, ValueError):
        return frozenset()


def combine(grants: Iterable[Grant]) -> tuple[Role, str, dict[str, Role], str | None] | None:
    """(role, default project, role per project, appliance user) of several grants; None
    for none."""
    grants = list(grants)
    if not grants:
        return None
    user = next((g.user for g in grants if g.user is not None), None)
    best: dict[str, Role] = {}
    for grant in grants:
        for project in grant.projects:
            if project not in best or STRENGTH[grant.role] > STRENGTH[best[project]]:
                best[project] = grant.role
    if any(g.role == Role.ADMIN for g in grants):
        return Role.ADMIN, _first_project(grants, best), {}, user
    default = _first_project(grants, best)
    return best[default], default, best, user


def _first_project(grants: list[Grant], best: dict[str, Role]) -> str:
    for grant in grants:
        if grant.user is not None and grant.projects:
            return grant.projects[0]
    if not best:
        return DEFAULT_PROJECT
    return min(best, key=lambda p: (-STRENGTH[best[p]], p))


class Identities:
    """The map of Unix users and groups, resolved and cached (see the module docstring)."""

    def __init__(self, store: Store, owner_uid: int, mount_group: int | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.store = store
        self.owner_uid = owner_uid
        self.mount_group = mount_group
        self.clock = clock
        self._loaded = float("-inf")  # never: the first request reads the map
        self._users: dict[int, list[Grant]] = {}
        self._groups: dict[int, list[Grant]] = {}
        self._names: dict[int, str] = {}  # uid -> Unix name, emptied with each reload
        # The admins' principals, made once: root's requests are the hot path. Named
        # unix:NAME, as group members are: not an appliance user's name (a user named
        # root would be the locker of the VMs root locked through the mount).
        self._admins = {uid: Principal(user=f"unix:{self._name(uid)}", role=Role.ADMIN,
                                       uid=uid, source=SOURCE) for uid in {0, owner_uid}}
        self._thread_groups: OrderedDict[tuple[int, int, int], tuple[float, frozenset[int]]] = \
            OrderedDict()

    # -- the map ----------------------------------------------------------------------------
    def _refresh(self) -> None:
        now = self.clock()
        if now - self._loaded < MAP_SECONDS:
            return
        users: dict[int, list[Grant]] = {}
        groups: dict[int, list[Grant]] = {}
        named_groups: set[int] = set()
        for row in self.store.list_unix_identities():
            kind = row["kind"]
            found = unix_id(row["unix_name"], kind)
            if found is None:
                continue
            if kind == "user":
                grant = self._user_grant(row["user"])
                if grant is not None:
                    users.setdefault(found, []).append(grant)
            elif kind == "group" and row["role"] in ROLES:
                groups.setdefault(found, []).append(Grant(Role(row["role"]), (row["project"],)))
                named_groups.add(found)
        if self.mount_group is not None and self.mount_group not in named_groups:
            groups.setdefault(self.mount_group, []).append(
                Grant(Role.OPERATOR, (DEFAULT_PROJECT,)))
        self._users, self._groups, self._loaded = users, groups, now
        self._names.clear()

    def _name(self, uid: int) -> str:
        """The Unix name of uid (the uid as text when it has none)."""
        if uid not in self._names:
            if len(self._names) >= GROUPS_CACHE:
                self._names.clear()
            try:
                self._names[uid] = pwd.getpwuid(uid).pw_name
            except KeyError:
                self._names[uid] = str(uid)
        return self._names[uid]

    def _user_grant(self, name: str) -> Grant | None:
        try:
            user = self.store.get_user(name)
        except NotFound:
            return None
        if user["disabled"] or user["role"] not in ROLES:
            return None
        return Grant(Role(user["role"]), tuple(user["projects"]) or (DEFAULT_PROJECT,), name)

    def _groups_of(self, uid: int, gid: int, pid: int) -> frozenset[int]:
        key, now = (uid, gid, pid), self.clock()
        cached = self._thread_groups.get(key)
        if cached is not None and now - cached[0] < GROUPS_SECONDS:
            return cached[1]
        found = thread_groups(pid, uid, gid) | {gid}
        self._thread_groups[key] = (now, found)
        self._thread_groups.move_to_end(key)
        while len(self._thread_groups) > GROUPS_CACHE:
            self._thread_groups.popitem(last=False)
        return found

    # -- a request's caller -------------------------------------------------------------------
    def principal(self, uid: int, gid: int, pid: int) -> Principal | None:
        """The caller of a request; None: no entry maps them (nothing is theirs)."""
        admin = self._admins.get(uid)
        if admin is not None:
            return admin
        self._refresh()
        grants = list(self._users.get(uid, ()))
        if self._groups:
            for group in sorted(self._groups_of(uid, gid, pid)):
                grants += self._groups.get(group, ())
        combined = combine(grants)
        if combined is None:
            return None
        role, project, roles, user = combined
        projects = (project, *sorted(set(roles) - {project}))
        return Principal(user=user or f"unix:{self._name(uid)}", role=role, projects=projects,
                         uid=uid, source=SOURCE, project=project,
                         project_roles=tuple(sorted(roles.items())))

    def anyone(self) -> bool:
        """Whether the map lets anyone but the admins in."""
        self._refresh()
        return bool(self._users or self._groups)

"""The mount's map of Unix users and groups (`vmctl mount-map`), checked before
it is stored: fs/identity.py reads it per request (cached for seconds).

An entry is either `user NAME -> an appliance user` (their role and projects)
or `group NAME -> a role in a project`. NAME is a Unix name as useradd and
groupadd take them, or a number (a uid or gid with no passwd or group entry).
A name this machine does not know is stored all the same (the user may be
made later; nothing matches it until then) and said so.

The map is the admin's on the appliance's machine, like the store it lives in:
`vmctl mount-map` writes the store directly, as root, not through REST (the
Unix names are this machine's, not the API client's).
"""
from __future__ import annotations

import grp
import pwd
import re
from typing import Any

from appliance.access.principal import ADMIN_EVENTS, ROLES, Role
from appliance.errors import Invalid, NotFound
from appliance.store import Store

KINDS = ("user", "group")
# useradd's default rule (NAME_REGEX) with its optional trailing $, or a number.
UNIX_NAME = re.compile(r"(?:[a-z_][a-z0-9_.-]{0,30}\$?|[0-9]{1,10})")
MAX_ID = 2**32 - 2  # (uid_t)-1 is "no id"


def unix_id(name: str, kind: str) -> int | None:
    """The uid (kind "user") or gid ("group") of a Unix name; a number is itself; None for
    a name this machine does not know."""
    if name.isdigit():
        return int(name)
    try:
        return pwd.getpwnam(name).pw_uid if kind == "user" else grp.getgrnam(name).gr_gid
    except KeyError:
        return None


def check_unix_name(name: str) -> str:
    if not UNIX_NAME.fullmatch(name) or (name.isdigit() and int(name) > MAX_ID):
        raise Invalid("must be a Unix user or group name (useradd's rule) or a number",
                      "unix_name")
    return name


def set_user(store: Store, unix_name: str, user: str) -> dict[str, Any]:
    """user UNIX_NAME -> the appliance user `user`."""
    check_unix_name(unix_name)
    store.get_user(user)  # NotFound: no such appliance user
    row = {"kind": "user", "unix_name": unix_name, "user": user, "role": None, "project": None}
    with store.transaction():
        store.set_unix_identity(row)
        store.add_event("mount-map", f"Unix user {unix_name} is the appliance user {user} "
                                     "in the mount", project=ADMIN_EVENTS)
    return _view(row)


def set_group(store: Store, unix_name: str, role: str, project: str) -> dict[str, Any]:
    """group UNIX_NAME -> its members have `role` in `project`."""
    check_unix_name(unix_name)
    if role not in ROLES or role == Role.MONITOR:
        choices = ", ".join(r for r in ROLES if r != Role.MONITOR)
        raise Invalid(f"must be one of {choices}", "role")
    if not store.project_exists(project):
        raise NotFound(f"no project named {project!r}", "project")
    row = {"kind": "group", "unix_name": unix_name, "user": None, "role": role,
           "project": project}
    with store.transaction():
        store.set_unix_identity(row)
        store.add_event("mount-map", f"members of the Unix group {unix_name} are {role} in "
                                     f"project {project} in the mount", project=ADMIN_EVENTS)
    return _view(row)


def remove(store: Store, kind: str, unix_name: str) -> None:
    if kind not in KINDS:
        raise Invalid(f"must be one of {', '.join(KINDS)}", "kind")
    if not any(r["kind"] == kind and r["unix_name"] == unix_name
               for r in store.list_unix_identities()):
        raise NotFound(f"the map has no {kind} {unix_name!r}", "unix_name")
    with store.transaction():
        store.delete_unix_identity(kind, unix_name)
        store.add_event("mount-map", f"the Unix {kind} {unix_name} is off the mount's map",
                        project=ADMIN_EVENTS)


def entries(store: Store) -> list[dict[str, Any]]:
    return [_view(row) for row in store.list_unix_identities()]


def _view(row: dict[str, Any]) -> dict[str, Any]:
    """The entry, and whether this machine knows its Unix name (`known`)."""
    return {**{k: row.get(k) for k in ("kind", "unix_name", "user", "role", "project")},
            "known": unix_id(row["unix_name"], row["kind"]) is not None}

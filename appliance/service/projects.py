"""Projects: the VMs, server groups and users of a team, and their quota
(appliance/quotas.py: what counts, how a create or a change is checked)."""

from __future__ import annotations

import unicodedata
from typing import Any

from appliance import quotas
from appliance.access import DEFAULT_PROJECT, caller
from appliance.access.policy import Action, check
from appliance.access.principal import ADMIN_EVENTS
from appliance.errors import Conflict, Invalid, NotFound
from appliance.model.backup_policy import validate_policy
from appliance.model.values import validate_name
from appliance.service.base import ServiceBase
from appliance.store import Row

MAX_DESCRIPTION = 256
CREATE_FIELDS = ("name", "description", "quota", "backup")
UPDATE_FIELDS = ("description", "quota", "backup")


def validate_description(value: Any) -> str:
    """Shown in tables and terminals: bounded, and no control characters (an
    escape sequence would reach the reader's terminal)."""
    if not isinstance(value, str):
        raise Invalid("must be a string", "description")
    if len(value) > MAX_DESCRIPTION:
        raise Invalid(f"at most {MAX_DESCRIPTION} characters", "description")
    if any(unicodedata.category(c) in ("Cc", "Cf") for c in value):
        raise Invalid("must not contain control or format characters", "description")
    return value


def _known_fields(body: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", None)
    unknown = set(body) - set(known)
    if unknown:
        raise Invalid(f"unknown field; known fields are {', '.join(known)}",
                      sorted(map(str, unknown))[0])
    return body


def quota_of(row: Row) -> quotas.Quota:
    """The project's limits, every resource named (null: unlimited)."""
    stored = row.get("quota") or {}
    return {r: stored.get(r) for r in quotas.RESOURCES}


class Projects(ServiceBase):
    def project_view(self, row: Row, figures: tuple[int, int, int, int] | None = None
                     ) -> dict[str, Any]:
        vms, cpus, memory, disk = figures or (0, 0, 0, 0)
        usage = quotas.usage_of({"vms": vms, "cpus": cpus, "memory_mib": memory,
                                 "disk_bytes": disk})
        return {"name": row["name"], "description": row["description"] or "",
                "created": row["created"], "quota": quota_of(row), "usage": usage,
                "backup": row.get("backup")}

    def _visible_project(self, name: str) -> Row:
        """The project, if the caller may see it; another's is not found (404), as a
        missing one is, so that its existence is not revealed."""
        if not caller().may_see(name):
            raise NotFound(f"no project named {name!r}", "project")
        return self.store.get_project(name)

    def list_projects(self) -> list[dict[str, Any]]:
        """Every project for an admin; the caller's own for anyone else."""
        principal = caller()
        usage = self.store.usage_by_project()
        return [self.project_view(row, usage.get(row["name"]))
                for row in self.store.list_projects() if principal.may_see(row["name"])]

    def get_project(self, name: str) -> dict[str, Any]:
        """{name, description, created, quota: {vms, cpus, memory_mib, disk_gib}
        (int, or None for unlimited), usage: {the same, ints}}."""
        row = self._visible_project(name)
        return self.project_view(row, self.store.usage_by_project(name).get(name))

    def create_project(self, body: Any) -> dict[str, Any]:
        check(caller(), Action.ADMIN)
        body = _known_fields(body, CREATE_FIELDS)
        name = validate_name(body.get("name"), "name")
        description = validate_description(body.get("description", ""))
        asked = body.get("quota")
        quota = quotas.parse_quota({} if asked is None else asked)
        backup = validate_policy(body.get("backup"))
        with self.store.transaction():
            if self.store.project_exists(name):
                raise Conflict(f"a project named {name!r} exists", "name")
            self.store.insert_project({"name": name, "description": description,
                                       "quota": quota, "backup": backup,
                                       "created": self.clock()})
            self.store.add_event("project-created", f"project {name} created{_limits(quota)}",
                                 project=ADMIN_EVENTS)
        return self.get_project(name)

    def update_project(self, name: str, body: Any) -> dict[str, Any]:
        """Description, quota (merged: a resource not named keeps its limit,
        null makes it unlimited) and backup policy (replaced whole; null: none).
        A limit below the usage is accepted: it blocks creates and growth until
        the usage is under it again."""
        check(caller(), Action.ADMIN)
        body = _known_fields(body, UPDATE_FIELDS)
        changes: dict[str, Any] = {}
        if "description" in body:
            changes["description"] = validate_description(body["description"])
        if "backup" in body:
            # The VMs without a policy of their own are backed up by this one (when it
            # has a schedule) from the controller's next pass.
            changes["backup"] = validate_policy(body["backup"])
        with self.store.transaction():
            row = self._visible_project(name)
            if "quota" in body:
                changes["quota"] = quotas.parse_quota(body["quota"], quota_of(row))
            if changes:
                self.store.update_project(name, **changes)
                said = f"{', '.join(sorted(changes))} changed"
                said += _limits(changes["quota"]) if "quota" in changes else ""
                self.store.add_event("project-updated", f"project {name}: {said}",
                                     project=ADMIN_EVENTS)
        return self.get_project(name)

    def delete_project(self, name: str) -> None:
        """Only an empty project: no VMs (even one being deleted), no server groups,
        no user in it, no Unix identity mapped to it; never the default one."""
        check(caller(), Action.ADMIN)
        with self.store.transaction():
            self._visible_project(name)
            if name == DEFAULT_PROJECT:
                raise Conflict("the default project cannot be deleted", "name")
            left = {what: names for what, names in self.store.project_members(name).items()
                    if names}
            if left:
                said = "; ".join(f"{what}: {', '.join(names)}" for what, names in left.items())
                raise Conflict(f"project {name} is not empty ({said})", "name")
            self.store.delete_project(name)
            self.store.add_event("project-deleted", f"project {name} deleted",
                                 project=ADMIN_EVENTS)


def _limits(quota: quotas.Quota) -> str:
    limited = [f"{r} {v}" for r, v in quota.items() if v is not None]
    return f" (quota: {', '.join(limited)})" if limited else ""

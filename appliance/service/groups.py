"""Server groups (Nova's): a name and a policy; VMs join one in their spec.
A group belongs to a project, as its members do: the caller's project's
groups alone are seen (another project's group of the same name is another
group)."""

from __future__ import annotations

from typing import Any

from appliance import spec as specs
from appliance.errors import Conflict, Invalid
from appliance.model import GROUP_POLICIES, OpKind
from appliance.model.firewall import validate_rules
from appliance.service.base import ServiceBase
from appliance.store import Row


class Groups(ServiceBase):
    def group_view(self, group: Row) -> dict[str, Any]:
        members = [
            {"name": n, "host": h}
            for n, h in self.store.group_members(group["project"], group["name"])
        ]
        return {**group, "members": members}

    def list_groups(self) -> list[dict[str, Any]]:
        return [self.group_view(g) for g in self.store.list_groups(self._project())]

    def get_group(self, name: str) -> dict[str, Any]:
        return self.group_view(self.store.get_group(self._project(), name))

    def create_group(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = set(body) - {"name", "policy", "firewall"}
        if unknown:
            raise Invalid("unknown field; known fields are name, policy, firewall",
                          sorted(unknown)[0])
        name = specs.validate_name(body.get("name"), "name")
        if body.get("policy") not in GROUP_POLICIES:
            raise Invalid(f"must be one of {', '.join(GROUP_POLICIES)}", "policy")
        rules = validate_rules(body.get("firewall") or [])  # issue 15: the members' rules
        project = self._project()
        with self.store.transaction():
            if self.store.group_exists(project, name):
                raise Conflict(f"a server group named {name!r} exists", "name")
            row = {"project": project, "name": name, "policy": body["policy"], "firewall": rules}
            self.store.insert_group({**row, "created": self.clock()})
            self.store.add_event(
                "group-created", f"server group {name} ({body['policy']}) created", project=project
            )
        return self.get_group(name)

    def update_group(self, name: str, body: Any) -> dict[str, Any]:
        """PATCH: a group's firewall rules (its policy and name stay), which each member's
        network filter takes at once (an update operation per member: running guests
        keep running)."""
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = set(body) - {"firewall"}
        if unknown:
            raise Invalid("unknown field; a server group changes only its firewall",
                          sorted(unknown)[0])
        rules = validate_rules(body.get("firewall") or [])
        project = self._project()
        with self.store.transaction():
            group = self.get_group(name)
            if group["firewall"] == rules:
                return group
            self.store.set_group_firewall(project, name, rules)
            for member, _host in self.store.group_members(project, name):
                row = self.store.get_vm(member, project, with_xml=False)
                self._new_op(row, OpKind.UPDATE)
            self.store.add_event("group-updated", f"server group {name}: firewall rules "
                                 f"changed ({len(rules)} rules)", project=project)
        self.notify()
        return self.get_group(name)

    def delete_group(self, name: str) -> None:
        project = self._project()
        with self.store.transaction():
            group = self.get_group(name)
            if group["members"]:
                names = ", ".join(m["name"] for m in group["members"][:5])
                raise Conflict(f"server group {name} still has members ({names})", "name")
            self.store.delete_group(project, name)
            self.store.add_event("group-deleted", f"server group {name} deleted", project=project)

"""Replica pools (KubeVirt's VirtualMachinePool): N VMs NAME-0 ... NAME-(N-1) of
one template, kept by the pool controller (appliance/controller/pools.py).

A request records what the pool should be (its template and revision, replicas,
paused) and nothing else; the controller converges the members to it: it
creates missing ordinals (scale-up, heal) through the same path as a create
(checks, quota, placement, events), deletes the highest ordinals beyond the
replicas (with force: stopped first), and rolls a template change through the
members one at a time. Rules here:

- the template is a VM create's body without a name (a named template's
  "template": NAME included), validated as the spec of a member; its `image`
  never changes (as a VM's: the members keep their disks; make a new pool);
- a scale-up is checked against the project's quota for all the members it
  adds, at once (refused whole: nothing changes); each member's create is
  checked again by the controller, in its own transaction;
- a name NAME-N taken by a VM that is not the pool's is skipped, never taken
  over (KubeVirt's calculateNewVMNames), and the status names it;
- deleting a pool deletes its members (forced), as KubeVirt's owner references do.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from appliance import quotas
from appliance import spec as specs
from appliance.errors import Conflict, Invalid, NotFound
from appliance.model import DesiredState
from appliance.service import raw_xml
from appliance.service.base import ServiceBase, is_ready
from appliance.service.vms import initial_state
from appliance.store import Row

MAX_REPLICAS = 100
# Pools per project: the pool controller reads every pool at each pass of the loop,
# and each holds a template of up to max_body_bytes, so their number is bounded.
MAX_POOLS = 100
# NAME-N must stay a DNS label (63) for any ordinal the pool may reach.
MAX_POOL_NAME = 56
POOL_FIELDS = ("name", "template", "replicas", "paused", "group")
# What a member's template may not say: the pool names, places and powers its members.
NOT_IN_TEMPLATE = ("name", "state", "host")


def member_name(pool: str, ordinal: int) -> str:
    return f"{pool}-{ordinal}"


def plan_ordinals(replicas: int, taken: set[int]) -> tuple[list[int], list[int]]:
    """The ordinals the members have (the first `replicas` not taken by a VM that is
    not the pool's), and those skipped on the way."""
    wanted: list[int] = []
    skipped: list[int] = []
    ordinal = 0
    while len(wanted) < replicas:
        (skipped if ordinal in taken else wanted).append(ordinal)
        ordinal += 1
    return wanted, skipped


def parse_replicas(value: Any) -> int:
    if isinstance(value, str) and value.strip().isascii() and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_REPLICAS:
        raise Invalid(f"must be a whole number from 0 to {MAX_REPLICAS}", "replicas")
    return value


def parse_paused(value: Any) -> bool:
    if isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0"):
        return value.strip().lower() in ("true", "1")
    if not isinstance(value, bool):
        raise Invalid("must be true or false", "paused")
    return value


def member_spec(pool: Row, name: str) -> dict[str, Any]:
    """The spec a member of the pool has (at the pool's revision)."""
    spec = {**pool["template"], "name": name}
    if pool.get("group"):
        spec["group"] = pool["group"]
    return specs.validate(spec)


class Pools(ServiceBase):
    if TYPE_CHECKING:  # the vms' and state's parts, beside this one in Service
        def _record_new_vm(self, spec: dict[str, Any], initial: DesiredState,
                           wanted_host: str | None, source: dict[str, Any] | None = None,
                           origin: str = "") -> Row: ...
        def template_for_create(self, name: Any) -> tuple[dict[str, Any], str, int]: ...
        def _check_group(self, spec: dict[str, Any], project: str) -> None: ...
        def update_vm(self, name: str, patch: Any, if_match: int | None = None,
                      replace: bool = False) -> tuple[dict[str, Any], Row | None]: ...
        def delete_vm(self, name: str, force: bool = False,
                      if_match: int | None = None) -> Row: ...

    # -- views -------------------------------------------------------------------------
    def pool_status(self, pool: Row) -> dict[str, Any]:
        """KubeVirt's status (replicas, readyReplicas, updatedReplicas) with the members."""
        members = [m for m in self.store.pool_members(pool["id"])
                   if m["desired_state"] != DesiredState.DELETED]
        skipped = self._skipped(pool)
        rollout = pool["rollout"]
        rolling = next((m["name"] for m in members if rollout and m["id"] == rollout["vm_id"]),
                       None)
        return {
            "replicas": pool["replicas"],
            "current_replicas": len(members),
            "ready_replicas": sum(1 for m in members if is_ready(m)),
            "updated_replicas": sum(1 for m in members if m["pool_revision"] == pool["revision"]),
            "revision": pool["revision"],
            "paused": pool["paused"],
            "rollout": {"member": rolling, "phase": rollout["phase"]} if rolling else None,
            "skipped": skipped,
            "message": pool["message"],
            "members": [{"name": m["name"], "ordinal": m["pool_ordinal"],
                         "state": self._observed(m), "ready": is_ready(m),
                         "revision": m["pool_revision"], "host": m["host"]} for m in members],
        }

    def _skipped(self, pool: Row) -> list[str]:
        return [member_name(pool["name"], n) for n in plan_ordinals(
            pool["replicas"], self.taken_ordinals(pool))[1]]

    def taken_ordinals(self, pool: Row) -> set[int]:
        """The ordinals N whose name NAME-N a VM not of the pool holds."""
        taken = self.store.names_not_in_pool(pool["project"], pool["name"] + "-", pool["id"])
        return {int(suffix) for n in taken
                if (suffix := n[len(pool["name"]) + 1:]).isascii() and suffix.isdigit()
                and n == member_name(pool["name"], int(suffix))}

    def pool_view(self, pool: Row) -> dict[str, Any]:
        return {key: pool[key] for key in (
            "id", "name", "project", "template", "revision", "replicas", "paused", "group",
            "created", "updated")} | {"status": self.pool_status(pool)}

    def pool_row(self, name: str) -> Row:
        return self.store.get_pool(self._project(), name)

    def list_pools(self) -> list[dict[str, Any]]:
        return [self.pool_view(p) for p in self.store.list_pools(self._project())]

    def get_pool(self, name: str) -> dict[str, Any]:
        return self.pool_view(self.pool_row(name))

    # -- changes -----------------------------------------------------------------------
    def create_pool(self, body: Any) -> dict[str, Any]:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = set(body) - set(POOL_FIELDS)
        if unknown:
            raise Invalid(f"unknown field; known fields are {', '.join(POOL_FIELDS)}",
                          sorted(map(str, unknown))[0])
        name = specs.validate_name(body.get("name"), "name")
        if len(name) > MAX_POOL_NAME:
            raise Invalid(f"at most {MAX_POOL_NAME} characters (members are NAME-N)", "name")
        project = self._project()
        group = body.get("group")
        if group is not None:
            specs.validate_name(group, "group")
            self._check_group({"group": group}, project)
        template = self._template_of(body.get("template", {}), name, group)
        replicas = parse_replicas(body.get("replicas", 0))
        paused = parse_paused(body.get("paused", False))
        now = self.clock()
        with self.store.transaction():
            if self.store.pool_exists(project, name):
                raise Conflict(f"a pool named {name!r} exists", "name")
            if self.store.count_pools(project) >= MAX_POOLS:
                raise Conflict(f"at most {MAX_POOLS} pools per project", "name")
            self._check_pool_quota(project, template, replicas)
            row = {"id": str(self.uuidgen()), "project": project, "name": name,
                   "template": template, "revision": 1, "replicas": replicas, "paused": paused,
                   "group": group, "created": now, "updated": now, "rollout": None,
                   "message": ""}
            self.store.insert_pool(row)
            self.store.add_event("pool-created", f"pool {name} created with {replicas} "
                                 f"replica{'s' if replicas != 1 else ''}", project=project)
        self.notify()
        return self.get_pool(name)

    def _template_of(self, raw: Any, pool: str, group: str | None,
                     old: dict[str, Any] | None = None) -> dict[str, Any]:
        """The members' spec without a name, normalised: a VM create's body (or a named
        template's name, as {"template": NAME}), checked as the spec of a member;
        `old`: the pool's template before a change (its image stays).

        xml_patches are an admin's to add, change or remove here as in a VM's spec:
        the pool controller creates and updates the members as SYSTEM, so a
        patch an operator wrote here would reach QEMU (root) unchecked."""
        if isinstance(raw, str):
            raw = {"template": raw}
        if not isinstance(raw, dict):
            raise Invalid("must be a VM's spec without a name, or a template's name", "template")
        for key in NOT_IN_TEMPLATE:
            if key in raw:
                raise Invalid("the pool names, places and powers its members: "
                              "not in its template", f"template.{key}")
        try:
            body = dict(raw)
            base, _, _ = self.template_for_create(body.pop("template", None))
            merged = {**base, **body}  # a named template's fields, copied: a later change
            # of that template reaches the pool only by a new write of template.json
            spec = member_spec({"template": merged, "group": group}, member_name(pool, 0))
        except Invalid as err:
            raise Invalid(err.reason, f"template.{err.field}" if err.field else "template") \
                from None
        raw_xml.admins_only(spec, old, "template.xml_patches")
        if (spec.get("cloud_init") or {}).get("keys"):
            # SSH keys are a user's, copied at a create; members are made by the controller.
            raise Invalid("a pool's members are created by the appliance, not by a user whose "
                          "SSH keys they could get: put the public keys in user_data "
                          "(ssh_authorized_keys)", "template.cloud_init.keys")
        if old is not None and spec["image"] != old["image"]:
            raise Invalid("cannot change in a pool's template (members keep their disks;"
                          " make a new pool)", "template.image")
        if not self.store.image_exists(spec["image"]):
            raise NotFound(f"no image named {spec['image']!r}", "template.image")
        spec.pop("name")
        if len(json.dumps(spec)) > self.config.max_body_bytes:
            raise Invalid("too large", "template")
        return spec

    def _check_pool_quota(self, project: str, template: dict[str, Any], count: int) -> None:
        if count > 0:
            quotas.check(self.store, project, self.store.get_project(project)["quota"],
                         {**template, "name": "x"}, count=count)

    def update_pool(self, name: str, patch: Any) -> dict[str, Any]:
        """PATCH: template, replicas, paused (the name and group stay)."""
        if not isinstance(patch, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = set(patch) - {"template", "replicas", "paused"}
        if unknown:
            raise Invalid("unknown field; a pool's template, replicas and paused change",
                          sorted(map(str, unknown))[0])
        with self.store.transaction():
            pool = self.pool_row(name)
            changes: dict[str, Any] = {}
            said: list[str] = []
            if "template" in patch:
                template = self._template_of(patch["template"], name, pool["group"],
                                             old=pool["template"])
                if template != pool["template"]:
                    changes |= {"template": template, "revision": pool["revision"] + 1}
                    said.append(f"template changed (revision {pool['revision'] + 1})")
            if "replicas" in patch:
                replicas = parse_replicas(patch["replicas"])
                alive = sum(1 for m in self.store.pool_members(pool["id"])
                            if m["desired_state"] != DesiredState.DELETED)
                self._check_pool_quota(pool["project"], changes.get("template") or pool["template"],
                                       replicas - alive)
                if replicas != pool["replicas"]:
                    changes["replicas"] = replicas
                    said.append(f"scaled from {pool['replicas']} to {replicas}")
            if "paused" in patch:
                paused = parse_paused(patch["paused"])
                if paused != pool["paused"]:
                    changes["paused"] = paused
                    said.append("roll-out paused" if paused else "roll-out resumed")
            if changes:
                self.store.update_pool(pool["id"], **changes)
                self.store.add_event("pool-updated", f"pool {name}: {'; '.join(said)}",
                                     project=pool["project"])
        if changes:
            self.notify()
        return self.get_pool(name)

    def delete_pool(self, name: str) -> list[Row]:
        """The pool and its members (each deleted with force: stopped first), in one
        transaction; the members' delete operations, to wait for."""
        with self.store.transaction():
            pool = self.pool_row(name)
            ops = [self.delete_vm(m["name"], force=True)
                   for m in self.store.pool_members(pool["id"])]
            self.store.delete_pool(pool["id"])
            self.store.add_event("pool-deleted", f"pool {name} deleted with its "
                                 f"{len(ops)} member{'s' if len(ops) != 1 else ''}",
                                 project=pool["project"])
        self.notify()
        return ops

    # -- what the pool controller asks (acting in the pool's project) -------------------------
    def add_pool_member(self, pool: Row, ordinal: int) -> Row:
        """Create the member NAME-ordinal at the pool's revision: a create's checks and
        records, and the membership, in one transaction; its CREATE operation."""
        spec = member_spec(pool, member_name(pool["name"], ordinal))
        with self.store.transaction():
            op = self._record_new_vm(spec, initial_state(None, spec), None,
                                     origin=f" by pool {pool['name']}")
            self.store.update_vm(op["vm_id"], bump=False, pool=pool["id"], pool_ordinal=ordinal,
                                 pool_revision=pool["revision"])
        self.notify()
        return op

    def apply_pool_template(self, pool: Row, member: Row) -> Row | None:
        """Bring a (stopped) member's spec to the pool's template; its UPDATE operation."""
        with self.store.transaction():
            _, op = self.update_vm(member["name"], member_spec(pool, member["name"]),
                                   replace=True)
            self.store.update_vm(member["id"], bump=False, pool_revision=pool["revision"])
        return op

"""VMs: create (from a template: service/templates.py), change, rename, delete and show
them; consoles. The checks against the rest of the store (fixed IP, rename, group,
quota, the claim on the host): service/vm_checks.py."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from appliance import netrules, placement
from appliance import spec as specs
from appliance.errors import Conflict, Invalid, NotFound
from appliance.gcpause import collector_paused
from appliance.metadata import reach
from appliance.model import (
    ACTIVE_STATES,
    HOTPLUG_FIELDS,
    LIVE_FIELDS,
    DesiredState,
    OpKind,
    RunStrategy,
    VMState,
)
from appliance.model.hotplug import pending_fields, restart_message
from appliance.service import raw_xml
from appliance.service.base import lock_of
from appliance.service.disks import check_disk_changes, check_media
from appliance.service.keys import Keys
from appliance.service.networks import Networks
from appliance.service.templates import Templates
from appliance.service.vm_checks import VMChecks
from appliance.store import Row

T = TypeVar("T")


def initial_state(asked: Any, spec: dict[str, Any]) -> DesiredState:
    """The desired state a create records (the body's `state`, else the run
    strategy's), and the run strategy made to agree with it (in `spec`)."""
    if asked == DesiredState.RUNNING and spec["run_strategy"] == RunStrategy.HALTED:
        spec["run_strategy"] = RunStrategy.ALWAYS.value
    if asked == DesiredState.STOPPED and spec["run_strategy"] == RunStrategy.ALWAYS:
        spec["run_strategy"] = RunStrategy.HALTED.value
    if asked is None:
        starts = spec["run_strategy"] in (RunStrategy.ALWAYS, RunStrategy.RERUN_ON_FAILURE)
        return DesiredState.RUNNING if starts else DesiredState.STOPPED
    return DesiredState(asked)


def template_of(row: Row) -> dict[str, Any] | None:
    """The template and revision the VM was made from (None: a clone, a restore, or a
    VM from before templates were recorded); a later change of it never reaches the VM."""
    if not row.get("template"):
        return None
    return {"name": row["template"], "revision": row.get("template_revision")}


def key_names(spec: dict[str, Any]) -> list[str]:
    return (spec.get("cloud_init") or {}).get("keys") or []


class VMs(Templates, Networks, Keys, VMChecks):  # Keys: the SSH keys a spec names (issue 15)
    # -- views -----------------------------------------------------------------
    def vm_view(self, row: Row) -> dict[str, Any]:
        return {
            "id": row["id"],
            "name": row["name"],
            "project": row["project"],
            "state": self._observed(row),
            "desired_state": row["desired_state"],
            "reason": row["observed_reason"] or "",
            "host": row["host"],
            "generation": row["generation"],
            "spec": row["spec"],
            "template": template_of(row),
            "restart_required": row["restart_required"],
            "pending_changes": self._pending(row),
            "ready": self._ready(row),
            "created": row["created"],
            "updated": row["updated"],
            "lock": lock_of(row),
        }

    def list_vms(
        self,
        state: str | None = None,
        label: str | None = None,
        host: str | None = None,
        all_projects: bool = False,
    ) -> list[dict[str, Any]]:
        """The caller's project's VMs (every project's, for an admin's
        all_projects: each view names its project)."""
        out = []
        key, _, value = (label or "").partition("=")
        project = self._listed_project(all_projects)
        with collector_paused():  # ~40 objects per VM, all kept: see appliance/gcpause.py
            for row in self.store.list_vms(with_xml=False, project=project):
                if state and self._observed(row) != state:
                    continue
                if host and row["host"] != host:
                    continue
                if label:
                    labels = row["spec"]["labels"]
                    if key not in labels or (value and labels[key] != value):
                        continue
                out.append(self.vm_view(row))
        return out

    def get_vm(self, name: str) -> dict[str, Any]:
        return self.vm_view(self.vm_row(name, with_xml=False))  # the view has no XML

    def rendered_vm(self, name: str, kind: str, render: Callable[[dict[str, Any]], T]
                    ) -> tuple[T, int]:
        """render(get_vm(name)) and the VM's generation, kept per thread while nothing was
        committed (store.vm_derived): the view is made of the row alone, so an unchanged
        row renders the same. `kind` names the rendering (one render per kind). GET
        /v1/vms/NAME, a client polling its VM, then neither decodes the row nor builds
        and writes its view again."""
        def made(row: Row) -> tuple[T, int]:
            return render(self.vm_view(row)), row["generation"]

        return self.kept_of_vm(name, f"view:{kind}", made)

    # -- changes -----------------------------------------------------------------
    def create_vm(self, body: Any) -> tuple[dict[str, Any], Row]:
        """Validate, then record the VM and its create operation in one transaction."""
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        body = dict(body)
        asked = body.pop("state", None)
        if asked not in (None, DesiredState.RUNNING, DesiredState.STOPPED):
            raise Invalid("must be running or stopped", "state")
        wanted_host = body.pop("host", None)
        if wanted_host is not None:
            specs.validate_name(wanted_host, "host")
        # The template's fields (the default's under them), then the body's.
        base, template, revision = self.template_for_create(body.pop("template", None))
        if body.get("networks") and body.get("network") is None:
            # The body's networks alone is the whole list of NICs (model/nics.py).
            base = {key: value for key, value in base.items() if key != "network"}
        spec = specs.validate({**base, **body})
        specs.validate_vm_name(spec["name"])
        op = self._record_new_vm(spec, initial_state(asked, spec), wanted_host,
                                 template=(template, revision))
        self.notify()
        return self.get_vm(spec["name"]), op

    def _record_new_vm(self, spec: dict[str, Any], initial: DesiredState, wanted_host: str | None,
                       source: dict[str, Any] | None = None, origin: str = "",
                       template: tuple[str, int] | None = None,
                       vm_id: str | None = None,
                       public_keys: dict[str, str] | None = None) -> Row:
        """The checks of a create (image, name, fixed IP, ports, group, quota,
        placement) and its records (the VM, its events, its CREATE operation) in
        one transaction. `source`: where its disks come from (a clone, a
        restore: service/restores.py), in the operation's params; `origin` says
        so in the created event; `template`: the name and revision it was made
        from (None: a clone or a restore, made from another VM's spec); `vm_id`: an
        adopted domain's UUID (service/adoption.py), else a new one; `public_keys`: the
        SSH keys' copies (None: the caller's keys that cloud_init.keys names)."""
        vm_id = vm_id or str(self.uuidgen())
        now = self.clock()
        if public_keys is None:  # issue 15: copies of the caller's SSH keys (a clone: its source's)
            public_keys = self.vm_public_keys(spec)
        patched = raw_xml.check(self.config, spec, None, vm_id, None)  # admins only; applies
        with self.store.transaction():
            self.store.get_image(spec["image"])  # NotFound names the field
            check_media(self.store, spec)
            if self.store.vm_exists(spec["name"], self._project()):
                raise Conflict(f"a VM named {spec['name']!r} exists", "name")
            if not self._check_network(spec, self._project(), vm_id):
                self._check_fixed_ip(spec, vm_id)  # a libvirt network the appliance does not manage
            netrules.check_forward_ports(
                spec, None, self.config.allow_privileged_ports, self.config.listen
            )
            mac = netrules.mac_for_new_vm(self.store, spec, vm_id)  # in this transaction: no race
            netrules.fill_nic_macs(self.store, spec, vm_id, mac)  # further NICs (networks)
            self._check_nics(spec, self._project(), vm_id)
            self._check_group(spec, self._project())
            self._check_quota(self._project(), spec)  # in this transaction: no overshoot
            if wanted_host is not None:
                self.store.get_host(wanted_host)
            self._check_metadata_reach(spec, wanted_host)  # then placed only where it is served
            claims = placement.claims_cpu_ram(
                {"desired_state": initial, "observed_state": VMState.PROVISIONING}, spec
            )
            only = None if wanted_host is None else frozenset([wanted_host])
            decision = self._schedule(spec, vm_id, self._project(), only_hosts=only, cpu_ram=claims)
            row = {
                "id": vm_id,
                "name": spec["name"],
                "project": self._project(),
                "spec": spec,
                "desired_state": initial.value,
                "observed_state": VMState.PROVISIONING.value,
                "observed_reason": "",
                "host": decision.host,
                "generation": 1,
                "created": now,
                "updated": now,
                "state_changed": now,
                "mac": mac,
                "domain_xml": None,
                "restart_required": 0,
                "last_error": None,
                "addresses": "[]",
                "template": template[0] if template else None,
                "template_revision": template[1] if template else None,
                "public_keys": json.dumps(public_keys) if public_keys else None,
            }
            self.store.insert_vm(row)
            self.store.add_event("created", f"VM created{origin}, desired state {initial}", row)
            self.store.add_event("scheduled", decision.explain(), row)
            op = self._new_op(row, OpKind.CREATE, {"source": source} if source else None)
            if patched:
                raw_xml.record_change(self.store, row, spec, op["id"])
        return op

    def update_vm(
        self, name: str, patch: Any, if_match: int | None = None, replace: bool = False
    ) -> tuple[dict[str, Any], Row | None]:
        """PATCH (merge) or replace the spec; a new name renames (stopped VMs only)."""
        if not isinstance(patch, dict):
            raise Invalid("the body must be a JSON object", None)
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            old = row["spec"]
            if replace:
                merged = dict(patch)
                merged.setdefault("name", old["name"])
                merged.setdefault("image", old["image"])
            else:
                merged = {**old, **patch}
            new = specs.validate(merged)
            # Further NICs keep their MACs (before new == old: an unchanged spec is unchanged).
            netrules.fill_nic_macs(self.store, new, row["id"], row["mac"], old)
            for field in specs.IMMUTABLE:
                if new[field] != old[field]:
                    raise Invalid("cannot change after creation", field)
            if new == old:
                return self.vm_view(row), None
            check_media(self.store, new)  # issue 14: ISO images in CD-ROMs only
            check_disk_changes(self.store, self.config, self.clock(), row, old, new)
            patched = raw_xml.check(self.config, new, old, row["id"], row["mac"])
            if not self._check_network(new, row["project"], row["id"]):
                self._check_fixed_ip(new, row["id"])
            self._check_nics(new, row["project"], row["id"])
            netrules.check_forward_ports(
                new, old, self.config.allow_privileged_ports, self.config.listen
            )
            mac = netrules.mac_after_update(self.store, row, new)
            self._check_group(new, row["project"])
            if not reach.wants_it(old) and row["host"]:
                self._check_metadata_reach(new, row["host"])
            renamed = new["name"] != old["name"]
            if renamed:
                self._check_rename(row, new["name"])
            active = self._observed(row) in ACTIVE_STATES
            changed = sorted(k for k in new if new[k] != old.get(k))
            hardware = bool(set(changed) - LIVE_FIELDS - HOTPLUG_FIELDS)
            suspended_hardware = sorted(set(changed) - LIVE_FIELDS)
            if self._observed(row) == VMState.SUSPENDED and suspended_hardware:
                # As Proxmox's hibernated VMs: the saved memory belongs to today's hardware.
                raise Conflict("the VM is suspended: its saved memory holds the current hardware; "
                               "resume it (running) or discard the save (stopped) first",
                               suspended_hardware[0])
            self._check_claim_growth(row, old, new)
            self._check_quota(row["project"], new, old, row["id"])
            keys: dict[str, Any] = {}
            if key_names(new) != key_names(old):
                copied = self.vm_public_keys(new)  # the changer's keys (Nova: the caller's)
                keys["public_keys"] = json.dumps(copied) if copied else None
            self.store.update_vm(
                row["id"],
                expect_generation=row["generation"],
                spec=new,
                name=new["name"],
                mac=mac,
                restart_required=int(row["restart_required"] or (active and hardware)),
                **keys,
            )
            row = self._reread(row)
            if renamed:
                self.store.add_event("renamed", f"renamed from {old['name']} to {new['name']}", row)
            later = " (applies at next start)" if active and hardware else ""
            self.store.add_event("updated", f"spec changed: {', '.join(changed)}{later}", row)
            op = self._new_op(row, OpKind.UPDATE)
            if patched:
                raw_xml.record_change(self.store, row, new, op["id"])
        self.notify()
        return self.vm_view(row), op

    def _reread(self, row: Row) -> Row:
        fresh = self.store.get_vm_by_id(row["id"])
        if fresh is None:
            raise NotFound(f"no VM named {row['name']!r}", "name")
        return fresh

    def rename_vm(
        self, name: str, new_name: str, if_match: int | None = None
    ) -> tuple[dict[str, Any], Row | None]:
        return self.update_vm(name, {"name": new_name}, if_match)

    def delete_vm(self, name: str, force: bool = False, if_match: int | None = None) -> Row:
        with self.store.transaction():
            row = self._vm_for_write(name, if_match, allow_deleting=True)
            if row["desired_state"] == DesiredState.DELETED:
                return self._pending_op(row, OpKind.DELETE) or self._new_op(row, OpKind.DELETE)
            active = self._observed(row) in ACTIVE_STATES or row["desired_state"] not in (
                DesiredState.STOPPED, DesiredState.SUSPENDED, DesiredState.SHELVED)
            if not force and active:
                raise Conflict("the VM is running; stop it first or delete with force", "state")
            self._supersede(row)
            self.store.update_vm(row["id"], desired_state=DesiredState.DELETED)
            self.store.add_event(
                "deleting", "delete requested" + (" (forced)" if force else ""), row
            )
            op = self._new_op(row, OpKind.DELETE, {"force": force})
        self.notify()
        return op

    def _pending(self, row: Row) -> list[str]:
        """The spec fields the running domain still lacks (a stopped VM runs nothing)."""
        return pending_fields(row) if self._observed(row) in ACTIVE_STATES else []

    def status(self, row: Row) -> dict[str, Any]:
        ops = self.store.operations_of_vm(row["id"], limit=5)
        pending = self._pending(row)
        return {
            "state": self._observed(row),
            "reason": row["observed_reason"] or "",
            "desired_state": row["desired_state"],
            "run_strategy": row["spec"]["run_strategy"],
            "generation": row["generation"],
            "host": row["host"],
            "template": template_of(row),
            "restart_required": row["restart_required"],
            "last_error": row["last_error"],
            "addresses": json.loads(row["addresses"] or "[]"),
            "created": row["created"],
            "updated": row["updated"],
            "state_changed": row["state_changed"],
            "conditions": [
                {"type": "Ready", "status": self._ready(row)},
                {"type": "Converged", "status": self._observed(row) == row["desired_state"]},
                {"type": "RestartRequired", "status": row["restart_required"],
                 "message": restart_message(pending) if row["restart_required"] else ""},
            ],
            "pending_changes": pending,
            "operations": [
                {k: op[k] for k in ("id", "kind", "status", "error", "created", "finished")}
                for op in ops
            ],
        }

    # -- consoles ------------------------------------------------------------------------
    def console_path(self, name: str) -> Path:
        return self.config.vm_dir(self.vm_row(name)["id"]) / "console.log"

    def read_console(self, name: str, offset: int = 0, limit: int | None = None) -> bytes:
        path = self.console_path(name)
        try:
            with open(path, "rb") as f:
                if offset < 0:
                    f.seek(max(0, os.fstat(f.fileno()).st_size + offset))
                else:
                    f.seek(offset)
                return f.read(limit if limit is not None else -1)
        except FileNotFoundError:
            return b""

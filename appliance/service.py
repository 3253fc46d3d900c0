"""The service: the only way to change anything, and where every rule lives.

REST resources and the FUSE operations translate a path and a verb into one
call here, and this module's exceptions into a status or an errno. A write
records the desired state and an operation in one transaction, nudges the
controller, and (by default) waits for the operation to finish.
"""
from __future__ import annotations

import json
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from appliance import hosturi, jsonio, netrules, placement
from appliance import spec as specs
from appliance.config import Config
from appliance.errors import (
    Conflict,
    Failed,
    Forbidden,
    Invalid,
    NotFound,
    PreconditionFailed,
    Timeout,
)
from appliance.image_store import ImageStore
from appliance.model import (
    ACTIVE_STATES,
    DEFAULT_CPUS,
    DEFAULT_IMAGE,
    DEFAULT_MEMORY_MIB,
    DEFAULT_NETWORK_TYPE,
    FINAL_OP_STATES,
    GROUP_POLICIES,
    HEARTBEAT_AGE,
    HOST_RATIOS,
    HOST_STATES,
    OpStatus,
    STATE_ALIASES,
    STATE_CHANGE_OPS,
    STATE_VERBS,
    VERB_DESIRED_STATE,
)
from appliance.store import Store

# The built-in default template: `mkdir vms/NAME` and a create without image.
DEFAULT_TEMPLATE = {"image": DEFAULT_IMAGE, "cpus": DEFAULT_CPUS, "memory": DEFAULT_MEMORY_MIB,
                    "network": {"type": DEFAULT_NETWORK_TYPE.value}}

# The files of one VM directory, in the order `ls` shows them: name -> writable.
VM_FILES = {
    "state": True, "spec.json": True, "cpus": True, "memory": True, "host": True,
    "addresses": False, "console": False, "events": False, "status.json": False,
    "domain.xml": False,
}


# The files of one host directory (hosts/NAME/), as for VMs: name -> writable.
HOST_FILES = {"state": True, "uri": False, "capacity": False, "allocated": False, "vms": False,
              "status.json": False}


def reachable_from_peers(uri: str) -> bool:
    """Whether another host's libvirtd can open this URI (peer-to-peer migration
    target): it names a server, or an explicit unix socket (hosts on one
    machine). qemu:///system means "the libvirt of whoever opens it"; libvirt
    refuses it as a migration target ("Attempt to migrate guest to the same host")."""
    parts = urllib.parse.urlsplit(uri)
    return bool(parts.hostname) or "socket=" in parts.query


def is_ready(row: dict) -> bool:
    """With a readiness probe, what it last said; without, running is ready."""
    running = row["observed_state"] == "running" and row["desired_state"] != "deleted"
    if row["spec"].get("readiness_probe"):
        return running and bool(row.get("ready"))
    return running


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


class Service:
    def __init__(
        self,
        store: Store,
        config: Config,
        notify: Callable[[], None] = lambda: None,
        uuidgen: Callable[[], uuid.UUID] = uuid.uuid4,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.store = store
        self.config = config
        self.notify = notify
        self.uuidgen = uuidgen
        self.clock = clock
        self.sleep = sleep

    # -- views -------------------------------------------------------------------
    def vm_view(self, row: dict) -> dict:
        return {
            "id": row["id"],
            "name": row["name"],
            "state": self._observed(row),
            "desired_state": row["desired_state"],
            "reason": row["observed_reason"] or "",
            "host": row["host"],
            "generation": row["generation"],
            "spec": row["spec"],
            "restart_required": row["restart_required"],
            "ready": self._ready(row),
            "created": row["created"],
            "updated": row["updated"],
        }

    def _ready(self, row: dict) -> bool:
        return is_ready(row)

    @staticmethod
    def _observed(row: dict) -> str:
        if row["desired_state"] == "deleted":
            return "deleting"
        return row["observed_state"] or "stopped"

    # -- VMs ---------------------------------------------------------------------
    def list_vms(self, state: str | None = None, label: str | None = None, host: str | None = None) -> list[dict]:
        rows = self.store.list_vms(with_xml=False)
        out = []
        key, _, value = (label or "").partition("=")
        for row in rows:
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

    def get_vm(self, name: str) -> dict:
        return self.vm_view(self.store.get_vm(name))

    def _merge_template(self, body: dict) -> dict:
        template = body.pop("template", None)
        if template not in (None, "default"):
            raise NotFound(f"no template named {jsonio.shown(template)}", "template")
        return {**DEFAULT_TEMPLATE, **body}

    def create_vm(self, body: Any) -> tuple[dict, dict]:
        """Validate, then record the VM and its create operation in one transaction."""
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        body = dict(body)
        initial = body.pop("state", None)
        if initial not in (None, "running", "stopped"):
            raise Invalid("must be running or stopped", "state")
        wanted_host = body.pop("host", None)
        if wanted_host is not None:
            specs.validate_name(wanted_host, "host")
        spec = specs.validate(self._merge_template(body))
        if initial == "running" and spec["run_strategy"] == "Halted":
            spec["run_strategy"] = "Always"
        if initial == "stopped" and spec["run_strategy"] == "Always":
            spec["run_strategy"] = "Halted"
        if initial is None:
            initial = "running" if spec["run_strategy"] in ("Always", "RerunOnFailure") else "stopped"
        vm_id = str(self.uuidgen())
        now = self.clock()
        with self.store.transaction():
            self.store.get_image(spec["image"])  # NotFound names the field
            if self.store.vm_exists(spec["name"]):
                raise Conflict(f"a VM named {spec['name']!r} exists", "name")
            self._check_fixed_ip(spec, vm_id)
            netrules.check_forward_ports(spec, None, self.config.allow_privileged_ports, self.config.listen)
            mac = netrules.mac_for_new_vm(self.store, spec, vm_id)  # in this transaction: no race
            self._check_group(spec)
            if wanted_host is not None:
                self.store.get_host(wanted_host)
            claims = placement.claims_cpu_ram({"desired_state": initial, "observed_state": "provisioning"}, spec)
            decision = self._schedule(spec, vm_id, only_hosts=None if wanted_host is None else frozenset([wanted_host]),
                                      cpu_ram=claims)
            row = {
                "id": vm_id, "name": spec["name"], "spec": spec, "desired_state": initial,
                "observed_state": "provisioning", "observed_reason": "", "host": decision.host,
                "generation": 1, "created": now, "updated": now, "state_changed": now,
                "mac": mac, "domain_xml": None,
                "restart_required": 0, "last_error": None, "addresses": "[]",
            }
            self.store.insert_vm(row)
            self.store.add_event("created", f"VM created, desired state {initial}", row)
            self.store.add_event("scheduled", decision.explain(), row)
            op = self._new_op(row, "create")
        self.notify()
        return self.get_vm(spec["name"]), op

    def update_vm(self, name: str, patch: Any, if_match: int | None = None, replace: bool = False) -> tuple[dict, dict | None]:
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
            for field in specs.IMMUTABLE:
                if new[field] != old[field]:
                    raise Invalid("cannot change after creation", field)
            if new == old:
                return self.vm_view(row), None
            self._check_fixed_ip(new, row["id"])
            netrules.check_forward_ports(new, old, self.config.allow_privileged_ports, self.config.listen)
            mac = netrules.mac_after_update(self.store, row, new)
            self._check_group(new)
            renamed = new["name"] != old["name"]
            if renamed:
                self._check_rename(row, new["name"])
            active = self._observed(row) in ACTIVE_STATES
            hardware = {k for k in new if new[k] != old[k]} - {
                "name", "labels", "run_strategy", "termination_grace_period", "node_selector", "group",
                "reserve_when_stopped"}
            self._check_claim_growth(row, old, new)
            self.store.update_vm(
                row["id"], expect_generation=row["generation"], spec=new, name=new["name"], mac=mac,
                restart_required=int(row["restart_required"] or (active and bool(hardware))),
            )
            changed = ", ".join(sorted(k for k in new if new[k] != old[k]))
            row = self.store.get_vm_by_id(row["id"])
            if renamed:
                self.store.add_event("renamed", f"renamed from {old['name']} to {new['name']}", row)
            self.store.add_event("updated", f"spec changed: {changed}" + (" (applies at next start)" if active and hardware else ""), row)
            op = self._new_op(row, "update")
        self.notify()
        return self.vm_view(row), op

    def _check_fixed_ip(self, spec: dict, vm_id: str) -> None:
        network = spec["network"]
        if network["type"] != "network" or not network.get("ip"):
            return
        other = self.store.vm_with_fixed_ip(network["name"], network["ip"], excluding=vm_id)
        if other is not None:
            raise Conflict(f"{network['ip']} is already {other['name']}'s address on {network['name']}",
                           "network.ip")

    def _check_rename(self, row: dict, new_name: str) -> None:
        if self._observed(row) != "stopped" or row["desired_state"] != "stopped":
            raise Conflict("a VM can only be renamed while stopped", "name")
        if self.store.vm_exists(new_name):
            raise Conflict(f"a VM named {new_name!r} exists", "name")

    def rename_vm(self, name: str, new_name: str, if_match: int | None = None) -> tuple[dict, dict | None]:
        return self.update_vm(name, {"name": new_name}, if_match)

    def delete_vm(self, name: str, force: bool = False, if_match: int | None = None) -> dict:
        with self.store.transaction():
            row = self._vm_for_write(name, if_match, allow_deleting=True)
            if row["desired_state"] == "deleted":
                return self._pending_op(row, "delete") or self._new_op(row, "delete")
            if not force and (self._observed(row) in ACTIVE_STATES or row["desired_state"] != "stopped"):
                raise Conflict("the VM is running; stop it first or delete with force", "state")
            self._supersede(row)
            self.store.update_vm(row["id"], desired_state="deleted")
            self.store.add_event("deleting", "delete requested" + (" (forced)" if force else ""), row)
            op = self._new_op(row, "delete", {"force": force})
        self.notify()
        return op

    def _vm_for_write(self, name: str, if_match: int | None, allow_deleting: bool = False) -> dict:
        row = self.store.get_vm(name)
        if if_match is not None and row["generation"] != if_match:
            raise PreconditionFailed(
                f"generation is {row['generation']}, not {if_match}: the VM changed; read it again", "generation")
        if row["desired_state"] == "deleted" and not allow_deleting:
            raise Conflict("the VM is being deleted", "name")
        return row

    # -- state ----------------------------------------------------------------------
    def set_state(self, name: str, verb: Any, if_match: int | None = None) -> dict | None:
        """Record a desired state (or a reboot/force-stop) and its operation.

        Returns the operation, or None when the VM is already where asked."""
        if not isinstance(verb, str):
            raise Invalid(f"must be one of {', '.join(STATE_VERBS)}", "state")
        verb = verb.strip().lower()
        verb = STATE_ALIASES.get(verb, verb)
        if verb not in STATE_VERBS:
            raise Invalid(f"{jsonio.shown(verb)} is not a state; use one of {', '.join(STATE_VERBS)}", "state")
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            observed = self._observed(row)
            desired = VERB_DESIRED_STATE[verb]
            if verb == "paused" and observed not in ("running", "paused") and row["desired_state"] != "running":
                raise Conflict(f"a {observed} VM cannot be paused; start it first", "state")
            if verb == "reboot" and (observed not in ("running", "paused") and row["desired_state"] != "running"):
                raise Conflict(f"a {observed} VM cannot be rebooted; start it", "state")
            busy = self.store.busy_operation(row["id"])
            if verb in ("running", "stopped", "paused") and desired == row["desired_state"] == observed and not busy:
                return None
            kind = {"running": "resume" if observed == "paused" else "start", "stopped": "stop",
                    "paused": "pause", "reboot": "reboot", "force-stop": "force-stop"}[verb]
            spec = dict(row["spec"])
            strategy = spec["run_strategy"]
            if desired == "running" and strategy == "Halted":
                spec["run_strategy"] = "Always"
            elif desired == "stopped" and strategy == "Always":
                spec["run_strategy"] = "Halted"
            moved, from_host = None, row["host"]
            if kind == "start" and observed in ("stopped", "crashed", "lost", "provisioning"):
                moved = self._replace_if_stranded(row)
                if moved is None and not placement.claims_cpu_ram(row):
                    moved = self._claim_at_start(row)  # in this transaction: no two starts take one slot
            self._supersede(row)
            self.store.update_vm(row["id"], expect_generation=row["generation"], desired_state=desired, spec=spec,
                                 **({"host": moved} if moved else {}))
            row = self.store.get_vm_by_id(row["id"])
            self.store.add_event("state-requested", f"{verb} requested (was {observed})", row)
            op = self._new_op(row, kind, {"from_host": from_host} if moved else None)
        self.notify()
        return op

    def _supersede(self, row: dict) -> None:
        """A new desired state cancels the pending state changes it replaces."""
        for op in self.store.operations_of_vm(row["id"], [OpStatus.PENDING]):
            if op["kind"] in STATE_CHANGE_OPS:
                self.store.update_operation(op["id"], status="cancelled", error="superseded", finished=self.clock())

    def _new_op(self, row: dict, kind: str, params: dict | None = None) -> dict:
        return self.store.add_operation(str(self.uuidgen()), row, kind, params)

    def _pending_op(self, row: dict, kind: str) -> dict | None:
        return self.store.open_operation(row["id"], kind)

    # -- operations --------------------------------------------------------------------
    def get_operation(self, op_id: str) -> dict:
        return self.store.get_operation(op_id)

    def list_operations(self, vm: str | None = None, status: str | None = None, limit: int = 100) -> list[dict]:
        return self.store.list_operations(vm_name=vm, status=status, limit=limit)

    def wait_operation(self, op_id: str, timeout: float) -> dict:
        """Poll until the operation is final or the timeout passes; return it either way."""
        deadline = time.monotonic() + timeout  # elapsed time, whatever the injected clock says
        delay = 0.005
        while True:
            op = self.store.get_operation(op_id)
            if op["status"] in FINAL_OP_STATES or time.monotonic() >= deadline:
                return op
            self.sleep(delay)
            delay = min(delay * 1.5, 0.01)  # one indexed SELECT per 10 ms: cheap, and a writer learns fast

    def finish(self, op: dict | None, timeout: float | None = None) -> dict | None:
        """Wait for an operation and turn its failure into Failed (or Timeout)."""
        if op is None:
            return None
        op = self.wait_operation(op["id"], self.config.wait_timeout if timeout is None else timeout)
        if op["status"] == "failed":
            raise Failed(f"{op['kind']} failed: {op['error']}")
        if op["status"] == "cancelled":
            raise Conflict(f"{op['kind']} was cancelled: {op['error']}")
        if op["status"] not in FINAL_OP_STATES:
            raise Timeout(f"{op['kind']} still {op['status']} after the wait; poll /v1/operations/{op['id']}")
        return op

    def cancel_operation(self, op_id: str) -> dict:
        with self.store.transaction():
            op = self.store.get_operation(op_id)
            # A running live migration is cancellable too: the controller aborts
            # the libvirt job and the guest stays on its source.
            running_migration = op["status"] == "running" and op["kind"] == "migrate"
            if op["status"] != "pending" and not running_migration:
                raise Conflict(f"operation is {op['status']}; only pending operations (and running "
                               "migrations) can be cancelled", "id")
            if op["kind"] in ("create", "delete"):
                raise Conflict(f"a {op['kind']} cannot be cancelled", "id")
            row = self.store.get_vm_by_id(op["vm_id"])
            if running_migration:
                # The controller aborts the job and then finishes the operation
                # as cancelled (or succeeded, if the switch-over beat the abort).
                self.store.update_operation(op_id, params={**op["params"], "cancel": True})
                if row is not None:
                    self.store.add_event("cancel-requested", "migration: cancel requested", row, op_id)
                self.notify()
                return self.store.get_operation(op_id)
            self.store.update_operation(op_id, status="cancelled", error="cancelled by request", finished=self.clock())
            if row is not None:
                self.store.add_event("cancelled", f"{op['kind']} cancelled", row, op_id)
        return self.store.get_operation(op_id)

    # -- events -------------------------------------------------------------------------
    def list_events(self, vm: str | None = None, since: int = 0, limit: int = 1000) -> list[dict]:
        vm_id = self.store.get_vm(vm)["id"] if vm else None
        return self.store.list_events(vm_id, since, limit)

    @staticmethod
    def format_events(events: list[dict]) -> str:
        lines = []
        for event in events:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(event["time"]))
            who = f" {event['vm_name']}" if event["vm_name"] else ""
            lines.append(f"{stamp}{who} {event['kind']}: {event['message']}\n")
        return "".join(lines)

    # -- the files of a VM directory: one table for REST and the mount -------------------
    def read_vm_file(self, name: str, file: str) -> str:
        row = self.store.get_vm(name)
        if file == "state":
            return self._observed(row) + "\n"
        if file == "spec.json":
            return _json(row["spec"])
        if file == "cpus":
            return f"{row['spec']['cpus']}\n"
        if file == "memory":
            return f"{row['spec']['memory']}\n"
        if file == "host":
            return f"{row['host'] or ''}\n"
        if file == "addresses":
            return "".join(f"{a['address']}/{a['prefix']}\n" for a in json.loads(row["addresses"] or "[]"))
        if file == "console":
            return self.read_console(name).decode("utf-8", "replace")
        if file == "events":
            return self.format_events(self.store.list_events(row["id"]))
        if file == "status.json":
            return _json(self.status(row))
        if file == "domain.xml":
            return row["domain_xml"] or ""
        raise NotFound(f"no file {file!r} in a VM", "file")

    def write_vm_file(self, name: str, file: str, text: str, if_match: int | None = None) -> dict | None:
        """A write of one file; returns the operation it started, if any."""
        if file not in VM_FILES:
            raise NotFound(f"no file {file!r} in a VM", "file")
        if not VM_FILES[file]:
            raise Forbidden(f"{file} is read-only", file)
        value = text.strip()
        if file == "state":
            return self.set_state(name, value, if_match)
        if file == "spec.json":
            try:
                body = jsonio.loads(text)
            except ValueError as err:
                raise Invalid(f"not JSON: {err}", "spec.json") from None
            return self.update_vm(name, body, if_match, replace=True)[1]
        if file == "cpus":
            return self.update_vm(name, {"cpus": specs.parse_cpus(value)}, if_match)[1]
        if file == "memory":
            memory = specs.parse_size_mib(value, "memory", specs.MIN_MEMORY_MIB, specs.MAX_MEMORY_MIB)
            return self.update_vm(name, {"memory": memory}, if_match)[1]
        if file == "host":
            force = False
            if value.startswith("{"):
                try:
                    body = jsonio.loads(value)
                except ValueError as err:
                    raise Invalid(f"not JSON: {err}", "host") from None
                if not isinstance(body, dict):
                    raise Invalid('must be a host name or {"host": NAME, "force": false}', "host")
                unknown = set(body) - {"host", "force", "bandwidth"}
                if unknown:
                    raise Invalid("unknown field; known fields are host, force, bandwidth", sorted(unknown)[0])
                return self.migrate_vm(name, body.get("host"), force=body.get("force", False),
                                       bandwidth=body.get("bandwidth"), if_match=if_match)
            return self.migrate_vm(name, value, force=force, if_match=if_match)
        raise NotFound(f"no file {file!r} in a VM", "file")

    def status(self, row: dict) -> dict:
        ops = self.store.operations_of_vm(row["id"], limit=5)
        return {
            "state": self._observed(row),
            "reason": row["observed_reason"] or "",
            "desired_state": row["desired_state"],
            "run_strategy": row["spec"]["run_strategy"],
            "generation": row["generation"],
            "host": row["host"],
            "restart_required": row["restart_required"],
            "last_error": row["last_error"],
            "addresses": json.loads(row["addresses"] or "[]"),
            "created": row["created"],
            "updated": row["updated"],
            "state_changed": row["state_changed"],
            "conditions": [
                {"type": "Ready", "status": self._ready(row)},
                {"type": "Converged", "status": self._observed(row) == row["desired_state"]},
                {"type": "RestartRequired", "status": row["restart_required"]},
            ],
            "operations": [{k: op[k] for k in ("id", "kind", "status", "error", "created", "finished")} for op in ops],
        }

    def console_path(self, name: str) -> Path:
        return self.config.vm_dir(self.store.get_vm(name)["id"]) / "console.log"

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

    # -- templates (added for the FS view, templates/NAME.json) -----------------------------
    def list_templates(self) -> dict[str, dict]:
        """Named VM shapes by name; a create names one with "template" (default if none)."""
        return {"default": dict(DEFAULT_TEMPLATE)}

    # -- images ---------------------------------------------------------------------------
    def list_images(self) -> list[dict]:
        return self.store.list_images()

    def get_image(self, name: str) -> dict:
        return self.store.get_image(name)

    def _image_store(self) -> ImageStore:
        return ImageStore(self.store, self.config, self.clock)

    def import_image(self, name: str, path: str) -> dict:
        """Copy a file from the admin's image import directory (POST /v1/images {"path"})."""
        return self._image_store().import_from_path(name, path)

    def import_image_file(self, name: str, path: str | Path) -> dict:
        """Copy a file the admin named outside the API (vmctl serve --demo-image, fixtures)."""
        return self._image_store().import_trusted(name, path)

    def upload_image(self, name: str, stream: IO[bytes], length: int | None) -> dict:
        return self._image_store().upload(name, stream, length)

    def delete_image(self, name: str) -> None:
        with self.store.transaction():
            image = self.store.get_image(name)
            users = self.store.vm_names_using_image(name)
            if users:
                raise Conflict(f"image is used by {', '.join(users[:5])}", "name")
            self.store.delete_image(name)
            self.store.add_event("image-deleted", f"image {name} deleted")
        Path(image["path"]).unlink(missing_ok=True)

    # -- placement ------------------------------------------------------------------------
    def _schedule(self, spec: dict, vm_id: str | None, **constraints: Any):
        """A placement decision inside the caller's transaction; 409 with the
        scheduler's explanation when no host fits."""
        decision = placement.place(self.store, self.config, spec, vm_id, self.clock(), **constraints)
        if decision.host is None:
            raise Conflict(decision.explain(), "host")
        return decision

    def _check_group(self, spec: dict) -> None:
        if spec.get("group") and not self.store.group_exists(spec["group"]):
            raise Invalid(f"no server group named {spec['group']!r}; create it with POST /v1/groups", "group")

    def _check_claim_growth(self, row: dict, old: dict, new: dict) -> None:
        """More vCPUs or memory held on the VM's host must still fit there (Nova's
        resize claim): a VM that claims them (placement.claims_cpu_ram) and grows,
        or a stopped one that starts to reserve them. A stopped VM without the
        reservation is checked when it starts."""
        if not row["host"] or not placement.claims_cpu_ram(row, new):
            return
        held = placement.claims_cpu_ram(row, old)
        more_cpus = new["cpus"] - (old["cpus"] if held else 0)
        more_memory = new["memory"] - (old["memory"] if held else 0)
        if more_cpus <= 0 and more_memory <= 0:
            return
        delta = {**new, "cpus": max(0, more_cpus), "memory": max(0, more_memory), "group": None,
                 "node_selector": {}}
        decision = placement.place(self.store, self.config, delta, row["id"], self.clock(),
                                   only_hosts=frozenset([row["host"]]), disk=False)
        if decision.host is None:
            rejected = decision.rejected[0] if decision.rejected else None
            if rejected is not None and rejected.filter != "ComputeFilter":
                raise Conflict(f"does not fit on host {row['host']}: {rejected.reason}",
                               "cpus" if more_cpus > 0 and rejected.filter == "CoreFilter" else "memory")

    def _host_usable(self, name: str | None) -> bool:
        if not name:
            return False
        try:
            host = self.store.get_host(name)
        except NotFound:
            return False
        return host["state"] != "maintenance" and placement.host_is_up(host, self.clock(), self.config.heartbeat_age)

    def _replace_if_stranded(self, row: dict) -> str | None:
        """A stopped VM whose host is gone, down or in maintenance starts elsewhere,
        if its disks are on storage another host sees; else 409 with the reason."""
        if self._host_usable(row["host"]):
            return None
        storage = None
        if row["host"] and self.store.host_exists(row["host"]):
            storage = self.store.get_host(row["host"])["storage"] or f"host:{row['host']}"
        decision = self._schedule(row["spec"], row["id"], storage=storage,
                                  ignore_hosts=frozenset([row["host"]]) if row["host"] else frozenset())
        self.store.add_event("scheduled", f"host {row['host']} cannot run it now; " + decision.explain(), row)
        return decision.host

    def _claim_at_start(self, row: dict) -> str | None:
        """A stopped VM claims its vCPUs and memory as it starts: on its host if
        they fit (None), else on the host returned; 409 with the scheduler's
        reasons when no host fits."""
        decision = placement.place_start(self.store, self.config, row, self.clock())
        if decision.host is None:
            raise Conflict(decision.explain(), "host")
        if decision.host == row["host"]:
            return None
        self.store.add_event("scheduled", f"no room on host {row['host']} to start it; " + decision.explain(), row)
        return decision.host

    def migrate_vm(self, name: str, target: Any, force: Any = False, bandwidth: Any = None,
                   if_match: int | None = None) -> dict | None:
        """Move a VM to another host: live when it runs, offline when stopped.

        Unless forced, the target must pass the scheduler's filters; the claim on
        the target is the operation itself until the move completes. `bandwidth`
        caps a live migration in MiB/s (Nova's live_migration_bandwidth)."""
        if not isinstance(force, bool):
            raise Invalid("must be true or false", "force")
        if bandwidth is not None and (isinstance(bandwidth, bool) or not isinstance(bandwidth, int)
                                      or not 1 <= bandwidth <= 1_000_000):
            raise Invalid("must be a whole number of MiB/s from 1 to 1000000", "bandwidth")
        if not isinstance(target, str) or not target:
            raise Invalid("must be the name of a host", "host")
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            target_host = self.store.get_host(target)
            if target == row["host"]:
                return None
            if self._pending_op(row, "migrate") or self._pending_op(row, "move"):
                raise Conflict("the VM is already moving; cancel that operation first", "host")
            if not placement.host_is_up(target_host, self.clock(), self.config.heartbeat_age):
                raise Conflict(f"host {target} is down", "host")
            observed = self._observed(row)
            if observed in ("running", "paused") and not reachable_from_peers(target_host["uri"]):
                raise Conflict(f"host {target}'s URI {target_host['uri']} means 'the local libvirt' to whoever "
                               "opens it, so other hosts cannot reach it to migrate to; give it a URI they can "
                               "reach (PATCH /v1/hosts/" + target + ' {"uri": "qemu+ssh://root@NAME/system"})', "host")
            busy = self.store.busy_operation(row["id"])
            if busy:
                raise Conflict(f"the VM has a {busy['kind']} in progress; try when it is done", "host")
            if observed in ("running", "paused") and row["desired_state"] in ("running", "paused"):
                kind = "migrate"
            elif observed == "stopped" and row["desired_state"] == "stopped":
                kind = "move"
            else:
                raise Conflict(f"a {observed} VM cannot move now", "host")
            if force:
                why = f"{kind} to {target} forced: the scheduler's filters were skipped"
            else:
                decision = self._schedule(row["spec"], row["id"], only_hosts=frozenset([target]),
                                          cpu_ram=placement.claims_cpu_ram(row))
                why = decision.explain()
            params = {"target": target, "source": row["host"], "force": force}
            if bandwidth is not None:
                params["bandwidth"] = bandwidth
            op = self._new_op(row, kind, params)
            self.store.add_event("migration-requested" if kind == "migrate" else "move-requested", why, row, op["id"])
        self.notify()
        return op

    # -- hosts ----------------------------------------------------------------------------
    def host_view(self, host: dict, used: dict | None = None, counts: dict | None = None) -> dict:
        if used is None:
            used = placement.allocations(self.store)
        if counts is None:
            counts = self._vm_counts()
        info = host["info"] or {}
        cpus, memory, disk = used.get(host["name"], (0, 0, 0))
        up = placement.host_is_up(host, self.clock(), self.config.heartbeat_age)
        reserved = host["reserved_memory_mib"] or 0
        return {
            "name": host["name"], "uri": host["uri"], "state": host["state"],
            "observed_state": host["state"] if up else "down", "up": up, "last_seen": host["last_seen"],
            "down_since": host["down_since"], "labels": host["labels"], "storage": host["storage"],
            "migration_address": host["migration_address"],
            "cpu_ratio": host["cpu_ratio"], "ram_ratio": host["ram_ratio"], "disk_ratio": host["disk_ratio"],
            "reserved_memory_mib": reserved,
            "inventory": info,
            "capacity": {
                "cpus": int((info.get("cpus") or 0) * host["cpu_ratio"]),
                "memory_mib": int((info.get("memory_mib") or 0) * host["ram_ratio"]) - reserved,
                "disk_gib": round((info.get("disk_bytes") or 0) * host["disk_ratio"] / placement.GIB, 2),
            },
            "allocated": {"cpus": int(cpus), "memory_mib": int(memory),
                          "disk_gib": round(disk / placement.GIB, 2), "vms": counts.get(host["name"], 0)},
        }

    def _vm_counts(self) -> dict[str, int]:
        return placement.vms_by_host(self.store)

    def list_hosts(self) -> list[dict]:
        """Hosts, with `observed_state`: down when libvirt stopped answering the
        controller's heartbeat (or the heartbeat itself is stale), else the
        administrative state (enabled | disabled | maintenance)."""
        used, counts = placement.allocations(self.store), self._vm_counts()
        return [self.host_view(h, used, counts) for h in self.store.list_hosts()]

    def get_host(self, name: str) -> dict:
        return self.host_view(self.store.get_host(name))

    def _host_fields(self, body: dict, creating: bool) -> dict:
        fields: dict[str, Any] = {}
        if "uri" in body or creating:
            fields["uri"] = hosturi.validate(body.get("uri"), self.config.host_socket_dirs, self.config.ssh_dir,
                                             allow_test=self.config.allow_test_hosts)
        for key, (default, low, high) in HOST_RATIOS.items():
            if key in body or creating:
                value = body.get(key, default)
                if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                    raise Invalid(f"must be a number from {low} to {high}", key)
                fields[key] = float(value)
        if "reserved_memory_mib" in body or creating:
            value = body.get("reserved_memory_mib", 0)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= specs.MAX_MEMORY_MIB:
                raise Invalid(f"must be a whole number of MiB from 0 to {specs.MAX_MEMORY_MIB}", "reserved_memory_mib")
            fields["reserved_memory_mib"] = value
        if "labels" in body or creating:
            fields["labels"] = specs.validate_labels(body.get("labels") or {}, "labels")
        if "storage" in body or creating:
            value = body.get("storage", "shared")
            if not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", value):
                raise Invalid("must name the storage where this host finds VM disks (1-64 of A-Z a-z 0-9 _.:-); "
                              "hosts naming the same storage share disks", "storage")
            fields["storage"] = value
        if "migration_address" in body or creating:
            value = body.get("migration_address")
            if value is not None and (not isinstance(value, str) or not re.fullmatch(r"[A-Za-z0-9.:\[\]-]{1,255}", value)):
                raise Invalid("must be a host name or IP address the other hosts reach this one at", "migration_address")
            fields["migration_address"] = value
        if "state" in body or creating:
            value = body.get("state", "enabled")
            if value not in HOST_STATES:
                raise Invalid(f"must be one of {', '.join(HOST_STATES)}", "state")
            fields["state"] = value
        return fields

    def add_host(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        known = {"name", "uri", "labels", "storage", "migration_address", "state", "reserved_memory_mib", *HOST_RATIOS}
        unknown = set(body) - known
        if unknown:
            raise Invalid(f"unknown field; known fields are {', '.join(sorted(known))}", sorted(unknown)[0])
        name = specs.validate_name(body.get("name"), "name")
        fields = self._host_fields(body, creating=True)
        with self.store.transaction():
            if self.store.host_exists(name):
                raise Conflict(f"a host named {name!r} exists", "name")
            for other in self.store.list_hosts():
                if other["uri"] == fields["uri"]:
                    raise Conflict(f"host {other['name']} already has this URI", "uri")
            self.store.upsert_host({"name": name, "up": 0, "last_seen": None, "info": {}, "created": self.clock(),
                                    "down_since": None, **fields})
            self.store.add_event("host-added", f"host {name} added ({fields['uri']})")
        self.notify()
        return self.get_host(name)

    def update_host(self, name: str, body: Any) -> dict:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        rest = {k: v for k, v in body.items() if k != "state"}
        known = {"uri", "labels", "storage", "migration_address", "reserved_memory_mib", *HOST_RATIOS, "state"}
        unknown = set(rest) - known
        if unknown:
            raise Invalid(f"unknown field; known fields are {', '.join(sorted(known))}", sorted(unknown)[0])
        fields = self._host_fields(rest, creating=False)  # everything is checked before anything changes
        state = body.get("state")
        if "state" in body:
            state = state.strip().lower() if isinstance(state, str) else state
            if state not in HOST_STATES:
                raise Invalid(f"must be one of {', '.join(HOST_STATES)}", "state")
        if fields:
            with self.store.transaction():
                self.store.get_host(name)
                if "uri" in fields and any(o["name"] != name and o["uri"] == fields["uri"]
                                           for o in self.store.list_hosts()):
                    raise Conflict("another host already has this URI", "uri")
                self.store.update_host(name, **fields)
                self.store.add_event("host-updated", f"host {name}: {', '.join(sorted(fields))} changed")
            self.notify()
        if "state" in body:
            return self.set_host_state(name, state)
        return self.get_host(name)

    def set_host_state(self, name: str, state: Any) -> dict:
        """enabled | disabled (no new VMs) | maintenance (no new VMs, and drain
        it: each VM migrates where the scheduler puts it; what cannot move is
        reported in the answer and as an event, and stays)."""
        if isinstance(state, str):
            state = state.strip().lower()
        if state not in HOST_STATES:
            raise Invalid(f"must be one of {', '.join(HOST_STATES)}", "state")
        report: dict[str, list] = {"migrating": [], "moving": [], "blocked": []}
        with self.store.transaction():
            host = self.store.get_host(name)
            if host["state"] != state:
                self.store.update_host(name, state=state)
                self.store.add_event("host-state", f"host {name} is now {state} (was {host['state']})")
            if state == "maintenance":
                report = self._drain(host)
        self.notify()
        return {**self.get_host(name), "drain": report}

    def _drain(self, host: dict) -> dict[str, list]:
        report: dict[str, list] = {"migrating": [], "moving": [], "blocked": []}
        rows = self.store.vms_on_host(host["name"])
        for row in rows:
            if self._pending_op(row, "migrate") or self._pending_op(row, "move"):
                report["migrating"].append({"vm": row["name"], "target": None, "note": "already moving"})
                continue
            busy = self.store.busy_operation(row["id"])
            if busy:
                reason = f"it has a {busy['kind']} in progress; drain again when it is done"
                report["blocked"].append({"vm": row["name"], "reason": reason})
                self.store.add_event("drain-blocked", f"cannot leave host {host['name']}: {reason}", row)
                continue
            observed = self._observed(row)
            if observed in ("running", "paused"):
                kind, storage = "migrate", None  # disks are copied when the target's storage differs
            elif observed == "stopped" and row["desired_state"] == "stopped":
                kind, storage = "move", None  # disks are copied when the target's storage differs
            else:
                reason = f"it is {observed} (wanted {row['desired_state']}); drain again when it settles"
                report["blocked"].append({"vm": row["name"], "reason": reason})
                self.store.add_event("drain-blocked", f"cannot leave host {host['name']}: {reason}", row)
                continue
            ignore = {host["name"]}
            if kind == "migrate":  # live: only to hosts the source's libvirtd can reach
                ignore |= {h["name"] for h in self.store.list_hosts() if not reachable_from_peers(h["uri"])}
            decision = placement.place(self.store, self.config, row["spec"], row["id"], self.clock(),
                                       ignore_hosts=frozenset(ignore), storage=storage,
                                       cpu_ram=placement.claims_cpu_ram(row))
            if decision.host is None:
                report["blocked"].append({"vm": row["name"], "reason": decision.explain()})
                self.store.add_event("drain-blocked", f"cannot leave host {host['name']}: {decision.explain()}", row)
                continue
            op = self._new_op(row, kind, {"target": decision.host, "source": host["name"], "force": False,
                                          "drain": True})
            self.store.add_event("draining", f"host {host['name']} in maintenance: {decision.explain()}", row, op["id"])
            report["migrating" if kind == "migrate" else "moving"].append(
                {"vm": row["name"], "target": decision.host, "operation": op["id"]})
        return report

    def delete_host(self, name: str) -> None:
        with self.store.transaction():
            self.store.get_host(name)
            vms = self.store.vm_names_on_host(name)
            if vms:
                raise Conflict(f"host {name} still has VMs ({', '.join(vms[:5])}); move or delete them first", "name")
            self.store.delete_host(name)
            self.store.add_event("host-removed", f"host {name} removed")
        self.notify()

    def read_host_file(self, name: str, file: str) -> str:
        view = self.get_host(name)
        if file == "state":
            return view["observed_state"] + "\n"
        if file == "uri":
            return view["uri"] + "\n"
        if file == "capacity":
            return "".join(f"{k} {v}\n" for k, v in view["capacity"].items())
        if file == "allocated":
            return "".join(f"{k} {v}\n" for k, v in view["allocated"].items())
        if file == "vms":
            return "".join(vm + "\n" for vm in self.store.vm_names_on_host(name))
        if file == "status.json":
            return _json(view)
        raise NotFound(f"no file {file!r} in a host", "file")

    def write_host_file(self, name: str, file: str, text: str) -> dict:
        if file not in HOST_FILES:
            raise NotFound(f"no file {file!r} in a host", "file")
        if not HOST_FILES[file]:
            raise Forbidden(f"{file} is read-only", file)
        return self.set_host_state(name, text.strip())

    # -- server groups ----------------------------------------------------------------------
    def group_view(self, group: dict) -> dict:
        members = [{"name": n, "host": h} for n, h in self.store.group_members(group["name"])]
        return {**group, "members": members}

    def list_groups(self) -> list[dict]:
        return [self.group_view(g) for g in self.store.list_groups()]

    def get_group(self, name: str) -> dict:
        return self.group_view(self.store.get_group(name))

    def create_group(self, body: Any) -> dict:
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        unknown = set(body) - {"name", "policy"}
        if unknown:
            raise Invalid("unknown field; known fields are name, policy", sorted(unknown)[0])
        name = specs.validate_name(body.get("name"), "name")
        if body.get("policy") not in GROUP_POLICIES:
            raise Invalid(f"must be one of {', '.join(GROUP_POLICIES)}", "policy")
        with self.store.transaction():
            if self.store.group_exists(name):
                raise Conflict(f"a server group named {name!r} exists", "name")
            self.store.insert_group({"name": name, "policy": body["policy"], "created": self.clock()})
            self.store.add_event("group-created", f"server group {name} ({body['policy']}) created")
        return self.get_group(name)

    def delete_group(self, name: str) -> None:
        with self.store.transaction():
            group = self.get_group(name)
            if group["members"]:
                names = ", ".join(m["name"] for m in group["members"][:5])
                raise Conflict(f"server group {name} still has members ({names})", "name")
            self.store.delete_group(name)
            self.store.add_event("group-deleted", f"server group {name} deleted")

    # -- health ---------------------------------------------------------------------------------
    def readiness(self, heartbeat_age: float = HEARTBEAT_AGE) -> dict:
        checks: dict[str, dict] = {}
        try:
            self.store.ping()
            checks["store"] = {"ok": True}
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            checks["store"] = {"ok": False, "reason": str(err)}
            return {"ready": False, "checks": checks}
        now = self.clock()
        hosts = self.store.list_hosts()
        # The controller stamps every host it knows at each heartbeat, up or not.
        if not any(h["last_seen"] is not None and now - h["last_seen"] < heartbeat_age for h in hosts):
            checks["controller"] = {"ok": False, "reason": "no heartbeat from the controller"}
        up = 0
        for host in hosts:
            ok = placement.host_is_up(host, now, heartbeat_age)
            up += ok
            checks[f"host:{host['name']}"] = {"ok": ok, **({} if ok else {"reason": "libvirt unreachable"})}
        # One dead host of several leaves the appliance serving: ready while one answers.
        ready = checks["store"]["ok"] and "controller" not in checks and up > 0
        return {"ready": ready, "checks": checks}

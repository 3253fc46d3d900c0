"""The service: the only way to change anything, and where every rule lives.

REST resources and the FUSE operations translate a path and a verb into one
call here, and this module's exceptions into a status or an errno. A write
records the desired state and an operation in one transaction, nudges the
controller, and (by default) waits for the operation to finish.
"""
from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import IO, Any, Callable

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
from appliance.store import Store
from appliance.virt import images

STATE_VERBS = ("running", "stopped", "paused", "reboot", "force-stop")
STATE_ALIASES = {"start": "running", "stop": "stopped", "pause": "paused", "resume": "running",
                 "restart": "reboot", "shutdown": "stopped"}
ACTIVE_STATES = ("running", "paused", "starting", "stopping", "migrating")
FINAL_OP_STATES = ("succeeded", "failed", "cancelled")

# The built-in default template: `mkdir vms/NAME` and a create without image.
DEFAULT_TEMPLATE = {"image": "demo", "cpus": 1, "memory": 128, "network": {"type": "user"}}

# The files of one VM directory, in the order `ls` shows them: name -> writable.
VM_FILES = {
    "state": True, "spec.json": True, "cpus": True, "memory": True, "host": True,
    "addresses": False, "console": False, "events": False, "status.json": False,
    "domain.xml": False,
}


def is_ready(row: dict) -> bool:
    """With a readiness probe, what it last said; without, running is ready."""
    running = row["observed_state"] == "running" and row["desired_state"] != "deleted"
    if row["spec"].get("readiness_probe"):
        return running and bool(row.get("ready"))
    return running


def _json(data: Any) -> str:
    return json.dumps(data, indent=2, sort_keys=True) + "\n"


def _mac(vm_id: str) -> str:
    # Locally administered range QEMU/libvirt use (52:54:00), stable per VM.
    raw = uuid.UUID(vm_id).bytes
    return "52:54:00:%02x:%02x:%02x" % (raw[0], raw[1], raw[2])


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
            raise NotFound(f"no template named {template!r}", "template")
        return {**DEFAULT_TEMPLATE, **body}

    def create_vm(self, body: Any) -> tuple[dict, dict]:
        """Validate, then record the VM and its create operation in one transaction."""
        if not isinstance(body, dict):
            raise Invalid("the body must be a JSON object", None)
        body = dict(body)
        initial = body.pop("state", None)
        if initial not in (None, "running", "stopped"):
            raise Invalid("must be running or stopped", "state")
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
            row = {
                "id": vm_id, "name": spec["name"], "spec": spec, "desired_state": initial,
                "observed_state": "provisioning", "observed_reason": "", "host": None,
                "generation": 1, "created": now, "updated": now, "state_changed": now,
                "mac": spec["network"].get("mac") or _mac(vm_id), "domain_xml": None,
                "restart_required": 0, "last_error": None, "addresses": "[]",
            }
            self.store.insert_vm(row)
            self.store.add_event("created", f"VM created, desired state {initial}", row)
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
            renamed = new["name"] != old["name"]
            if renamed:
                self._check_rename(row, new["name"])
            active = self._observed(row) in ACTIVE_STATES
            hardware = {k for k in new if new[k] != old[k]} - {"name", "labels", "run_strategy", "termination_grace_period"}
            self.store.update_vm(
                row["id"], expect_generation=row["generation"], spec=new, name=new["name"],
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
        for other in self.store.list_vms():
            theirs = other["spec"]["network"]
            if other["id"] != vm_id and theirs.get("name") == network["name"] and theirs.get("ip") == network["ip"]:
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
            raise Invalid(f"{verb!r} is not a state; use one of {', '.join(STATE_VERBS)}", "state")
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            observed = self._observed(row)
            desired = {"running": "running", "stopped": "stopped", "paused": "paused",
                       "reboot": "running", "force-stop": "stopped"}[verb]
            if verb == "paused" and observed not in ("running", "paused") and row["desired_state"] != "running":
                raise Conflict(f"a {observed} VM cannot be paused; start it first", "state")
            if verb == "reboot" and (observed not in ("running", "paused") and row["desired_state"] != "running"):
                raise Conflict(f"a {observed} VM cannot be rebooted; start it", "state")
            busy = self.store.list_operations("vm_id = ? AND status IN ('pending', 'running')", [row["id"]])
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
            self._supersede(row)
            self.store.update_vm(row["id"], expect_generation=row["generation"], desired_state=desired, spec=spec)
            row = self.store.get_vm_by_id(row["id"])
            self.store.add_event("state-requested", f"{verb} requested (was {observed})", row)
            op = self._new_op(row, kind)
        self.notify()
        return op

    def _supersede(self, row: dict) -> None:
        """A new desired state cancels the pending state changes it replaces."""
        for op in self.store.list_operations("vm_id = ? AND status = 'pending'", [row["id"]]):
            if op["kind"] in ("start", "stop", "pause", "resume", "reboot", "force-stop"):
                self.store.update_operation(op["id"], status="cancelled", error="superseded", finished=self.clock())

    def _new_op(self, row: dict, kind: str, params: dict | None = None) -> dict:
        return self.store.add_operation(str(self.uuidgen()), row, kind, params)

    def _pending_op(self, row: dict, kind: str) -> dict | None:
        ops = self.store.list_operations(
            "vm_id = ? AND kind = ? AND status IN ('pending', 'running')", [row["id"], kind], limit=1)
        return ops[0] if ops else None

    # -- operations --------------------------------------------------------------------
    def get_operation(self, op_id: str) -> dict:
        return self.store.get_operation(op_id)

    def list_operations(self, vm: str | None = None, status: str | None = None, limit: int = 100) -> list[dict]:
        where, params = [], []
        if vm:
            where.append("vm_name = ?")
            params.append(vm)
        if status:
            where.append("status = ?")
            params.append(status)
        return self.store.list_operations(" AND ".join(where), params, limit=limit)

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
            if op["status"] != "pending":
                raise Conflict(f"operation is {op['status']}; only pending operations can be cancelled", "id")
            if op["kind"] in ("create", "delete"):
                raise Conflict(f"a {op['kind']} cannot be cancelled", "id")
            self.store.update_operation(op_id, status="cancelled", error="cancelled by request", finished=self.clock())
            row = self.store.get_vm_by_id(op["vm_id"])
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
                body = json.loads(text)
            except ValueError as err:
                raise Invalid(f"not JSON: {err}", "spec.json") from None
            return self.update_vm(name, body, if_match, replace=True)[1]
        if file == "cpus":
            return self.update_vm(name, {"cpus": specs.parse_cpus(value)}, if_match)[1]
        if file == "memory":
            memory = specs.parse_size_mib(value, "memory", specs.MIN_MEMORY_MIB, specs.MAX_MEMORY_MIB)
            return self.update_vm(name, {"memory": memory}, if_match)[1]
        if file == "host":
            row = self.store.get_vm(name)
            if value == (row["host"] or ""):
                return None
            raise Conflict("moving a VM to another host needs live migration, which this appliance "
                           "does not offer yet (single host)", "host")
        raise NotFound(f"no file {file!r} in a VM", "file")

    def status(self, row: dict) -> dict:
        ops = self.store.list_operations("vm_id = ?", [row["id"]], limit=5)
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

    def _register_image(self, name: str, tmp: Path, source: str) -> dict:
        try:
            details = images.check(tmp)
            dest = self.config.images_dir / f"{name}.{details['format']}"
            with self.store.transaction():
                if list(self.store.db.query("SELECT 1 FROM images WHERE name = ?", [name])):
                    raise Conflict(f"an image named {name!r} exists", "name")
                os.replace(tmp, dest)
                self.store.insert_image({"name": name, "path": str(dest), "created": self.clock(),
                                         "source": source, **details})
                self.store.add_event("image-imported", f"image {name} imported from {source}")
        finally:
            tmp.unlink(missing_ok=True)
        return self.store.get_image(name)

    def _image_tmp(self, name: str) -> Path:
        specs.validate_name(name, "name")
        if list(self.store.db.query("SELECT 1 FROM images WHERE name = ?", [name])):
            raise Conflict(f"an image named {name!r} exists", "name")
        return self.config.images_dir / f".upload-{name}-{uuid.uuid4().hex}"

    def import_image(self, name: str, path: str) -> dict:
        """Copy a local file into the image store (the original stays where it is)."""
        tmp = self._image_tmp(name)
        source = Path(path)
        if not source.is_file():
            raise Invalid(f"{path} is not a file on the appliance's host", "path")
        images.check(source)  # refuse before copying gigabytes
        shutil.copyfile(source, tmp)
        return self._register_image(name, tmp, str(source))

    def upload_image(self, name: str, stream: IO[bytes], length: int | None) -> dict:
        tmp = self._image_tmp(name)
        written = 0
        try:
            with open(tmp, "wb") as out:
                while True:
                    chunk = stream.read(1 << 20)
                    if not chunk:
                        break
                    out.write(chunk)
                    written += len(chunk)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        if length is not None and written != length:
            tmp.unlink(missing_ok=True)
            raise Invalid(f"upload ended after {written} of {length} bytes", "body")
        if written == 0:
            tmp.unlink(missing_ok=True)
            raise Invalid("the body is empty; send the image file", "body")
        return self._register_image(name, tmp, "upload")

    def delete_image(self, name: str) -> None:
        with self.store.transaction():
            image = self.store.get_image(name)
            users = [r["name"] for r in self.store.list_vms() if r["spec"]["image"] == name]
            if users:
                raise Conflict(f"image is used by {', '.join(users[:5])}", "name")
            self.store.delete_image(name)
            self.store.add_event("image-deleted", f"image {name} deleted")
        Path(image["path"]).unlink(missing_ok=True)

    # -- hosts and health -------------------------------------------------------------------
    def list_hosts(self, heartbeat_age: float = 10.0) -> list[dict]:
        """Hosts, with `observed_state`: down when libvirt stopped answering the
        controller's heartbeat (or the heartbeat itself is stale), else the
        administrative state (enabled | disabled | maintenance)."""
        now = self.clock()
        hosts = self.store.list_hosts()
        for host in hosts:
            fresh = host["last_seen"] is not None and now - host["last_seen"] < heartbeat_age
            host["observed_state"] = host["state"] if host["up"] and fresh else "down"
        return hosts

    def readiness(self, heartbeat_age: float = 10.0) -> dict:
        checks: dict[str, dict] = {}
        try:
            self.store.ping()
            checks["store"] = {"ok": True}
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            checks["store"] = {"ok": False, "reason": str(err)}
            return {"ready": False, "checks": checks}
        now = self.clock()
        hosts = self.store.list_hosts()
        if not hosts:
            checks["controller"] = {"ok": False, "reason": "the controller has not reported yet"}
        for host in hosts:
            fresh = host["last_seen"] is not None and now - host["last_seen"] < heartbeat_age
            ok = bool(host["up"]) and fresh
            reason = "" if ok else ("libvirt unreachable" if not host["up"] else "no heartbeat from the controller")
            checks[f"host:{host['name']}"] = {"ok": ok, **({"reason": reason} if reason else {})}
        return {"ready": all(c["ok"] for c in checks.values()), "checks": checks}

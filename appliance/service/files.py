"""The files of a VM directory (vms/NAME/) and of a host directory
(hosts/NAME/): what each holds and what a write to it does, for REST and the
mount alike. (Issue 10's shared file table replaces this module.)"""

from __future__ import annotations

import json
from typing import Any

from appliance import jsonio
from appliance import spec as specs
from appliance.errors import Forbidden, Invalid, NotFound
from appliance.service.base import as_json as _json
from appliance.service.hosts import Hosts
from appliance.service.operations import Operations
from appliance.service.state import StateChanges
from appliance.service.vms import VMs
from appliance.store import Row

# The files of one VM directory, in the order `ls` shows them: name -> writable.
VM_FILES = {
    "state": True,
    "spec.json": True,
    "cpus": True,
    "memory": True,
    "host": True,
    "addresses": False,
    "console": False,
    "events": False,
    "status.json": False,
    "domain.xml": False,
}


# The files of one host directory (hosts/NAME/), as for VMs: name -> writable.
HOST_FILES = {
    "state": True,
    "uri": False,
    "capacity": False,
    "allocated": False,
    "vms": False,
    "status.json": False,
}


class Files(VMs, StateChanges, Operations, Hosts):
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
            return "".join(
                f"{a['address']}/{a['prefix']}\n" for a in json.loads(row["addresses"] or "[]")
            )
        if file == "console":
            return self.read_console(name).decode("utf-8", "replace")
        if file == "events":
            return self.format_events(self.store.list_events(row["id"]))
        if file == "status.json":
            return _json(self.status(row))
        if file == "domain.xml":
            return row["domain_xml"] or ""
        raise NotFound(f"no file {file!r} in a VM", "file")

    def write_vm_file(
        self, name: str, file: str, text: str, if_match: int | None = None
    ) -> Row | None:
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
            memory = specs.parse_size_mib(
                value, "memory", specs.MIN_MEMORY_MIB, specs.MAX_MEMORY_MIB
            )
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
                    raise Invalid(
                        "unknown field; known fields are host, force, bandwidth", sorted(unknown)[0]
                    )
                return self.migrate_vm(
                    name,
                    body.get("host"),
                    force=body.get("force", False),
                    bandwidth=body.get("bandwidth"),
                    if_match=if_match,
                )
            return self.migrate_vm(name, value, force=force, if_match=if_match)
        raise NotFound(f"no file {file!r} in a VM", "file")

    def read_host_file(self, name: str, file: str) -> str:
        view = self.get_host(name)
        if file == "state":
            return f"{view['observed_state']}\n"
        if file == "uri":
            return f"{view['uri']}\n"
        if file == "capacity":
            return "".join(f"{k} {v}\n" for k, v in view["capacity"].items())
        if file == "allocated":
            return "".join(f"{k} {v}\n" for k, v in view["allocated"].items())
        if file == "vms":
            return "".join(vm + "\n" for vm in self.store.vm_names_on_host(name))
        if file == "status.json":
            return _json(view)
        raise NotFound(f"no file {file!r} in a host", "file")

    def write_host_file(self, name: str, file: str, text: str) -> dict[str, Any]:
        if file not in HOST_FILES:
            raise NotFound(f"no file {file!r} in a host", "file")
        if not HOST_FILES[file]:
            raise Forbidden(f"{file} is read-only", file)
        return self.set_host_state(name, text.strip())

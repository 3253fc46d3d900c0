"""The files of a VM directory (vms/NAME/) and of a host directory (hosts/NAME/):
one table that both views read.

An entry says what a file holds (its reader), whether and how it is written
(its writer; none: read-only), and what REST answers with (content type, and
for value files a JSON form). The mount lists a directory in the table's order,
shows a file writable exactly when it has a writer, and reads and writes
through the same two functions as `GET`/`PUT /v1/vms/NAME/FILE`; neither view
names a file. Two files are not text: the console takes bytes as they come
(typed into the serial port: no framing, no decoding, nothing to wait for),
and screen.png is binary, made when it is read (appliance/file_kinds.py: what
an entry is). Adding a file to `vms/NAME/` is one entry in VM_FILES.

Readers and writers call the service's public methods: every rule stays there.
A writer returns what it started (Written); each view waits for it its own way
(a shell's write until the operation ends, REST bounded or not at all with
`?wait=false`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from appliance import jsonio
from appliance import spec as specs
from appliance.errors import Invalid, TooLarge
from appliance.file_kinds import (
    CONSOLE_INPUT_MAX_BYTES,
    JSON,
    MAX_INT,
    PNG,
    TEXT,
    XML,
    Directory,
    File,
    Log,
    Query,
    Reader,
    Written,
    binary_file,
    bytes_file,
    events_text,
    json_text,
    value_file,
)
from appliance.service.base import observed_state

if TYPE_CHECKING:
    from appliance.service import Service

# What the views import from here (the kinds are appliance/file_kinds.py's).
__all__ = ["CONSOLE_INPUT_MAX_BYTES", "HOST_FILES", "JSON", "MAX_INT", "PNG", "TEXT", "VM_FILES",
           "XML", "Directory", "File", "Log", "Written", "events_text", "json_text"]


def _operations(*ops: dict | None) -> tuple[dict, ...]:
    return tuple(op for op in ops if op is not None)


# -- vms/NAME/ ------------------------------------------------------------------------------------
# The value files read the stored row alone, not the VM's whole view (readiness,
# conditions...): `cat vms/X/state` is the hot path of scripts that poll. They only read
# it, so they take the row this thread keeps while nothing is committed (vm_row_read), and
# (of_row) the mount keeps what they read the same way.
def _read_state(service: Service, name: str) -> str:
    return observed_state(service.vm_row_read(name)) + "\n"


def _write_state(service: Service, name: str, text: str, if_match: int | None) -> Written:
    return Written(name, _operations(service.set_state(name, text.strip(), if_match)))


def _read_spec(service: Service, name: str) -> str:
    return json_text(service.vm_row_read(name)["spec"])


def _write_spec(service: Service, name: str, text: str, if_match: int | None) -> Written:
    try:
        body = jsonio.loads(text)
    except ValueError as err:
        raise Invalid(f"not JSON: {err}", "spec.json") from None
    vm, op = service.update_vm(name, body, if_match, replace=True)
    return Written(vm["name"], _operations(op))


def _read_cpus(service: Service, name: str) -> str:
    return f"{service.vm_row_read(name)['spec']['cpus']}\n"


def _write_cpus(service: Service, name: str, text: str, if_match: int | None) -> Written:
    cpus = specs.parse_cpus(text.strip())
    return Written(name, _operations(service.update_vm(name, {"cpus": cpus}, if_match)[1]))


def _read_memory(service: Service, name: str) -> str:
    return f"{service.vm_row_read(name)['spec']['memory']}\n"


def _write_memory(service: Service, name: str, text: str, if_match: int | None) -> Written:
    memory = specs.parse_size_mib(text.strip(), "memory", specs.MIN_MEMORY_MIB,
                                  specs.MAX_MEMORY_MIB)
    return Written(name, _operations(service.update_vm(name, {"memory": memory}, if_match)[1]))


def _read_host(service: Service, name: str) -> str:
    return f"{service.vm_row_read(name)['host'] or ''}\n"


def _write_host(service: Service, name: str, text: str, if_match: int | None) -> Written:
    """A host name, or {"host": NAME, "force": false, "bandwidth": MiB/s}: migrate there
    (live when it runs, a move when it is stopped)."""
    value = text.strip()
    if not value.startswith("{"):
        return Written(name, _operations(service.migrate_vm(name, value, if_match=if_match)))
    try:
        body = jsonio.loads(value)
    except ValueError as err:
        raise Invalid(f"not JSON: {err}", "host") from None
    if not isinstance(body, dict):
        raise Invalid('must be a host name or {"host": NAME, "force": false}', "host")
    unknown = set(body) - {"host", "force", "bandwidth"}
    if unknown:
        raise Invalid("unknown field; known fields are host, force, bandwidth",
                      sorted(unknown)[0])
    op = service.migrate_vm(name, body.get("host"), force=body.get("force", False),
                            bandwidth=body.get("bandwidth"), if_match=if_match)
    return Written(name, _operations(op))


def _read_addresses(service: Service, name: str) -> str:
    row = service.vm_row(name)
    addresses = json.loads(row["addresses"] or "[]")
    return "".join(f"{a['address']}/{a['prefix']}\n" for a in addresses)


def _read_console(service: Service, name: str) -> str:
    return service.read_console(name).decode("utf-8", "replace")


def _console_at(service: Service, name: str, offset: int, limit: int | None) -> bytes:
    return service.read_console(name, offset, limit)


def _console_stat(service: Service, name: str) -> tuple[int, float] | None:
    try:
        info = os.stat(service.console_path(name))
    except FileNotFoundError:
        return None
    return info.st_size, info.st_mtime


def _type_console(service: Service, name: str, data: bytes) -> Written:
    """Bytes typed into the serial port, as they are (control characters too: a ^C is a
    ^C). Nothing waits on an operation; the broker answers once they are sent."""
    if len(data) > CONSOLE_INPUT_MAX_BYTES:
        raise TooLarge(f"at most {CONSOLE_INPUT_MAX_BYTES} bytes are typed at once, "
                       f"not {len(data)}", "console")
    if data:
        service.console_input(name, data)
    else:  # nothing to type: still the caller's VM, running (404, 409 as for bytes)
        service.console_target(name)
    return Written(name, answer={"name": name, "typed": len(data)})


def _screenshot(service: Service, name: str) -> bytes:
    return service.screenshot(name)


def _read_events(service: Service, name: str) -> str:
    return events_text(service.list_events(name))


def _events_as_json(service: Service, name: str, text: str, query: Query) -> dict:
    since = query.get_param_as_int("since", default=0, min_value=0, max_value=MAX_INT) or 0
    return {"items": service.list_events(name, since=since)}


def _read_lock(service: Service, name: str) -> str:
    """Empty when unlocked; `alice: exam running` (the locker, the reason) when locked."""
    lock = service.get_lock(name)
    return "" if lock is None else f"{lock['by']}: {lock['reason']}\n"


def _write_lock(service: Service, name: str, text: str, if_match: int | None) -> Written:
    """A reason locks (the writer is the locker); an empty line unlocks."""
    return Written(name, answer=service.set_lock(name, text, if_match))


def _clear_lock(service: Service, name: str) -> Written:
    service.unlock_vm(name)
    return Written(name)


def _lock_as_json(service: Service, name: str, text: str, query: Query) -> dict:
    return {"lock": service.get_lock(name)}


def _lock_from_json(body: dict) -> str:
    """{"lock": "exam running"} locks, {"lock": null} or {"lock": ""} unlocks."""
    reason = body["lock"]
    if reason is None:
        return ""
    if not isinstance(reason, str):
        raise Invalid('expected {"lock": "the reason"} (null or "" unlocks)', "lock")
    return reason


def _read_rebuild(service: Service, name: str) -> str:
    """The image a rebuild makes the root disk from (the VM's own)."""
    return service.vm_row_read(name)["spec"]["image"] + "\n"


def _write_rebuild(service: Service, name: str, text: str, if_match: int | None) -> Written:
    """`echo IMAGE > rebuild` reimages the root disk from IMAGE (an empty line: its own)."""
    image = text.strip()
    return Written(name, _operations(
        service.rebuild_vm(name, {"image": image} if image else {}, if_match)))


def _rebuild_from_json(body: dict) -> str:
    """PUT {"rebuild": IMAGE} (or {"image": IMAGE}, POST's body; null: its own image)."""
    image = body.get("rebuild", body.get("image"))
    if image is not None and not isinstance(image, str):
        raise Invalid("must be the name of an image", "image")
    return image or ""


def _read_status(service: Service, name: str) -> str:
    return json_text(service.status(service.vm_row(name)))


def _read_domain_xml(service: Service, name: str) -> str:
    return service.vm_row(name)["domain_xml"] or ""


VM_FILES = Directory("VM", (
    value_file("state", _read_state, _write_state, of_row=True),
    File("spec.json", _read_spec, _write_spec, content_type=JSON, of_row=True),
    value_file("cpus", _read_cpus, _write_cpus, number=True, of_row=True),
    value_file("memory", _read_memory, _write_memory, number=True, of_row=True),
    # Through REST the host file alone takes more than its value: {"host": "h2", "force": true}.
    value_file("host", _read_host, _write_host, from_json=json.dumps, of_row=True),
    File("addresses", _read_addresses),
    bytes_file("console", _read_console, _type_console,
                log=Log(read_at=_console_at, stat=_console_stat)),
    File("events", _read_events, as_json=_events_as_json),
    File("lock", _read_lock, _write_lock, as_json=_lock_as_json, from_json=_lock_from_json,
         clear=_clear_lock),
    value_file("rebuild", _read_rebuild, _write_rebuild, from_json=_rebuild_from_json,
               of_row=True),
    File("status.json", _read_status, content_type=JSON),
    File("domain.xml", _read_domain_xml, content_type=XML),
    binary_file("screen.png", _screenshot, PNG),
))


# -- hosts/NAME/ ----------------------------------------------------------------------------------
def _read_host_state(service: Service, name: str) -> str:
    return service.get_host(name)["observed_state"] + "\n"


def _write_host_state(service: Service, name: str, text: str, if_match: int | None) -> Written:
    """enabled | disabled | maintenance; the answer is the host with its drain report, whose
    migrations and moves are the operations a shell's write waits for."""
    answer = service.set_host_state(name, text.strip())
    drain: Mapping[str, list] = answer.get("drain") or {}
    moves = drain.get("migrating", []) + drain.get("moving", [])
    return Written(name, tuple({"id": e["operation"]} for e in moves if e.get("operation")), answer)


def _read_uri(service: Service, name: str) -> str:
    return service.get_host(name)["uri"] + "\n"


def _host_lines(key: str) -> Reader:
    """`NAME VALUE` lines of one mapping of the host's view (capacity, allocated)."""

    def read(service: Service, name: str) -> str:
        return "".join(f"{k} {v}\n" for k, v in service.get_host(name)[key].items())

    return read


def _read_host_vms(service: Service, name: str) -> str:
    """The VMs placed on the host that the caller sees, running or not, one name a line."""
    return "".join(vm + "\n" for vm in service.host_vm_names(name))


def _read_host_status(service: Service, name: str) -> str:
    return json_text(service.get_host(name))


HOST_FILES = Directory("host", (
    value_file("state", _read_host_state, _write_host_state),
    File("uri", _read_uri),
    File("capacity", _host_lines("capacity")),
    File("allocated", _host_lines("allocated")),
    File("vms", _read_host_vms),
    File("status.json", _read_host_status, content_type=JSON),
))

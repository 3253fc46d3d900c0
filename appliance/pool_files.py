"""The files of a pool directory (pools/NAME/): one table that both views read,
as appliance/files.py's VM_FILES is for vms/NAME/.

    template.json  rw  the members' spec without a name; a write is a template
                       change (a new revision, rolled through the members)
    replicas       rw  how many members: `echo 5 > replicas` scales
    paused         rw  true: the roll-out of a template change waits
    status.json    ro  replicas, ready_replicas, updated_replicas, the members,
                       the roll-out under way, names skipped, why it is short

A write records what the pool should be and returns at once: the pool
controller converges the members (its work is followed in status.json).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import jsonio
from appliance.errors import Invalid
from appliance.file_kinds import JSON, Directory, File, Written, json_text, value_file

if TYPE_CHECKING:
    from appliance.service import Service


def _read_template(service: Service, name: str) -> str:
    return json_text(service.pool_row(name)["template"])


def _write_template(service: Service, name: str, text: str, if_match: int | None) -> Written:
    try:
        body = jsonio.loads(text)
    except ValueError as err:
        raise Invalid(f"not JSON: {err}", "template.json") from None
    return Written(name, answer=service.update_pool(name, {"template": body}))


def _read_replicas(service: Service, name: str) -> str:
    return f"{service.pool_row(name)['replicas']}\n"


def _write_replicas(service: Service, name: str, text: str, if_match: int | None) -> Written:
    return Written(name, answer=service.update_pool(name, {"replicas": text.strip()}))


def _read_paused(service: Service, name: str) -> str:
    return "true\n" if service.pool_row(name)["paused"] else "false\n"


def _write_paused(service: Service, name: str, text: str, if_match: int | None) -> Written:
    return Written(name, answer=service.update_pool(name, {"paused": text.strip()}))


def _paused_from_json(body: dict) -> str:
    """{"paused": true} as the text a shell writes."""
    value = body["paused"]
    if not isinstance(value, bool):
        raise Invalid("must be true or false", "paused")
    return "true" if value else "false"


def _read_status(service: Service, name: str) -> str:
    return json_text(service.pool_status(service.pool_row(name)))


POOL_FILES = Directory("pool", (
    File("template.json", _read_template, _write_template, content_type=JSON),
    value_file("replicas", _read_replicas, _write_replicas, number=True),
    value_file("paused", _read_paused, _write_paused, from_json=_paused_from_json),
    File("status.json", _read_status, content_type=JSON),
))

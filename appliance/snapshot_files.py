"""The files of a snapshot directory (vms/NAME/snapshots/S/): one table that both
views read, as appliance/files.py's VM_FILES is for vms/NAME/.

    info.json   ro  the snapshot as service.get_snapshot shows it
    action      rw  `echo revert > action` reverts the VM to it (REST: PUT
                    {"action": "revert"}, or POST .../S/revert)

A table's readers and writers take one directory name; a snapshot's directory
is named by its VM and itself, so the name they take is `VM/SNAPSHOT` (key()):
both are DNS labels, so the slash cannot be part of either.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from appliance.errors import Invalid
from appliance.file_kinds import JSON, Directory, File, Written, json_text, value_file

if TYPE_CHECKING:
    from appliance.service import Service

# What `action` takes: each word and the service call it makes.
ACTIONS = ("revert",)


def key(vm: str, snapshot: str) -> str:
    """The one directory name the table's readers and writers take."""
    return f"{vm}/{snapshot}"


def split(name: str) -> tuple[str, str]:
    vm, _, snapshot = name.partition("/")
    return vm, snapshot


def _read_info(service: Service, name: str) -> str:
    return json_text(service.get_snapshot(*split(name)))


def _read_action(service: Service, name: str) -> str:
    """Nothing to read but that it exists: the actions are written, not kept."""
    service.get_snapshot(*split(name))
    return ""


def _write_action(service: Service, name: str, text: str, if_match: int | None) -> Written:
    word = text.strip()
    if word not in ACTIONS:
        shown = word[:32] + ("..." if len(word) > 32 else "")
        raise Invalid(f"{shown!r} is not an action; known: {', '.join(ACTIONS)}", "action")
    vm, snapshot = split(name)
    return Written(name, (service.revert_snapshot(vm, snapshot),))


SNAPSHOT_FILES = Directory("snapshot", (
    File("info.json", _read_info, content_type=JSON),
    value_file("action", _read_action, _write_action),
))

"""The OpenAPI document's data disks and CD-ROM drives of a VM (issue 14, part B),
merged into openapi.py's SCHEMAS and PATHS: what appliance/api/disks.py serves and
appliance/service/disks.py accepts. Writes wait for their operation unless wait=false."""
from __future__ import annotations

from typing import Any

from appliance.api.openapi_shared import (
    ERROR,
    ERRORS,
    IF_MATCH,
    NAME,
    WAIT,
    integer,
    json_answer,
    list_of,
    ref,
    string,
)
from appliance.model.media import MAX_CDROMS

DISK = {"name": "disk", "in": "path", "required": True, "schema": string()}
INDEX = {"name": "index", "in": "path", "required": True,
         "schema": string(pattern=f"^[0-{MAX_CDROMS - 1}]$")}
ACCEPTED = json_answer(ref("Accepted"), "accepted: still running (wait=false, or the wait ran out)")
CHANGE_ERRORS = {**ERRORS, "409": {**ERROR, "description": (
    "conflicts: the disks change while the VM has snapshots, the growth does not fit its "
    "host or quota, or another user locked the VM")}}
SIZE = {"oneOf": [integer(minimum=1), string(maxLength=32)],
        "description": "MiB, or with a unit: 512M, 20G, 1T"}
TEXT_OR_JSON = {"text/plain": {"schema": string()}}
WRITE_PARAMS = [*WAIT, IF_MATCH]


def _text_answer(description: str) -> dict:
    return {"description": description, "content": {"text/plain": {"schema": string()}}}


SCHEMAS: dict[str, Any] = {
    "DiskInfo": {
        "type": "object", "required": ["name", "size", "size_bytes", "file"],
        "properties": {
            "name": string(), "size": integer(description="MiB, as the spec has it"),
            "size_bytes": integer(), "file": string(description="its file in the VM's folder"),
            "attached_size": integer(nullable=True, description=(
                "MiB the running domain has (null: not running); differs from size while "
                "a change waits for a restart"))}},
    "Cdrom": {"type": "object", "required": ["index", "image"],
              "properties": {"index": integer(), "image": string(description='"" = empty')}},
}

PATHS: dict[str, Any] = {
    "/v1/vms/{name}/disks": {
        "parameters": [NAME],
        "get": {"summary": "the VM's data disks",
                "responses": {"200": json_answer(list_of(ref("DiskInfo"))), **ERRORS}},
    },
    "/v1/vms/{name}/disks/{disk}": {
        "parameters": [NAME, DISK],
        "get": {"summary": "one data disk", "responses": {"200": json_answer(ref("DiskInfo")),
                                                          **ERRORS}},
        "put": {"summary": "add a blank data disk of this size (hot-plugged into a running "
                           "VM), or grow an existing one (live); a smaller size is refused",
                "parameters": WRITE_PARAMS,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["size"],
                                                    "properties": {"size": SIZE}}},
                    **TEXT_OR_JSON}},
                "responses": {"200": json_answer(ref("DiskInfo"), "grown"),
                              "201": json_answer(ref("DiskInfo"), "added"),
                              "202": ACCEPTED, **CHANGE_ERRORS}},
        "delete": {"summary": "detach the disk (live) and delete it and its data; a guest "
                              "that does not release it keeps it until its next restart",
                   "parameters": WRITE_PARAMS,
                   "responses": {"204": {"description": "removed"}, "202": ACCEPTED,
                                 **CHANGE_ERRORS}},
    },
    "/v1/vms/{name}/disks/{disk}/size": {
        "parameters": [NAME, DISK],
        "get": {"summary": "the disk's size in MiB, as the mount's disks/D/size",
                "responses": {"200": _text_answer("MiB"), **ERRORS}},
        "put": {"summary": "grow the disk (live on a running VM); smaller: 422",
                "parameters": WRITE_PARAMS,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["size"],
                                                    "properties": {"size": SIZE}}},
                    **TEXT_OR_JSON}},
                "responses": {"200": json_answer(ref("DiskInfo"), "grown"), "202": ACCEPTED,
                              **CHANGE_ERRORS}},
    },
    "/v1/vms/{name}/cdroms": {
        "parameters": [NAME],
        "get": {"summary": "the VM's CD-ROM drives and the ISO image each holds",
                "responses": {"200": json_answer(list_of(ref("Cdrom"))), **ERRORS}},
    },
    "/v1/vms/{name}/cdroms/{index}": {
        "parameters": [NAME, INDEX],
        "get": {"summary": 'the ISO image in the drive ("" empty), as text',
                "responses": {"200": _text_answer("an image name"), **ERRORS}},
        "put": {"summary": 'insert an ISO image of the image store, or eject ("") - live on '
                           "a running VM (drives themselves are added through the spec)",
                "parameters": WRITE_PARAMS,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["image"],
                                                    "properties": {"image": string()}}},
                    **TEXT_OR_JSON}},
                "responses": {"200": json_answer(ref("Cdrom"), "changed"), "202": ACCEPTED,
                              **CHANGE_ERRORS}},
    },
}

"""The OpenAPI document's snapshots, backups, backup targets, restores and clones (merged
into openapi.py's SCHEMAS and PATHS); what appliance/api/snapshots.py and backups.py serve
and the service (service/snapshots.py, backups.py, backup_targets.py, restores.py) accepts.

Work that takes an operation waits for it (bounded) unless wait=false: 200 with the ended
operation (201 and the made thing for a snapshot or a new VM), else 202 with it.
"""
from __future__ import annotations

from typing import Any

from appliance.api.openapi_shared import (
    ALL_PROJECTS,
    DNS_NAME,
    ERROR,
    ERRORS,
    NAME,
    NOT_ADMIN,
    WAIT,
    boolean,
    integer,
    json_answer,
    list_of,
    number,
    ref,
    string,
)
from appliance.model import BackupKind, BackupStatus, SnapshotState
from appliance.snapshot_files import ACTIONS, SNAPSHOT_FILES

CHANGE_ERRORS = {**ERRORS, "409": {**ERROR, "description": (
    "conflicts with the current state (a name taken, too many snapshots, a VM not in the "
    "state the work needs, a backup another depends on), or another user locked the VM")}}
ACCEPTED = json_answer(ref("Accepted"), "accepted: still running (wait=false, or the wait ran out)")
ENDED = json_answer(ref("Accepted"), "done: the ended operation")
SNAPSHOT = {"name": "snapshot", "in": "path", "required": True, "schema": string()}
BACKUP_ID = {"name": "backup_id", "in": "path", "required": True, "schema": string()}
HOST = string(description="place the new VM on this host (the scheduler still checks it)")


def _body(schema: dict, required: bool = True) -> dict:
    return {"required": required, "content": {"application/json": {"schema": schema}}}


NEW_VM = {"type": "object", "required": ["vm", "operation"],
          "properties": {"vm": ref("VM"), "operation": ref("Operation")}}

SCHEMAS: dict[str, Any] = {
    "Snapshot": {
        "type": "object", "required": ["name", "vm", "memory", "state", "created", "current"],
        "description": "a libvirt internal (qcow2) snapshot of every writable disk, and of "
                       "the RAM and device state when memory is true",
        "properties": {
            "name": string(), "vm": string(), "description": string(nullable=True),
            "memory": boolean(), "parent": string(nullable=True),
            "state": string(enum=[s.value for s in SnapshotState]),
            "vm_state": string(nullable=True, description="the VM's state when taken"),
            "size": integer(nullable=True), "created": number(),
            "current": boolean(description="the snapshot the VM's disks now descend from"),
            "error": string(nullable=True)}},
    "SnapshotCreate": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "properties": {
            "name": DNS_NAME,
            "memory": boolean(description="the RAM and device state too (a running VM only; "
                                          "a revert resumes it); default false: disks only, "
                                          "crash-consistent while it runs"),
            "description": string(maxLength=200)}},
    "Clone": {
        "type": "object", "required": ["name"], "additionalProperties": False,
        "description": "a new VM with full standalone copies of the disks (no backing file), "
                       "a new id, MAC and cloud-init instance id",
        "properties": {"name": DNS_NAME,
                       "from_snapshot": string(description="copy the disks as this "
                                                           "snapshot has them"),
                       "host": HOST}},
    "BackupDisk": {
        "type": "object",
        "properties": {"name": string(), "file": string(), "virtual_size": integer(),
                       "bytes": integer(nullable=True)}},
    "Backup": {
        "type": "object", "required": ["id", "kind", "status"],
        "description": "a directory TARGET/vm-appliance/VM_ID/ID/ with manifest.json and one "
                       "qcow2 file per disk; an incremental's files have the previous "
                       "backup's as their backing files (relative paths)",
        "properties": {
            "id": string(), "vm_id": string(), "vm_name": string(), "project": string(),
            "target": string(), "kind": string(enum=[k.value for k in BackupKind]),
            "status": string(enum=[s.value for s in BackupStatus]),
            "parent": string(nullable=True), "chain": string(nullable=True),
            "checkpoint": string(nullable=True), "scheduled": {},
            "quiesced": {}, "size": integer(nullable=True, description="bytes on the target"),
            "operation": string(nullable=True),
            "created": number(), "finished": number(nullable=True),
            "error": string(nullable=True),
            "disks": {"type": "array", "items": ref("BackupDisk")},
            "path": string(description="its folder on the target"),
            "depends_on": {"type": "array", "items": string(),
                           "description": "the backups it needs, up to its full one"}}},
    "BackupCreate": {
        "type": "object", "additionalProperties": False,
        "properties": {"target": DNS_NAME,
                       "full": boolean(description="a full backup even when an incremental "
                                                   "one could be taken")}},
    "Restore": {
        "type": "object", "additionalProperties": False,
        "description": "name: into a new VM of that name; no name: in place, into the backup's "
                       "VM (stopped)",
        "properties": {"name": DNS_NAME, "host": HOST}},
    "BackupTarget": {
        "type": "object", "required": ["name", "path"],
        "properties": {"name": string(), "path": string(), "created": number(),
                       "available": boolean(description="the directory is there (an NFS "
                                                        "share that is not mounted: false)"),
                       "free_bytes": integer(nullable=True),
                       "total_bytes": integer(nullable=True),
                       "backups": integer(description="backups listed in it")}},
    "BackupTargetCreate": {
        "type": "object", "required": ["name", "path"], "additionalProperties": False,
        "properties": {"name": DNS_NAME,
                       "path": string(maxLength=4096, description=(
                           "an existing directory, absolute and canonical (no symbolic "
                           "links), not a system directory nor the appliance's own"))}},
}

SNAPSHOT_FILE_ENUM = list(SNAPSHOT_FILES)
PATHS: dict[str, Any] = {
    "/v1/vms/{name}/snapshots": {
        "parameters": [NAME],
        "get": {"summary": "the VM's snapshots",
                "responses": {"200": json_answer(list_of(ref("Snapshot"))), **ERRORS}},
        "post": {"summary": "take a snapshot (running or stopped)", "parameters": WAIT,
                 "requestBody": _body(ref("SnapshotCreate")),
                 "responses": {"201": json_answer(
                     {"type": "object", "required": ["operation"], "properties": {
                         "operation": ref("Operation"), "snapshot": ref("Snapshot")}},
                     "taken"), "202": ACCEPTED, **CHANGE_ERRORS}},
    },
    "/v1/vms/{name}/snapshots/{snapshot}": {
        "parameters": [NAME, SNAPSHOT],
        "get": {"summary": "one snapshot", "responses": {"200": json_answer(ref("Snapshot")),
                                                         **ERRORS}},
        "delete": {"summary": "delete a snapshot (libvirt merges it)", "parameters": WAIT,
                   "responses": {"200": ENDED, "202": ACCEPTED, **CHANGE_ERRORS}},
    },
    "/v1/vms/{name}/snapshots/{snapshot}/revert": {
        "parameters": [NAME, SNAPSHOT],
        "post": {"summary": "revert the VM to the snapshot: with memory, it resumes as it "
                            "was; disks only, it keeps its desired state (a running VM "
                            "boots on the reverted disks). Ends the incremental backup "
                            "chain (the next backup is full)",
                 "parameters": WAIT,
                 "responses": {"200": ENDED, "202": ACCEPTED, **CHANGE_ERRORS}},
    },
    "/v1/vms/{name}/snapshots/{snapshot}/{file}": {
        "parameters": [NAME, SNAPSHOT, {"name": "file", "in": "path", "required": True,
                                        "schema": string(enum=SNAPSHOT_FILE_ENUM)}],
        "get": {"summary": "a file of the snapshot directory, as in the mount (info.json: "
                           "the snapshot; action: empty)",
                "responses": {"200": {"description": "the file", "content": {
                    "application/json": {"schema": {}}, "text/plain": {"schema": string()}}},
                    **ERRORS}},
        "put": {"summary": f"action: one of {', '.join(ACTIONS)} (revert: as POST .../revert)",
                "parameters": WAIT,
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {
                        "type": "object", "required": ["action"],
                        "properties": {"action": string(enum=list(ACTIONS))}}},
                    "text/plain": {"schema": string()}}},
                "responses": {"200": ENDED, "202": ACCEPTED, **CHANGE_ERRORS,
                              "403": {**ERROR, "description": "the file is read-only"}}},
    },
    "/v1/vms/{name}/clone": {
        "parameters": [NAME],
        "post": {"summary": "clone the VM (running or stopped, or as a snapshot has it) into "
                            "a new VM", "parameters": WAIT,
                 "requestBody": _body(ref("Clone")),
                 "responses": {"201": json_answer(NEW_VM, "made"),
                               "202": json_answer(NEW_VM, "accepted: the copy runs"),
                               **CHANGE_ERRORS}},
    },
    "/v1/vms/{name}/backups": {
        "parameters": [NAME],
        "get": {"summary": "the VM's backups, newest first",
                "responses": {"200": json_answer(list_of(ref("Backup"))), **ERRORS}},
        "post": {"summary": "back the VM up now: full the first time (and after full_every "
                            "incrementals, or a revert), incremental after; it runs on",
                 "parameters": WAIT, "requestBody": _body(ref("BackupCreate"), required=False),
                 "responses": {"200": ENDED, "202": ACCEPTED, **CHANGE_ERRORS}},
    },
    "/v1/backups": {
        "get": {"summary": "backups, a deleted VM's too", "parameters": [
            {"name": "vm", "in": "query", "schema": string(),
             "description": "a VM's name (a deleted VM's too)"}, ALL_PROJECTS],
            "responses": {"200": json_answer(list_of(ref("Backup"))), **ERRORS,
                          "403": NOT_ADMIN}},
    },
    "/v1/backups/{backup_id}": {
        "parameters": [BACKUP_ID],
        "get": {"summary": "one backup", "responses": {"200": json_answer(ref("Backup")),
                                                       **ERRORS}},
        "delete": {"summary": "delete a backup (its folder too); 409 while a kept backup "
                              "depends on it",
                   "responses": {"204": {"description": "deleted"}, **CHANGE_ERRORS}},
    },
    "/v1/backups/{backup_id}/restore": {
        "parameters": [BACKUP_ID],
        "post": {"summary": "restore the backup (its chain verified first): into a new VM, "
                            "or in place into its stopped VM",
                 "parameters": WAIT, "requestBody": _body(ref("Restore"), required=False),
                 "responses": {"200": ENDED, "201": json_answer(NEW_VM, "made (a new VM)"),
                               "202": json_answer({"oneOf": [ref("Accepted"), NEW_VM]},
                                                  "accepted: the copy runs"),
                               **CHANGE_ERRORS}},
    },
    "/v1/backup-targets": {
        "get": {"summary": "backup targets (directories) and their free space",
                "responses": {"200": json_answer(list_of(ref("BackupTarget"))), **ERRORS}},
        "post": {"summary": "add a backup target (admin)",
                 "requestBody": _body(ref("BackupTargetCreate")),
                 "responses": {"201": json_answer(ref("BackupTarget"), "added"), **ERRORS,
                               "409": {**ERROR, "description": "the name is taken"}}},
    },
    "/v1/backup-targets/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one backup target",
                "responses": {"200": json_answer(ref("BackupTarget")), **ERRORS}},
        "delete": {"summary": "remove a backup target (admin): refused while backups in it "
                              "are listed, unless forget (they are forgotten, their files "
                              "left where they are)",
                   "parameters": [{"name": "forget", "in": "query", "schema": boolean()}],
                   "responses": {"204": {"description": "removed"}, **ERRORS,
                                 "409": {**ERROR, "description": "backups in it are listed"}}},
    },
}

"""REST resources of snapshots and clones: /v1/vms/{name}/snapshots[/{snapshot}[/...]]
and /v1/vms/{name}/clone. Each responder reads input, calls one service method
(appliance/service/snapshots.py, restores.py), writes the answer; the rules are there.

Work that takes an operation waits for it by default (bounded), as every write
of the appliance does; `?wait=false` answers 202 {"operation": ...} at once, and
so does a wait that runs out. A clone (a new VM) answers {"vm", "operation"}.
"""
from __future__ import annotations

import falcon

from appliance.api.resources import _body_text, _complete, _read_file
from appliance.service import Service
from appliance.snapshot_files import SNAPSHOT_FILES, key


def answer_operation(req: falcon.Request, resp: falcon.Response, service: Service,
                     op: dict, **more: object) -> bool:
    """{"operation": ..., **more} once the operation ended (raised if it failed); 202 with
    the operation while it runs. True when it ended."""
    if not _complete(req, resp, service, op):
        if more:
            resp.media = {**more, **resp.media}
        return False
    resp.media = {**more, "operation": service.get_operation(op["id"])}
    return True


def answer_new_vm(req: falcon.Request, resp: falcon.Response, service: Service,
                  vm: dict, op: dict) -> None:
    """A new VM (a clone, a restore into a new VM): 201 {"vm", "operation"} once made, 202
    with the VM as it was accepted while the copy runs (Location: the operation, as
    every 202 has it)."""
    if answer_operation(req, resp, service, op, vm=vm):
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/vms/{vm['name']}"
        resp.media["vm"] = service.get_vm(vm["name"])


class Snapshots:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = {"items": self.service.list_snapshots(name)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        op = self.service.create_snapshot(name, req.get_media())
        snapshot = (op.get("params") or {}).get("name")
        if snapshot:
            resp.location = f"/v1/vms/{name}/snapshots/{snapshot}"
        if answer_operation(req, resp, self.service, op) and snapshot:
            resp.status = falcon.HTTP_201
            resp.media["snapshot"] = self.service.get_snapshot(name, snapshot)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str,
                    snapshot: str) -> None:
        resp.media = self.service.get_snapshot(name, snapshot)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str,
                       snapshot: str) -> None:
        answer_operation(req, resp, self.service, self.service.delete_snapshot(name, snapshot))

    def on_post_revert(self, req: falcon.Request, resp: falcon.Response, name: str,
                       snapshot: str) -> None:
        answer_operation(req, resp, self.service, self.service.revert_snapshot(name, snapshot))


class SnapshotFile:
    """The files of a snapshot directory (appliance.snapshot_files), as in the mount."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, snapshot: str,
               file: str) -> None:
        _read_file(req, resp, self.service, SNAPSHOT_FILES.file(file), key(name, snapshot))

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str, snapshot: str,
               file: str) -> None:
        entry = SNAPSHOT_FILES.file(file)
        text = _body_text(req, entry)
        written = SNAPSHOT_FILES.writer(file)(self.service, key(name, snapshot), text, None)
        # `action` is the table's one writable file, and each of its words starts one operation
        answer_operation(req, resp, self.service, written.operations[0])


class Clone:
    def __init__(self, service: Service):
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        vm, op = self.service.clone_vm(name, req.get_media())
        answer_new_vm(req, resp, self.service, vm, op)

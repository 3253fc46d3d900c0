"""REST resources of backups and backup targets: /v1/vms/{name}/backups, /v1/backups[/{id}
[/restore]], /v1/backup-targets[/{name}]. Each responder reads input, calls one service
method (appliance/service/backups.py, backup_targets.py, restores.py), writes the answer.

A backup target's path is the one input of the API that names a host directory: the
policy gives its routes to admins alone, and the service checks the path (absolute,
an existing directory, canonical, not a system one, not the appliance's own).
"""
from __future__ import annotations

import falcon

from appliance.api.resources import _all_projects, created
from appliance.api.snapshots import answer_new_vm, answer_operation
from appliance.service import Service


class VMBackups:
    """One VM's backups, and a backup of it taken now."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        # a VM's path: 404 for a name that is not one of the caller's VMs, as every
        # /v1/vms/{name} (GET /v1/backups?vm= finds a deleted VM's by name too)
        resp.media = {"items": self.service.list_backups(vm=name, vm_must_exist=True)}

    def on_post(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        body = req.get_media(default_when_empty={})  # no body: the policy's target, full or not
        answer_operation(req, resp, self.service, self.service.start_backup(name, body))


class Backups:
    """Every backup the caller sees (?vm= names a VM, a deleted one's too), one, its
    deletion and its restore."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_backups(
            vm=req.get_param("vm"), all_projects=_all_projects(req))}

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, backup_id: str) -> None:
        resp.media = self.service.get_backup(backup_id)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response,
                       backup_id: str) -> None:
        self.service.delete_backup(backup_id)
        resp.status = falcon.HTTP_204

    def on_post_restore(self, req: falcon.Request, resp: falcon.Response,
                        backup_id: str) -> None:
        """{"name": NEW} restores into a new VM; no name: in place, into the stopped VM."""
        vm, op = self.service.restore_backup(backup_id, req.get_media(default_when_empty={}))
        if vm is None:
            answer_operation(req, resp, self.service, op)
        else:
            answer_new_vm(req, resp, self.service, vm, op)


class BackupTargets:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_backup_targets()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        target = self.service.add_backup_target(req.get_media())
        created(resp, f"/v1/backup-targets/{target['name']}", target)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_backup_target(name)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        """?forget=true: even while backups in it are listed (they are forgotten, not
        deleted from the target)."""
        self.service.remove_backup_target(
            name, forget=req.get_param_as_bool("forget", default=False))
        resp.status = falcon.HTTP_204

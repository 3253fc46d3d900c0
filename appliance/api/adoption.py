"""REST resources of VMs in and out (issue 16): POST /v1/vms/adopt takes over a
libvirt domain the appliance did not create; GET /v1/vms/{name}/export gives a
VM as KubeVirt manifests. The rules are appliance/service/adoption.py's.

/v1/vms/adopt is a literal route, matched before /v1/vms/{name}: it answers
POST only, so a VM named `adopt` is read and changed through its files
(/v1/vms/adopt/spec.json, /state, ...) and the mount.
"""
from __future__ import annotations

import falcon

from appliance.api.snapshots import answer_new_vm
from appliance.service import Service


class Adopt:
    def __init__(self, service: Service):
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        vm, op = self.service.adopt_vm(req.get_media())
        answer_new_vm(req, resp, self.service, vm, op)


class Export:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.text = self.service.export_vm(
            name, req.get_param("format"), req.get_param("disk_url"),
            req.get_param("container_disk"), req.get_param("cloud_init"))
        resp.content_type = "application/yaml"

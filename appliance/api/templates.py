"""REST resources of templates: /v1/templates and /v1/templates/{name}. Reading is
everyone's who sees the project; the policy table asks VM_CHANGE of a change and
the service ADMIN as well for a global template (appliance/service/templates.py).
The ETag is the template's revision; If-Match on a change names the one read."""
from __future__ import annotations

import falcon

from appliance.api.resources import _if_match
from appliance.service import Service


def _etag(resp: falcon.Response, template: dict) -> None:
    resp.etag = f'"{template["revision"]}"'


class Templates:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_templates()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        template = self.service.create_template(req.get_media())
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/templates/{template['name']}"
        _etag(resp, template)
        resp.media = template

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        template = self.service.get_template(name)
        _etag(resp, template)
        # /v1/templates/NAME.json is the mount's file, the spec (appliance/api/file_names.py)
        resp.media = template["spec"] if getattr(req.context, "mount_file", False) else template

    def on_put_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._change(req, resp, name, replace=True)

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self._change(req, resp, name, replace=False)

    def _change(self, req: falcon.Request, resp: falcon.Response, name: str,
                replace: bool) -> None:
        template = self.service.change_template(name, req.get_media(), replace=replace,
                                                if_match=_if_match(req))
        _etag(resp, template)
        resp.media = template

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_template(name, if_match=_if_match(req))
        resp.status = falcon.HTTP_204

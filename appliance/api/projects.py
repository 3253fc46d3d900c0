"""REST resources of projects and their quotas: /v1/projects and /v1/projects/{name}.
The policy table (appliance/access/policy.py) lets everyone read the projects
they are in and only admins change them; the service hides the others (404)."""
from __future__ import annotations

import falcon

from appliance.api.resources import created
from appliance.service import Service


class Projects:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_projects()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        project = self.service.create_project(req.get_media())
        created(resp, f"/v1/projects/{project['name']}", project)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_project(name)

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.update_project(name, req.get_media())

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_project(name)
        resp.status = falcon.HTTP_204

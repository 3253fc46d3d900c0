"""REST resources of SSH keys (issue 15): /v1/keys and /v1/keys/{name}, the
caller's own (an admin names another user with ?user=; appliance/service/keys.py)."""
from __future__ import annotations

import falcon

from appliance.service import Service


class Keys:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_keys(req.get_param("user"))}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        key = self.service.create_key(req.get_media())
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/keys/{key['name']}"
        resp.media = key

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_key(name, req.get_param("user"))

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_key(name, req.get_param("user"))
        resp.status = falcon.HTTP_204

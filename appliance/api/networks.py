"""REST resources of networks (issue 15): /v1/networks and /v1/networks/{name}.
Reading is everyone's who sees the project; creating and deleting is VM_CHANGE
(the policy table), a bridge network ADMIN as well (appliance/service/networks.py)."""
from __future__ import annotations

import falcon

from appliance.api.resources import created
from appliance.service import Service


class Networks:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_networks()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        network = self.service.create_network(req.get_media())
        created(resp, f"/v1/networks/{network['name']}", network)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_network(name)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_network(name)
        resp.status = falcon.HTTP_204

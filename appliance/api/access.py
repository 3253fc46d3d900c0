"""REST resources of who may call the appliance: /v1/me, /v1/users, /v1/tokens.

No rules here (the service's, appliance/service/access.py; the policy table
decides who reaches each route). A token is in the answer of its POST only.
"""
from __future__ import annotations

import falcon

from appliance.api.resources import created
from appliance.service import Service


class Me:
    """Who the request's token names: user, role, projects, the project it acts in."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.service.whoami()


class Users:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_users()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        user = self.service.add_user(req.get_media())
        created(resp, f"/v1/users/{user['name']}", user)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_user(name)

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.update_user(name, req.get_media())

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        self.service.delete_user(name)
        resp.status = falcon.HTTP_204


class Tokens:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_tokens(req.get_param("user"))}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        # An empty body asks for a token of one's own without expiry.
        body = req.get_media(default_when_empty={})
        token = self.service.create_token(body)
        resp.status = falcon.HTTP_201
        resp.location = f"/v1/tokens/{token['id']}"
        resp.cache_control = ["no-store"]  # the token: no proxy or client cache keeps it
        resp.media = token

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, token_id: str) -> None:
        resp.media = self.service.get_token(token_id)

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, token_id: str) -> None:
        self.service.revoke_token(token_id)
        resp.status = falcon.HTTP_204

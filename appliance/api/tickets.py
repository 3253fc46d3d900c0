"""POST /v1/tickets: a one-use console ticket for a browser's WebSocket (the
rules: appliance/service/tickets.py; the WebSockets: websocket.py)."""
from __future__ import annotations

import falcon

from appliance.service import Service


class Tickets:
    def __init__(self, service: Service):
        self.service = service

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        ticket = self.service.create_ticket(req.get_media())
        resp.status = falcon.HTTP_201
        resp.cache_control = ["no-store"]  # a credential, if a short-lived one
        resp.media = ticket

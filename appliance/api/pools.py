"""REST resources of replica pools: /v1/pools, /v1/pools/{name} and the files of a
pool directory (appliance/pool_files.py) at /v1/pools/{name}/{file}, as in the
mount. Each responder calls one service method (appliance/service/pools.py).

A change answers at once with the pool (its status says how far the
controller is); a delete waits for its members' deletions (bounded), or
answers 202 with their operations (`?wait=false`, or a wait that ran out).
"""
from __future__ import annotations

import time

import falcon

from appliance.api.resources import _body_text, _read_file, _timeout, _wanted, created
from appliance.model import FINAL_OP_STATES
from appliance.pool_files import POOL_FILES
from appliance.service import Service


class Pools:
    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = {"items": self.service.list_pools()}

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        pool = self.service.create_pool(req.get_media())
        created(resp, f"/v1/pools/{pool['name']}", pool)

    def on_get_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.get_pool(name)

    def on_patch_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        resp.media = self.service.update_pool(name, req.get_media())

    def on_delete_item(self, req: falcon.Request, resp: falcon.Response, name: str) -> None:
        ops = self.service.delete_pool(name)
        if _wanted(req):
            deadline = time.monotonic() + _timeout(req, self.service)
            ops = [self.service.wait_operation(op["id"], max(0.0, deadline - time.monotonic()))
                   for op in ops]
            if all(op["status"] in FINAL_OP_STATES for op in ops):
                for op in ops:
                    self.service.finish(op, 0)  # raises for a failed deletion
                resp.status = falcon.HTTP_204
                return
        resp.status = falcon.HTTP_202
        resp.media = {"operations": ops}


class PoolFile:
    """The files of a pool directory, at the same paths as in the mount."""

    def __init__(self, service: Service):
        self.service = service

    def on_get(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        _read_file(req, resp, self.service, POOL_FILES.file(file), name)

    def on_put(self, req: falcon.Request, resp: falcon.Response, name: str, file: str) -> None:
        entry = POOL_FILES.file(file)
        text = _body_text(req, entry)
        resp.media = POOL_FILES.writer(file)(self.service, name, text, None).answer

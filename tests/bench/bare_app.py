"""The reference for the REST numbers: a bare Falcon app serving constants.

    BENCH_BARE_DIR=DIR gunicorn ... "appliance.api.asgi:get_app('tests.bench.bare_app:create')"

DIR/vm.json is the body the appliance answered to GET /v1/vms/NAME and
DIR/vms.json its GET /v1/vms; this app parses them once and serializes them
again on every request (resp.media, as the appliance does), with no
middleware, no store and no authentication: the floor of Falcon + gunicorn.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import falcon


class Constant:
    def __init__(self, value):
        self.value = value

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        resp.media = self.value


def create() -> falcon.App:
    base = Path(os.environ["BENCH_BARE_DIR"])
    app = falcon.App()
    app.add_route("/vm", Constant(json.loads((base / "vm.json").read_text())))
    app.add_route("/vms", Constant(json.loads((base / "vms.json").read_text())))
    app.add_route("/healthz", Constant({"status": "ok"}))
    return app

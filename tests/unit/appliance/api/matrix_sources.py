"""The three sources of the role x route matrix (test_policy_matrix.py), read, never listed.

- The routes the app serves: falcon.inspect walks the app's CompiledRouter
  (every template, every method a responder of the resource answers,
  suffixed responders included; Falcon's own OPTIONS and 405 responders are
  marked internal and are not routes).
- The OpenAPI document (appliance/api/openapi.py): each documented path is
  matched by the app's own router, so `/v1/vms/{name}/state` is the route
  `/v1/vms/{name}/{file}` for the file `state`, as a request would be.
- The policy table (appliance/access/policy.py) and the file tables
  (appliance/files.py).
- The WebSockets (GETs marked x-websocket in the document; the ASGI front
  serves them, appliance/api/websocket.py) are apart: websockets().
"""
from __future__ import annotations

import dataclasses
import functools
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import falcon
from falcon import inspect

from appliance.access import policy
from appliance.api.app import create_app
from appliance.api.openapi import DOCUMENT
from appliance.config import Config
from appliance.files import HOST_FILES, VM_FILES, Directory
from appliance.pool_files import POOL_FILES
from appliance.service import Service
from appliance.snapshot_files import SNAPSHOT_FILES
from appliance.store import Store

Route = tuple[str, str]  # (route template, METHOD)
HTTP_METHODS = ("get", "put", "post", "patch", "delete", "head", "options", "trace")
FIELD = re.compile(r"\{(\w+)\}")

# The routes anyone may call without a token, as README and the OpenAPI document
# (`security: []`) have them, the web page's files among them; /metrics joins
# them when config metrics_public.
PUBLIC = frozenset({"/healthz", "/readyz", "/v1/openapi.json", "/", "/ui/{path:path}"})
METRICS = "/metrics"

# The file routes: their {file} is a file of this directory, and their writes
# are decided per file by this part of the policy table.
FILE_ROUTES: Mapping[str, tuple[Directory, Mapping[str, policy.Action]]] = {
    "/v1/vms/{name}/{file}": (VM_FILES, policy.VM_FILE_WRITES),
    "/v1/hosts/{name}/{file}": (HOST_FILES, policy.HOST_FILE_WRITES),
    "/v1/vms/{name}/snapshots/{snapshot}/{file}": (SNAPSHOT_FILES, policy.SNAPSHOT_FILE_WRITES),
    "/v1/pools/{name}/{file}": (POOL_FILES, policy.POOL_FILE_WRITES),
}


@functools.cache
def app_at_collection() -> falcon.App:
    """The app as create_app makes it, over an empty home: the cases are generated
    from its router when pytest collects them."""
    with tempfile.TemporaryDirectory(prefix="vmapp-matrix-") as tmp:
        config = Config(home=Path(tmp) / "home", libvirt_uri="test:///default")
        config.prepare()
        store = Store(config.db_path)
        try:
            return create_app(Service(store, config), "collection-token")
        finally:
            store.close()


def router(app: falcon.App) -> falcon.routing.CompiledRouter:
    # falcon.App has no public accessor for its router; create_app passes one in.
    found = app._router  # noqa: SLF001
    assert isinstance(found, falcon.routing.CompiledRouter)
    return found


def served(app: falcon.App) -> set[Route]:
    """Every (template, method) the router has a responder of the resource for."""
    return {(info.path, method.method)
            for info in inspect.inspect_routes(app)
            for method in info.methods if not method.internal}


def resource_of(app: falcon.App, template: str) -> object:
    """The resource a template routes to (the template itself is a path it matches)."""
    found = router(app).find(template)
    assert found is not None and found[3] == template, (template, found)
    return found[0]


def public_routes(app: falcon.App) -> set[str]:
    """The templates whose resource is marked public (reachable without a token)."""
    return {template for template, _ in served(app)
            if getattr(resource_of(app, template), "auth_public", False)}


@dataclasses.dataclass(frozen=True)
class Documented:
    """One operation of the OpenAPI document, as the router matches its path."""

    path: str  # as the document writes it
    template: str | None  # the route serving it (None: no route does)
    method: str
    file: str | None  # the file a file route's documented path names
    public: bool  # `security: []`


def documented(app: falcon.App) -> list[Documented]:
    out = []
    for path, item in DOCUMENT["paths"].items():
        found = router(app).find(path)
        template = found[3] if found is not None else None
        file = found[2].get("file") if found is not None else None
        if file is not None and FIELD.fullmatch(file):
            file = None  # the generic {file} path: the file is a parameter
        for method, operation in item.items():
            # WebSockets (x-websocket) are the ASGI front's, not the router's:
            # websockets() below, and test_websocket_matrix.py.
            if method in HTTP_METHODS and not operation.get("x-websocket"):
                out.append(Documented(path, template, method.upper(), file,
                                      operation.get("security") == []))
    return out


def websockets() -> dict[str, dict]:
    """The WebSocket operations of the document (x-websocket), by path."""
    return {path: item["get"] for path, item in DOCUMENT["paths"].items()
            if item.get("get", {}).get("x-websocket")}


def documented_files(app: falcon.App, template: str, method: str) -> set[str]:
    """The files the document names for a file route: its {file} enum and its own paths."""
    files: set[str] = set()
    for op in documented(app):
        if op.template != template or op.method != method:
            continue
        if op.file is not None:
            files.add(op.file)
            continue
        for parameter in DOCUMENT["paths"][op.path].get("parameters", []):
            if parameter["name"] == "file":
                files.update(parameter["schema"]["enum"])
    return files


def files_of(template: str) -> list[str]:
    """A file route's files: every file of its directory, then every file the
    policy names a write for (a write entry whose file does not exist yet is
    still decided, and reaches the file table's 404)."""
    directory, writes = FILE_ROUTES[template]
    return [*directory, *(name for name in writes if name not in directory)]


def expanded(routes: set[Route]) -> Iterator[tuple[str, str, str | None]]:
    """(template, method, file): every route, and a file route once per file."""
    for template, method in sorted(routes):
        if template in FILE_ROUTES:
            for file in files_of(template):
                yield template, method, file
        else:
            yield template, method, None

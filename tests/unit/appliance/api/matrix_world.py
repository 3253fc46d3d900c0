"""The world the role x route matrix (test_policy_matrix.py) asks: a home with
real records, so that a request the policy lets through reaches its responder
and, for the routes this file knows, succeeds.

In the default project: a stopped VM `web1` (its create still pending: no
controller runs), a VM `web2` with a pending start (an operation one may
cancel), the images `demo` and `spare` (unused), the hosts `local` and
`spare` (no VMs), a server group `g1` (no members), a template `t1`; web1 has a ready
snapshot `s1` and a good backup in the backup target `nas`; the target
`spare-target` holds none. Projects `web` (VM
`www1`) and `db` (VM `db1`). A user per role in the default project, and
`webop`, an operator of `web` alone; each with a token.

Made once per run; a write that the policy lets through gets its own copy of
the home (shutil.copytree, a few ms), so every such write meets the same world.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import falcon
from falcon import testing

from appliance import backup_chain
from appliance.access import tokens
from appliance.access.principal import DEFAULT_PROJECT, Principal, Role, acting_as
from appliance.api.app import create_app
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store
from tests.unit.appliance.api.matrix_sources import FIELD, FILE_ROUTES
from tests.unit.appliance.fake_consoles import FakeConsoles
from tests.unit.conftest import TEST_HOST_INFO, ReplayedDemoImage, make_iso_image

HOME_TOKEN = "matrix-home-token"  # noqa: S105 - HOME/token of the test home: the first admin's
BAD_TOKEN = "vma_000000000000_" + "x" * 43  # noqa: S105 - well formed, names no token
# name -> (role, projects); "admin" is made by tokens.bootstrap from HOME_TOKEN.
USERS = {
    "operator": (Role.OPERATOR, [DEFAULT_PROJECT]),
    "viewer": (Role.VIEWER, [DEFAULT_PROJECT]),
    "monitor": (Role.MONITOR, [DEFAULT_PROJECT]),
    "webop": (Role.OPERATOR, ["web"]),
}
NO_TOKEN, WRONG_TOKEN = "no-token", "bad-token"
# Who asks, in the matrix: each role, then no token, then a token that names nobody.
CALLERS = ("admin", "operator", "viewer", "monitor", NO_TOKEN, WRONG_TOKEN)
ROLE_OF = {"admin": Role.ADMIN, **{name: role for name, (role, _) in USERS.items()}}


class Reached:
    """Test-only middleware, after TokenAuth: marks the answers of requests the
    policy let through to the responder (X-Matrix-Reached: 1)."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         params: dict) -> None:
        req.context.matrix_reached = True

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: object,
                         req_succeeded: bool) -> None:
        if getattr(req.context, "matrix_reached", False):
            resp.set_header("X-Matrix-Reached", "1")


def _config(home: Path, metrics_public: bool = False) -> Config:
    # Short waits: a write the test forgot to send with wait=false answers 202 at once.
    return Config(home=home, libvirt_uri="test:///default", wait_timeout=0.2, max_wait=0.2,
                  heartbeat_age=3600, allow_test_hosts=True, metrics_public=metrics_public)


def _host(name: str, uri: str) -> dict:
    return {"name": name, "uri": uri, "state": "enabled", "up": 1, "last_seen": time.time(),
            "info": TEST_HOST_INFO, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
            "reserved_memory_mib": 0, "labels": {}, "storage": "shared"}


@dataclasses.dataclass
class World:
    home: Path
    tokens: dict[str, str]  # caller -> the token they send
    token_ids: dict[str, str]  # user -> their token's id
    op_id: str  # web2's pending start: cancellable
    web1_spec: dict
    demo: ReplayedDemoImage
    backup_id: str  # web1's good backup, in the target nas
    target_dir: Path  # where POST /v1/backup-targets may point a new target

    def app(self, metrics_public: bool = False) -> tuple[Service, falcon.App]:
        config = _config(self.home, metrics_public)
        service = Service(Store(config.db_path), config)
        FakeConsoles(service)  # the console broker's answers (none runs here): 2xx when reached
        app = create_app(service, HOME_TOKEN)
        app.add_middleware(Reached())
        return service, app

    def copy(self, directory: Path) -> World:
        shutil.copytree(self.home, directory)
        return dataclasses.replace(self, home=directory)

    def headers(self, caller: str) -> dict[str, str]:
        token = self.tokens.get(caller)
        return {} if token is None else {"Authorization": f"Bearer {token}"}

    def client(self, app: falcon.App, caller: str) -> testing.TestClient:
        return testing.TestClient(app, headers=self.headers(caller))


def _add_user(store: Store, name: str, role: Role, projects: list[str]) -> tuple[str, str]:
    """(token id, token) of a new user's token."""
    token_id, token = tokens.new_token()
    now = time.time()
    store.insert_user({"name": name, "role": role.value, "projects": projects, "created": now,
                       "disabled": 0})
    store.insert_token({"id": token_id, "user": name, "hash": tokens.token_hash(token),
                        "prefix": tokens.shown_prefix(token), "description": "matrix",
                        "created": now, "expires": None, "last_used": None, "revoked": None})
    return token_id, token


def build(directory: Path, demo: ReplayedDemoImage) -> World:
    home = directory / "home"
    config = _config(home)
    config.prepare()
    store = Store(config.db_path)
    service = Service(store, config)
    store.upsert_host(_host("local", "test:///default"))
    demo.import_into(service, directory)
    image = directory / "spare.img"
    image.write_bytes(demo.source)
    with demo.replayed():
        service.import_image_file("spare", image)
    assert config.import_dir is not None
    config.import_dir.mkdir(parents=True, exist_ok=True)
    (config.import_dir / "demo.img").write_bytes(demo.source)  # for POST /v1/images
    make_iso_image(directory / "media.iso")  # web1's CD-ROM (issue 14's disks and media)
    service.import_image_file("media", directory / "media.iso")
    service.create_vm({"name": "web1", "state": "stopped", "cdroms": ["media"],
                       "disks": [{"name": "data", "size": 16}]})
    service.create_vm({"name": "web2", "state": "stopped"})
    start = service.set_state("web2", "running")
    assert start is not None
    service.create_group({"name": "g1", "policy": "anti-affinity"})
    service.create_template({"name": "t1", "spec": {"cpus": 1}})  # the default project's
    service.create_pool({"name": "p1", "template": {"run_strategy": "Halted"}})
    service.create_pool({"name": "spare-pool"})
    store.insert_project({"name": "spare", "description": "", "quota": {}, "created": time.time()})
    for project, vm in (("web", "www1"), ("db", "db1")):
        store.insert_project({"name": project, "description": "", "quota": {},
                              "created": time.time()})
        with acting_as(Principal(user="system", role=Role.ADMIN, project=project)):
            service.create_vm({"name": vm, "state": "stopped"})
    store.upsert_host(_host("spare", "test:///default?spare"))  # after the VMs: none is on it
    tokens.bootstrap(store, HOME_TOKEN)
    made = {name: _add_user(store, name, role, projects)
            for name, (role, projects) in USERS.items()}
    spec = service.get_vm("web1")["spec"]
    backup_id = _snapshot_and_backup(store, directory)
    store.close()  # the file holds everything: copies of the home are whole
    return World(home=home,
                 tokens={"admin": HOME_TOKEN, WRONG_TOKEN: BAD_TOKEN,
                         **{name: token for name, (_, token) in made.items()}},
                 token_ids={"admin": tokens.LEGACY_TOKEN_ID,
                            **{name: token_id for name, (token_id, _) in made.items()}},
                 op_id=start["id"], web1_spec=spec, demo=demo, backup_id=backup_id,
                 target_dir=directory / "targets" / "new")


def _snapshot_and_backup(store: Store, directory: Path) -> str:
    """web1's snapshot s1 and backup, as the controller leaves them done (none runs here);
    the backup targets nas and spare-target. The backup's id."""
    web1 = store.get_vm("web1", DEFAULT_PROJECT, with_xml=False)
    now = time.time()
    store.insert_snapshot({"id": "snap-s1", "vm_id": web1["id"], "name": "s1",
                           "description": "matrix", "memory": 0, "parent": None, "current": 1,
                           "state": "ready", "vm_state": "stopped", "size": 0, "xml": None,
                           "error": None, "created": now})
    for name in ("nas", "spare-target", "new"):
        (directory / "targets" / name).mkdir(parents=True)
    for name in ("nas", "spare-target"):
        store.insert_backup_target({"name": name, "path": str(directory / "targets" / name),
                                    "created": now})
    backup_id = backup_chain.new_backup_id(now)
    store.insert_backup({"id": backup_id, "vm_id": web1["id"], "vm_name": "web1",
                         "project": DEFAULT_PROJECT, "target": "nas", "kind": "full",
                         "parent": None, "chain": backup_id, "checkpoint": None,
                         "status": "good", "disks": [], "size": 0, "created": now,
                         "finished": now})
    return backup_id


@dataclasses.dataclass(frozen=True)
class Sample:
    """A request that succeeds (2xx) for a caller the policy lets through."""

    path: str
    kwargs: dict
    # False when a 2xx is not expected of it: a read-only file's write is the
    # file table's 403, a file the table lacks its 404, a route this file does not know
    # (added since) any answer but 401/403.
    succeeds: bool = True


# A path parameter's value, by the route's collection (the first segments) then by field.
NAMES = {"/v1/vms": "web1", "/v1/images": "demo", "/v1/hosts": "local", "/v1/groups": "g1",
         "/v1/pools": "p1",
         "/v1/users": "viewer", "/v1/projects": DEFAULT_PROJECT, "/v1/backup-targets": "nas",
         "/v1/templates": "t1"}
# DELETE removes: the spare one, that nothing uses.
DELETED = {"/v1/images": "spare", "/v1/hosts": "spare", "/v1/projects": "spare",
           "/v1/backup-targets": "spare-target", "/v1/pools": "spare-pool"}
TEXT = {"Content-Type": "text/plain"}
FILE_BODIES = {  # a PUT of a file (appliance/files.py), by directory and file
    ("/v1/vms", "state"): {"json": {"state": "running"}},
    ("/v1/vms", "cpus"): {"body": "2", "headers": TEXT},
    ("/v1/vms", "memory"): {"body": "512", "headers": TEXT},
    ("/v1/vms", "host"): {"body": "local", "headers": TEXT},
    ("/v1/vms", "lock"): {"body": "matrix test\n", "headers": TEXT},  # a reason
    ("/v1/vms", "console"): {"body": "uname -a\n", "headers": TEXT},  # typed
    ("/v1/vms", "rebuild"): {"body": "demo\n", "headers": TEXT},  # an image
    ("/v1/hosts", "state"): {"json": {"state": "disabled"}},
    ("/v1/vms", "action"): {"json": {"action": "revert"}},  # .../snapshots/S/action
    ("/v1/pools", "replicas"): {"body": "1", "headers": TEXT},
    ("/v1/pools", "paused"): {"json": {"paused": True}},
    ("/v1/pools", "template.json"): {"json": {"image": "demo", "cpus": 2}},
}
BODIES = {  # other writes, by (template, method)
    ("/v1/vms", "POST"): {"json": {"name": "made1", "state": "stopped"}},
    ("/v1/vms/{name}", "PATCH"): {"json": {"cpus": 2}},
    ("/v1/images", "POST"): {"json": {"name": "imported", "path": "demo.img"}},
    ("/v1/hosts", "POST"): {"json": {"name": "h3", "uri": "qemu+ssh://root@h3/system"}},
    ("/v1/hosts/{name}", "PATCH"): {"json": {"labels": {"rack": "r1"}}},
    ("/v1/groups", "POST"): {"json": {"name": "g2", "policy": "affinity"}},
    ("/v1/templates", "POST"): {"json": {"name": "t2", "spec": {"cpus": 2}}},
    ("/v1/templates/{name}", "PUT"): {"json": {"spec": {"cpus": 2}}},
    ("/v1/templates/{name}", "PATCH"): {"json": {"description": "matrix"}},
    ("/v1/users", "POST"): {"json": {"name": "carol", "role": "viewer"}},
    ("/v1/users/{name}", "PATCH"): {"json": {"projects": [DEFAULT_PROJECT, "web"]}},
    ("/v1/tokens", "POST"): {"json": {"description": "matrix"}},
    ("/v1/projects", "POST"): {"json": {"name": "p2", "description": "matrix"}},
    ("/v1/projects/{name}", "PATCH"): {"json": {"quota": {"vms": 50}}},
    ("/v1/tickets", "POST"): {"json": {"vm": "web1", "kind": "console"}},
    ("/v1/vms/{name}/snapshots", "POST"): {"json": {"name": "s2"}},
    ("/v1/vms/{name}/backups", "POST"): {"json": {"target": "nas"}},
    ("/v1/vms/{name}/clone", "POST"): {"json": {"name": "clone1"}},
    ("/v1/backups/{backup_id}/restore", "POST"): {"json": {"name": "restored1"}},
    ("/v1/pools", "POST"): {"json": {"name": "pool2", "template": {"image": "demo"}}},
    ("/v1/pools/{name}", "PATCH"): {"json": {"replicas": 1}},
    ("/v1/vms/{name}/disks/{disk}", "PUT"): {"json": {"size": "32M"}},  # grows data
    ("/v1/vms/{name}/disks/{disk}/size", "PUT"): {"body": "64M", "headers": TEXT},
    ("/v1/vms/{name}/cdroms/{index}", "PUT"): {"body": "", "headers": TEXT},  # ejects
}
# The routes this file knows to succeed with these samples: routes added since are
# held to "reached, not refused" alone until their samples are written here.
KNOWN_READS = {"/healthz", "/readyz", "/v1/openapi.json", "/metrics", "/v1/vms", "/v1/operations",
               "/v1/events", "/v1/images", "/v1/hosts", "/v1/groups", "/v1/me", "/v1/users",
               "/v1/tokens", "/v1/projects", "/v1/backups", "/v1/backup-targets", "/v1/templates",
               "/v1/pools"}
KNOWN = {*BODIES, ("/v1/vms/{name}", "DELETE"), ("/v1/images/{name}", "PUT"),
         ("/v1/images/{name}", "DELETE"), ("/v1/hosts/{name}", "DELETE"),
         ("/v1/groups/{name}", "DELETE"), ("/v1/templates/{name}", "DELETE"), ("/v1/operations/{op_id}", "DELETE"),
         ("/v1/users/{name}", "DELETE"), ("/v1/tokens/{token_id}", "DELETE"),
         ("/v1/projects/{name}", "DELETE"), ("/v1/vms/{name}/snapshots/{snapshot}", "DELETE"),
         ("/v1/vms/{name}/snapshots/{snapshot}/revert", "POST"),
         ("/v1/backup-targets", "POST"), ("/v1/backup-targets/{name}", "DELETE"),
         ("/v1/pools/{name}", "DELETE")}
# DELETE .../disks/{disk} is reached and refused (409): web1 has snapshot s1, and a disk is
# not removed under snapshots (test_disks.py removes them).
# Reached, and refused by the service: the world's backup has no files on its target
# (a restore verifies the chain first). test_backups_api.py restores real ones.
KNOWN -= {("/v1/backups/{backup_id}/restore", "POST")}


def sample(world: World, caller: str, template: str, method: str, file: str | None,
           vm: str = "web1") -> Sample:
    """The caller's request for one route (and file); `vm` names the VM of VM routes,
    {token_id} is the caller's own token."""
    collection = "/".join(template.split("/")[:3])
    name = NAMES.get(collection, "made-up")
    if method == "DELETE":
        name = DELETED.get(collection, name)
    values = {"name": vm if collection == "/v1/vms" else name, "op_id": world.op_id,
              "token_id": world.token_ids.get(caller, "made-up"), "file": file or "",
              "snapshot": "s1", "backup_id": world.backup_id, "disk": "data", "index": "0"}
    path = FIELD.sub(lambda m: values.get(m.group(1), "made-up"), template)
    kwargs: dict = {}
    known = (template, method) in KNOWN or (method == "GET" and collection in KNOWN_READS)
    if method != "GET":
        kwargs["params"] = {"wait": "false"}
        kwargs.update(BODIES.get((template, method), {}))
    if template == "/v1/images/{name}" and method == "PUT":
        path = "/v1/images/uploaded"
        kwargs.update(body=world.demo.source, headers={"Content-Type": "application/octet-stream"})
    if (template, method) == ("/v1/backup-targets", "POST"):
        kwargs["json"] = {"name": "t2", "path": str(world.target_dir)}
    if file is not None:
        if method == "PUT" and file == "spec.json":
            kwargs["json"] = world.web1_spec
        else:
            kwargs.update(FILE_BODIES.get((collection, file), {}))
        known = _file_succeeds(template, method, file)
    return Sample(path, kwargs, succeeds=known)


# Reached, and refused by the service: web1 has a snapshot, which a rebuild refuses
# (service/shapes.py); tests/unit/appliance/test_shapes.py rebuilds for real.
REFUSED_FILE_WRITES = {("/v1/vms/{name}/{file}", "rebuild")}


def _file_succeeds(template: str, method: str, file: str) -> bool:
    directory, _ = FILE_ROUTES[template]
    if file not in directory or (method != "GET" and (template, file) in REFUSED_FILE_WRITES):
        return False
    return method == "GET" or (method == "PUT" and directory.file(file).writable)


def json_body(resp: testing.Result) -> dict:
    try:
        body = json.loads(resp.text)
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}

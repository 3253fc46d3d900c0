"""Build the Falcon app from an injected service; gunicorn calls get_app()."""
from __future__ import annotations

import os
from typing import Any

import falcon
from falcon.routing import CompiledRouter

from appliance import hosturi
from appliance.access import tokens
from appliance.access.audit import Audit
from appliance.api import (
    access,
    adoption,
    backups,
    disks,
    error_shape,
    keys,
    networks,
    openapi,
    pools,
    projects,
    resources,
    snapshots,
    templates,
    tickets,
    web,
)
from appliance.api.auth import TokenAuth, public
from appliance.api.file_names import MountFileNames
from appliance.api.limits import BodyLimit, FiniteWaits, json_handlers
from appliance.host_access import connection_uri
from appliance.service import Service
from exporter.registry import RequestMetrics, api_metrics_resource

# The VM rows each of the API's threads keeps while nothing is committed.
KEPT_VM_ROWS = 16


def create_app(service: Service, token: str | None = None) -> falcon.App:
    """token: the home's token (HOME/token), which becomes the first admin's at
    the first start with users (appliance/access/tokens.py bootstrap)."""
    if token is not None and not token.strip():
        raise ValueError("the API token must not be empty")
    tokens.bootstrap(service.store, token)
    # GET /v1/vms/NAME (a client polling its VM) reads the VM's row again only after a
    # commit (appliance/store/unchanged.py: never stale); its SELECT was a fifth of the
    # request's CPU. A few rows per thread: a worker has `threads` of them.
    service.store.remember_vm_rows(KEPT_VM_ROWS)
    # RequestMetrics first, so that refused requests are timed too; it names
    # them by route through the app's router, made here for both to share.
    # Audit before auth: it sees the route's names of refused writes too, and
    # records each write last, with its final status (appliance/access/audit.py).
    router = CompiledRouter()
    auth = TokenAuth(tokens.resolver(service.store), public_paths=frozenset(),
                     project_exists=service.store.project_exists)
    middleware: list[Any] = [  # falcon's middleware protocols are structural; the list mixes them
        MountFileNames(), RequestMetrics(router), Audit(service.store), auth,
        BodyLimit(service.config.max_body_bytes), FiniteWaits()]
    app = falcon.App(router=router, middleware=middleware)
    app.req_options.media_handlers = json_handlers()
    app.resp_options.media_handlers.update(app.req_options.media_handlers)
    app.req_options.strip_url_path_trailing_slash = True
    error_shape.install(app)
    public_paths: set[str] = set()

    def route(path: str, resource: object, **kwargs: str) -> None:
        app.add_route(path, resource, **kwargs)
        if getattr(resource, "auth_public", False):
            public_paths.add(path)

    def collection(path: str, item: str, resource: object) -> None:
        """PATH (on_get/on_post) and PATH/{ITEM} (the resource's *_item responders)."""
        route(path, resource)
        route(f"{path}/{{{item}}}", resource, suffix="item")

    health = public(resources.Health(service))
    route("/healthz", health)
    route("/readyz", health, suffix="ready")
    route("/v1/openapi.json", public(openapi.OpenAPI()))
    # The web page (appliance/api/web.py): public files, an allowlist under /ui/.
    page = web.WebFiles()
    route("/", page)
    route("/ui/{path:path}", page, suffix="file")
    route("/v1/vms", resources.VMs(service))
    route("/v1/vms/{name}", resources.VM(service))
    route("/v1/vms/{name}/{file}", resources.VMFile(service))
    # Snapshots, backups, clones (issue 13): literal segments, matched before {file}.
    vm_snapshots = snapshots.Snapshots(service)
    collection("/v1/vms/{name}/snapshots", "snapshot", vm_snapshots)
    route("/v1/vms/{name}/snapshots/{snapshot}/revert", vm_snapshots, suffix="revert")
    route("/v1/vms/{name}/snapshots/{snapshot}/{file}", snapshots.SnapshotFile(service))
    route("/v1/vms/{name}/clone", snapshots.Clone(service))
    route("/v1/vms/adopt", adoption.Adopt(service))  # issue 16: VMs in and out
    route("/v1/vms/{name}/export", adoption.Export(service))
    vm_disks, vm_cdroms = disks.Disks(service), disks.Cdroms(service)  # issue 14: live disks
    collection("/v1/vms/{name}/disks", "disk", vm_disks)
    route("/v1/vms/{name}/disks/{disk}/size", vm_disks, suffix="size")
    collection("/v1/vms/{name}/cdroms", "index", vm_cdroms)
    route("/v1/vms/{name}/backups", backups.VMBackups(service))
    all_backups = backups.Backups(service)
    collection("/v1/backups", "backup_id", all_backups)
    route("/v1/backups/{backup_id}/restore", all_backups, suffix="restore")
    collection("/v1/backup-targets", "name", backups.BackupTargets(service))
    collection("/v1/operations", "op_id", resources.Operations(service))
    route("/v1/events", resources.Events(service))
    collection("/v1/images", "name", resources.Images(service))
    collection("/v1/hosts", "name", resources.Hosts(service))
    route("/v1/hosts/{name}/{file}", resources.HostFile(service))
    collection("/v1/groups", "name", resources.Groups(service))
    collection("/v1/networks", "name", networks.Networks(service))  # issue 15
    collection("/v1/keys", "name", keys.Keys(service))  # SSH keys (issue 15)
    collection("/v1/templates", "name", templates.Templates(service))
    collection("/v1/pools", "name", pools.Pools(service))  # replica pools (issue 14)
    route("/v1/pools/{name}/{file}", pools.PoolFile(service))
    route("/v1/me", access.Me(service))
    collection("/v1/users", "name", access.Users(service))
    collection("/v1/tokens", "token_id", access.Tokens(service))
    route("/v1/tickets", tickets.Tickets(service))  # console tickets (WebSockets: websocket.py)
    collection("/v1/projects", "name", projects.Projects(service))
    # Prometheus (exporter/): wants the token unless the admin made it public
    # (config metrics_public); libvirt is first asked at the first scrape.
    config = service.config
    scrape = api_metrics_resource(
        service.store, config.libvirt_uri, heartbeat_age=config.heartbeat_age,
        all_domains=config.metrics_all_domains,
        uri_allowed=lambda uri: hosturi.refused(uri, config) is None,
        connect_uri=lambda uri: connection_uri(uri, config))
    route("/metrics", public(scrape) if config.metrics_public else scrape)
    auth.public_paths = frozenset(public_paths)
    auth.public_prefixes = ("/ui/",)  # the page's files: WebFiles is public and 404s the rest
    return app


def get_app() -> falcon.App:
    """gunicorn's entry point: everything comes from the home directory."""
    from appliance.config import Config
    from appliance.notify import Notifier
    from appliance.store import Store

    config = Config.load(os.environ.get("VMAPP_HOME", ".appliance"))
    service = Service(Store(config.db_path), config, notify=Notifier(config.notify_socket))
    return create_app(service, config.token())

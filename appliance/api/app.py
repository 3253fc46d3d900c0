"""Build the Falcon app from an injected service; gunicorn calls get_app()."""
from __future__ import annotations

import hmac
import os

import falcon

from appliance import errors
from appliance.api import openapi, resources
from appliance.service import Service
from exporter.registry import MetricsResource, RequestMetrics, build_registry

# The one table from the service's errors to HTTP.
STATUS = {
    errors.Invalid: falcon.HTTP_422,
    errors.NotFound: falcon.HTTP_404,
    errors.PreconditionFailed: falcon.HTTP_412,
    errors.Conflict: falcon.HTTP_409,
    errors.Forbidden: falcon.HTTP_403,
    errors.Timeout: falcon.HTTP_504,
    errors.Failed: falcon.HTTP_500,
}
PUBLIC = ("/healthz", "/readyz", "/metrics", "/v1/openapi.json")


def _status_of(err: errors.ApplianceError) -> str:
    for cls in type(err).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return falcon.HTTP_500


def _handle_appliance_error(req, resp, err: errors.ApplianceError, params) -> None:
    resp.status = _status_of(err)
    resp.media = err.as_dict()


def _serialize_http_error(req, resp, exception: falcon.HTTPError) -> None:
    """Falcon's own errors (bad JSON, bad query parameters, 401, 404 routes) in our error shape."""
    body = {"error": exception.title or "Error", "reason": exception.description or exception.title or ""}
    param = getattr(exception, "param_name", None) or getattr(exception, "_param_name", None)
    if param:
        body["field"] = param
    resp.content_type = falcon.MEDIA_JSON
    resp.media = body


class BearerToken:
    """Every /v1 route needs `Authorization: Bearer TOKEN`."""

    def __init__(self, token: str):
        self.token = token.encode()

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.path in PUBLIC or not req.path.startswith("/v1"):
            return
        header = req.get_header("Authorization") or ""
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(supplied.strip().encode(), self.token):
            raise falcon.HTTPUnauthorized(
                title="Unauthorized", description="send Authorization: Bearer <token from HOME/token>",
                challenges=["Bearer"])


def create_app(service: Service, token: str) -> falcon.App:
    # RequestMetrics first, so that refused requests are timed too.
    metrics = RequestMetrics()
    app = falcon.App(middleware=[metrics, BearerToken(token)])
    metrics.attach(app)
    app.req_options.strip_url_path_trailing_slash = True
    app.add_error_handler(errors.ApplianceError, _handle_appliance_error)
    app.set_error_serializer(_serialize_http_error)

    health = resources.Health(service)
    app.add_route("/healthz", health)
    app.add_route("/readyz", health, suffix="ready")
    app.add_route("/v1/openapi.json", openapi.OpenAPI())
    app.add_route("/v1/vms", resources.VMs(service))
    app.add_route("/v1/vms/{name}", resources.VM(service))
    app.add_route("/v1/vms/{name}/{file}", resources.VMFile(service))
    operations = resources.Operations(service)
    app.add_route("/v1/operations", operations)
    app.add_route("/v1/operations/{op_id}", operations, suffix="item")
    app.add_route("/v1/events", resources.Events(service))
    images = resources.Images(service)
    app.add_route("/v1/images", images)
    app.add_route("/v1/images/{name}", images, suffix="item")
    hosts = resources.Hosts(service)
    app.add_route("/v1/hosts", hosts)
    app.add_route("/v1/hosts/{name}", hosts, suffix="item")
    app.add_route("/v1/hosts/{name}/{file}", resources.HostFile(service))
    groups = resources.Groups(service)
    app.add_route("/v1/groups", groups)
    app.add_route("/v1/groups/{name}", groups, suffix="item")
    # Prometheus (exporter/): no token unless metrics_public is off; libvirt is first asked at the first scrape.
    app.add_route("/metrics", MetricsResource(build_registry(service.store, service.config.libvirt_uri,
                                                             heartbeat_age=service.config.heartbeat_age),
                                              token=None if service.config.metrics_public else token))
    return app


def get_app() -> falcon.App:
    """gunicorn's entry point: everything comes from the home directory."""
    from appliance.config import Config
    from appliance.notify import Notifier
    from appliance.store import Store

    config = Config.load(os.environ.get("VMAPP_HOME", ".appliance"))
    service = Service(Store(config.db_path), config, notify=Notifier(config.notify_socket))
    return create_app(service, config.token())

"""The one shape of an error body, `{"error", "reason", "field"?}`, for every
Falcon app the appliance serves (the API, and `vmctl exporter`'s /metrics)."""
from __future__ import annotations

import logging
import sqlite3

import falcon

from appliance import errors

log = logging.getLogger("vmctl.api")


def _handle_appliance_error(req: falcon.Request, resp: falcon.Response,
                            err: errors.ApplianceError, params: dict) -> None:
    """The service's errors at the edge. One handler serves every class: each
    carries its own status (appliance/errors.py), and the most specific one
    wins by attribute lookup, so there is no table to keep in step."""
    resp.status = err.http_status
    resp.media = err.as_dict()


def _serialize_http_error(req: falcon.Request, resp: falcon.Response,
                          exception: falcon.HTTPError) -> None:
    """Falcon's own errors (bad JSON, bad query parameters, 401, 404 routes) in our shape."""
    body = {"error": exception.title or "Error",
            "reason": exception.description or exception.title or ""}
    param = getattr(exception, "param_name", None)  # falcon 4: set by the invalid-parameter errors
    if param:
        body["field"] = param
    resp.content_type = falcon.MEDIA_JSON
    resp.media = body


def _handle_storage_error(req: falcon.Request, resp: falcon.Response, err: Exception,
                          params: dict) -> None:
    """A full disk under the store or the files (SQLITE_FULL, ENOSPC): 507 saying so.
    Anything else of these classes stays what it was: logged, a 500."""
    full = errors.no_space(err)
    if full is None:
        log.error("%s %s failed", req.method, req.path, exc_info=err)
        raise falcon.HTTPInternalServerError() from err
    _handle_appliance_error(req, resp, full, params)


def install(app: falcon.App) -> None:
    app.add_error_handler(errors.ApplianceError, _handle_appliance_error)
    for kind in (sqlite3.Error, OSError):
        app.add_error_handler(kind, _handle_storage_error)
    app.set_error_serializer(_serialize_http_error)

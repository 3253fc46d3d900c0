"""The audit trail: every write, REST or mount, and how it ended, in the event log.

An audit event names who (the actor, and the credential: a token's id or a
Unix uid), from where (the client's address, or "mount"), what (the method and
the route with its names filled in, or the mount's operation and path) and the
result: "ok", or the status (REST) or errno (mount) with the error's class and
reason. Its kind says which: `write` (done), `refused` (a 4xx or an errno the
caller caused: policy, lock, bad input, no such thing) or `failed` (the
appliance's failure: 5xx, EIO). When the write names a VM, the event is that
VM's too, so its `events` file shows who tried to change it; else it is the
caller's project's (another project's users do not see it).

What is not recorded, and why:
- reads (GET, HEAD, a mount's lookup or read): the hot path stays free of any
  write (a SQLite write per `cat vms/X/state` would serialise every poll);
- REST requests without a valid token (401): they have no user, and an event
  per request would let anyone on the network grow the log and take SQLite's
  write lock at will. Refusals of authenticated callers (403, 404, 409, 412,
  413, 422) are recorded: their cost is bounded by the token's holder, who is
  then named in the log.
- a request refused before routing (a `?project=` the caller is not in, 404)
  names no route to record.

Recorded in one place per view: the REST middleware below (after routing and
the responder, from the matched route's template and the response's status),
and fs/operations.py's `boundary` for the mount.
"""
from __future__ import annotations

import errno as errnos
import logging
import urllib.parse
from collections.abc import Mapping
from typing import Any

import falcon

from appliance import errors
from appliance.access.principal import ADMIN_EVENTS, Principal
from appliance.store import Row, Store

log = logging.getLogger("vmctl.audit")

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
OK = "ok"
# The longest a name from a path, or a result's reason, is quoted in the log.
NAME_CHARS = 64
RESULT_CHARS = 300
# The routes whose {name} is a VM of the caller's project (the event is the VM's too).
VM_ROUTES = ("/v1/vms/{name}", "/v1/vms/{name}/{file}")
# Below a VM (its snapshots, backups, clone: issue 13): the VM too; a body's "name" there
# names a snapshot or a new VM, never a rename of this one.
VM_SUBROUTES = "/v1/vms/{name}/"
OPERATION_ROUTE = "/v1/operations/{op_id}"
CREATE_ROUTE = "/v1/vms"
# The admin's own business: writes to these are ADMIN_EVENTS (their paths name users
# and projects, which the members of other projects are not to learn).
ADMIN_ROUTES = ("/v1/users", "/v1/projects")


def cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def kind_for(result: str, failed: bool) -> str:
    if result == OK:
        return "write"
    return "failed" if failed else "refused"


# -- REST ---------------------------------------------------------------------------------------
def request_what(method: str, template: str, params: Mapping[str, Any]) -> str:
    """`PUT /v1/vms/web1/state`: the matched route with its names filled in (each quoted,
    so a name holding a slash or a space cannot pass for another path)."""
    path = template
    for key, value in params.items():
        quoted = urllib.parse.quote(cut(str(value), NAME_CHARS), safe="")
        path = path.replace("{" + key + "}", quoted, 1)
    return f"{method} {path}"


def response_result(status: int, body: Any) -> str:
    """"ok" for 1xx-3xx; else `409 Conflict: locked by alice: exam running`."""
    if status < 400:
        return OK
    error = reason = ""
    if isinstance(body, Mapping):
        error, reason = str(body.get("error") or ""), str(body.get("reason") or "")
    text = f"{status} {error}: {reason}" if error or reason else str(status)
    return cut(text, RESULT_CHARS)


class Audit:
    """Falcon middleware: one audit event per write request of an authenticated caller.

    Put before TokenAuth in the middleware list: its process_resource then sees
    the route's parameters even when the policy refuses the request, and its
    process_response runs last, when the status and the error body are final."""

    def __init__(self, store: Store):
        self.store = store

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict) -> None:
        if req.method in WRITE_METHODS:
            req.context.route_params = dict(params)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        if req.method not in WRITE_METHODS:
            return  # reads record nothing (see the module docstring)
        principal: Principal | None = getattr(req.context, "principal", None)
        template = req.uri_template
        if principal is None or template is None:
            return  # 401: no user to name (see the module docstring)
        params: dict = getattr(req.context, "route_params", None) or {}
        status = falcon.http_status_to_code(resp.status)
        result = response_result(status, resp.media)
        try:
            self.store.add_event(kind_for(result, status >= 500),
                                 request_what(req.method, template, params),
                                 self._vm(principal, template, params, resp.media),
                                 project=self._project(principal, template), result=result,
                                 by=principal)
        except Exception:  # the write is done; its answer must not become a 500 now
            log.exception("could not record the audit event of %s %s", req.method, template)

    @staticmethod
    def _project(principal: Principal, template: str) -> str:
        if template.startswith(ADMIN_ROUTES):
            return ADMIN_EVENTS
        return principal.project

    def _vm(self, principal: Principal, template: str, params: Mapping[str, Any],
            body: Any) -> Row | None:
        """The VM the request names, if it is one of the caller's project's (after a
        rename, by its new name); gone (deleted), its name alone."""
        if template == OPERATION_ROUTE:  # cancelling a VM's operation changes the VM
            return self._vm_of_operation(principal, params.get("op_id"))
        if template == CREATE_ROUTE:  # the VM made, named by the answer (202: its operation)
            made = body if isinstance(body, Mapping) else {}
            name = made.get("name") or (made.get("operation") or {}).get("vm_name")
            return self._vm_named(principal, [name]) if isinstance(name, str) else None
        below = template not in VM_ROUTES and template.startswith(VM_SUBROUTES)
        if not (template in VM_ROUTES or below) or not isinstance(params.get("name"), str):
            return None
        names = [params["name"]]
        if not below and isinstance(body, Mapping) and isinstance(body.get("name"), str):
            names.insert(0, body["name"])
        return self._vm_named(principal, names) or {
            "id": None, "name": cut(params["name"], NAME_CHARS), "project": principal.project}

    def _vm_named(self, principal: Principal, names: list[str]) -> Row | None:
        for name in names:
            try:
                return self.store.get_vm(name, principal.project, with_xml=False)
            except errors.NotFound:
                continue
        return None

    def _vm_of_operation(self, principal: Principal, op_id: Any) -> Row | None:
        try:
            op = self.store.get_operation(str(op_id))
        except errors.NotFound:
            return None
        row = self.store.get_vm_by_id(op["vm_id"]) if op.get("vm_id") else None
        return row if row is not None and row.get("project") == principal.project else None


# -- the mount -----------------------------------------------------------------------------------
def error_result(err: BaseException) -> tuple[str, bool]:
    """(result, failed) of an exception that ended a mount write: `EBUSY Conflict: reason`."""
    if isinstance(err, errors.ApplianceError):
        code = err.errno
        text = f"{errnos.errorcode.get(code, code)} {type(err).__name__}: {err.reason}"
    else:
        code = getattr(err, "errno", None) or errnos.EIO
        text = str(errnos.errorcode.get(code, code))
    return cut(text, RESULT_CHARS), code == errnos.EIO


def record_mount(store: Store, principal: Principal, what: str, vm: Row | None,
                 err: BaseException | None) -> None:
    """One audit event for one write of the mount (fs/operations.py's boundary)."""
    result, failed = (OK, False) if err is None else error_result(err)
    try:
        store.add_event(kind_for(result, failed), what, vm, project=principal.project,
                        result=result, by=principal)
    except Exception:
        log.exception("could not record the audit event of %s", what)

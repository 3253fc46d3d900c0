"""Who may call the API: the caller named by a bearer token, and the policy
table (appliance/access/policy.py) decided on the matched route.

Deny by default. Falcon's router forgives spellings of a path (`//v1/vms`,
`/%2Fv1/vms` and `/v1/vms/` all reach the resource of `/v1/vms`), so no rule
may look at the raw path. Three checks:

- `process_request` (before routing) names the caller from the token and
  refuses every request without a valid one unless its path is, letter for
  letter, one of the public paths. Paths no route takes are refused too, so a
  caller without a token learns nothing about which paths exist.
- `process_resource` (after routing) refuses a request without a token that
  reached any resource not marked public, whatever its path was spelled like;
  then asks the policy table for the matched route's template and method: a
  route with no entry is refused to everyone (403), as is an action the
  caller's role does not have.
- The caller's project: the user's first, or `?project=` (one of theirs;
  any, for an admin). A project they are not in is 404, as if it did not
  exist. The service scopes every lookup to it.

A resource is public when its class (or instance) sets `auth_public = True`:
the health checks, the OpenAPI document, and /metrics when the admin made it
public (config metrics_public).

`vmctl exporter` (exporter/standalone.py) serves its /metrics behind this same
middleware with the home's token alone (`single_token`).
"""
from __future__ import annotations

import dataclasses
import hmac
from collections.abc import Callable
from typing import Any

import falcon

from appliance.access import policy
from appliance.access.principal import ANONYMOUS, Principal, Role, reset_caller, set_caller
from appliance.access.tokens import Resolver
from appliance.errors import NotFound

BEARER_HELP = "send Authorization: Bearer <token> (vmctl token create, or HOME/token)"


def public(resource: Any) -> Any:
    """Mark a resource instance as reachable without the token."""
    resource.auth_public = True
    return resource


def bearer(authorization: str | None) -> str:
    """The token of an `Authorization: Bearer TOKEN` header ("" for none)."""
    scheme, _, supplied = (authorization or "").partition(" ")
    return supplied.strip() if scheme.lower() == "bearer" else ""


def single_token(token: str) -> Resolver:
    """One token, compared in constant time, naming an admin (`vmctl exporter`)."""
    if not token:
        raise ValueError("the API token must not be empty")
    expected = token.encode()
    admin = Principal(user="home-token", role=Role.ADMIN, source="api")

    def resolve(token: str, source: str = "api") -> Principal | None:
        if not hmac.compare_digest(token.encode(), expected):
            return None
        return admin if source == admin.source else dataclasses.replace(admin, source=source)

    return resolve


def in_project(principal: Principal, project: str | None,
               project_exists: Callable[[str], bool] | None) -> Principal:
    """The caller acting in `?project=` (None: their first); a project that is not
    theirs (any, for an admin) or does not exist is not found (404). Also the
    WebSockets' (appliance/api/websocket.py)."""
    if project is None or project_exists is None:
        return principal
    if not principal.may_see(project) or not project_exists(project):
        raise NotFound(f"no project named {project[:64]!r}", "project")
    return principal.in_project(project)


def unauthorized() -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(title="Unauthorized", description=BEARER_HELP,
                                   challenges=["Bearer"])


class TokenAuth:
    """Falcon middleware: the caller and the policy of every route (see the module docstring).

    `project_exists` answers whether `?project=` names a project (None: the
    listener has no projects, as `vmctl exporter`)."""

    def __init__(self, resolve: Resolver, public_paths: frozenset[str],
                 project_exists: Callable[[str], bool] | None = None):
        self.resolve = resolve
        self.public_paths = public_paths
        # Paths below these reach a public resource's own lookup (the web page's
        # allowlist); process_resource still refuses any resource not marked public.
        self.public_prefixes: tuple[str, ...] = ()
        self.project_exists = project_exists

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        # Set first, whatever follows: the API's threads serve one request after
        # another, and none may find the caller of the one before.
        req.context.caller_token = set_caller(ANONYMOUS)
        token = bearer(req.get_header("Authorization"))
        principal = self.resolve(token, req.remote_addr or "api") if token else None
        req.context.principal = principal
        req.context.authenticated = principal is not None
        if principal is None:
            if req.path not in self.public_paths and not (
                    self.public_prefixes and req.path.startswith(self.public_prefixes)):
                raise unauthorized()
            return
        principal = self._in_project(principal, req.get_param("project"))
        req.context.principal = principal
        set_caller(principal)

    def _in_project(self, principal: Principal, project: str | None) -> Principal:
        return in_project(principal, project, self.project_exists)

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict) -> None:
        principal: Principal | None = req.context.principal
        if resource is not None and getattr(resource, "auth_public", False):
            return
        if principal is None or resource is None:
            raise unauthorized()
        action = policy.action_for(req.uri_template, req.method, params)
        if action is None:
            raise falcon.HTTPForbidden(title="Forbidden",
                                       description="no policy allows this route to anyone")
        policy.check(principal, action)

    def process_response(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         req_succeeded: bool) -> None:
        token = getattr(req.context, "caller_token", None)
        if token is not None:
            reset_caller(token)
            req.context.caller_token = None

"""Who may call the API: one bearer-token check, decided on the matched route.

Deny by default. Falcon's router forgives spellings of a path (`//v1/vms`,
`/%2Fv1/vms` and `/v1/vms/` all reach the resource of `/v1/vms`), so no rule
may look at the raw path to decide that a request needs no token. Two checks:

- `process_request` (before routing) refuses every request without the token
  unless its path is, letter for letter, one of the public paths. Paths no
  route takes are refused too, so a caller without the token learns nothing
  about which paths exist.
- `process_resource` (after routing) refuses a request without the token that
  reached any resource not marked public, whatever its path was spelled like.

A resource is public when its class (or instance) sets `auth_public = True`:
the health checks, the OpenAPI document, and /metrics when the admin made it
public (config metrics_public).

`vmctl exporter` (exporter/standalone.py) serves its /metrics behind this same
middleware, so both listeners compare tokens and refuse in one way.
"""
from __future__ import annotations

import hmac
from typing import Any

import falcon

BEARER_HELP = "send Authorization: Bearer <token from HOME/token>"


def public(resource: Any) -> Any:
    """Mark a resource instance as reachable without the token."""
    resource.auth_public = True
    return resource


def bearer_matches(authorization: str | None, token: bytes) -> bool:
    """Whether an Authorization header is `Bearer TOKEN` (constant-time compare)."""
    scheme, _, supplied = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(supplied.strip().encode(), token)


def unauthorized() -> falcon.HTTPUnauthorized:
    return falcon.HTTPUnauthorized(title="Unauthorized", description=BEARER_HELP,
                                   challenges=["Bearer"])


class TokenAuth:
    """Falcon middleware: the token check of every route (see the module docstring)."""

    def __init__(self, token: str, public_paths: frozenset[str]):
        if not token:
            raise ValueError("the API token must not be empty")
        self.token = token.encode()
        self.public_paths = public_paths

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        req.context.authenticated = bearer_matches(req.get_header("Authorization"), self.token)
        if not req.context.authenticated and req.path not in self.public_paths:
            raise unauthorized()

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict) -> None:
        if req.context.authenticated:
            return
        if resource is None or not getattr(resource, "auth_public", False):
            raise unauthorized()

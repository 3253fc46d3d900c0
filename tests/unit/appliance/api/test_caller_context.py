"""Issue 11, security: the caller of one request never leaks into the next one
served by the same thread.

The API's threads serve one request after another (the ASGI front's pool
does not copy a context per request), and the caller is a context variable:
TokenAuth sets it first thing in process_request (ANONYMOUS until a token
names someone) and resets it in process_response, which Falcon runs even
when a process_request or process_resource raised. Were either missing, a
request without a token after an admin's would run as the admin (or as
SYSTEM, the default, which is an admin too).
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import falcon
import pytest
from falcon import testing

from appliance.access.principal import ANONYMOUS, SYSTEM, Principal, caller
from appliance.api import asgi, resources
from appliance.api.app import create_app

TOKEN = "context-token"  # noqa: S105 - the test home's token
ADMIN = {"Authorization": f"Bearer {TOKEN}"}


class Seen:
    """Who the responders saw as the caller, and on which thread."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Principal, int]] = []

    def spy(self, monkeypatch, cls: type, responder: str) -> None:
        real = getattr(cls, responder)

        def spied(resource, req, resp, **params):
            self.calls.append((req.path, caller(), threading.get_ident()))
            return real(resource, req, resp, **params)

        monkeypatch.setattr(cls, responder, spied)


class RaisesAfterAuth:
    """A middleware after TokenAuth whose process_request fails (a rate limiter, say)."""

    def process_request(self, req: falcon.Request, resp: falcon.Response) -> None:
        if req.get_param("explode"):
            raise falcon.HTTPServiceUnavailable(title="exploded")


@pytest.fixture
def seen(monkeypatch):
    spies = Seen()
    # Before create_app: the router binds the responders when the routes are added.
    spies.spy(monkeypatch, resources.Health, "on_get_ready")
    spies.spy(monkeypatch, resources.VMs, "on_get")
    return spies


@pytest.fixture
def app(service, seen):
    app = create_app(service, TOKEN)
    app.add_middleware(RaisesAfterAuth())
    return app


def test_a_public_request_after_an_admin_s_runs_as_anonymous(app, seen):
    client = testing.TestClient(app)  # simulate_* run the app on this thread
    assert client.simulate_get("/v1/vms", headers=ADMIN).status_code == 200
    assert caller() is SYSTEM  # reset once the request is answered
    ready = client.simulate_get("/readyz")
    assert ready.status_code in (200, 503) and set(ready.json) == {"ready"}
    assert caller() is SYSTEM
    (path_a, during_a, thread_a), (path_b, during_b, thread_b) = seen.calls
    assert (path_a, during_a.user, during_a.is_admin) == ("/v1/vms", "admin", True)
    assert (path_b, during_b) == ("/readyz", ANONYMOUS)
    assert thread_a == thread_b == threading.get_ident()


@pytest.mark.parametrize("request_kwargs", [
    # TokenAuth.process_request itself raises: no token, an unknown project
    {"path": "/v1/vms"},
    {"path": "/v1/vms", "headers": ADMIN, "params": {"project": "nosuch"}},
    # a later process_request raises after the admin was named
    {"path": "/v1/vms", "headers": ADMIN, "params": {"explode": "1"}},
    # process_resource raises after the admin was named (the body limit)
    {"path": "/v1/vms", "method": "POST", "headers": {**ADMIN, "Content-Length": str(1 << 40)},
     "body": b"{}"},
], ids=["no-token", "unknown-project", "later-middleware", "body-limit"])
def test_a_refused_request_still_resets_the_caller(app, seen, request_kwargs):
    client = testing.TestClient(app)
    kwargs = dict(request_kwargs)
    resp = client.simulate_request(kwargs.pop("method", "GET"), **kwargs)
    assert resp.status_code >= 400
    assert caller() is SYSTEM
    assert client.simulate_get("/readyz").status_code in (200, 503)
    assert seen.calls[-1][1] == ANONYMOUS


async def _get(front: asgi.Front, path: str, query: str = "",
               headers: tuple[tuple[bytes, bytes], ...] = ()) -> int:
    scope = {"type": "http", "method": "GET", "path": path, "query_string": query.encode(),
             "headers": [(b"content-length", b"0"), *headers], "http_version": "1.1",
             "root_path": "", "scheme": "http"}
    status = 0

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await front(scope, receive, send)
    return status


def test_the_front_s_pool_thread_does_not_carry_the_caller_over(app, seen):
    """As served: the ASGI front hands each request to a thread of its pool (one here)."""
    front = asgi.Front(app, threads=2)
    front.pool.shutdown()
    front.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="api")
    admin = ((b"authorization", f"Bearer {TOKEN}".encode()),)

    async def scenario() -> None:
        assert await _get(front, "/v1/vms", headers=admin) == 200
        assert front.pool.submit(caller).result() is SYSTEM
        assert await _get(front, "/readyz") in (200, 503)
        assert await _get(front, "/v1/vms", "project=nosuch", headers=admin) == 404
        assert front.pool.submit(caller).result() is SYSTEM
        assert await _get(front, "/readyz") in (200, 503)

    try:
        asyncio.run(scenario())
    finally:
        front.pool.shutdown()
    (_, during_a, thread), (_, during_b, thread_b), (_, during_c, thread_c) = seen.calls
    assert during_a.user == "admin" and during_b == ANONYMOUS and during_c == ANONYMOUS
    assert thread == thread_b == thread_c != threading.get_ident()

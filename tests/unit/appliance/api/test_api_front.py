"""Admission in the API's ASGI front (appliance/api/asgi.py), in process.

The real Front and its real thread pool (a2wsgi) around a small WSGI app whose
waiting requests block until the test lets them go: long requests never take
the whole pool, a wait that finds the long share full is answered at once
(as with wait=false), a streamed upload then gets 503, and a body that does
not arrive is refused without a thread. The integration suite
(tests/integration/test_server_robustness.py) proves the same against a real
`vmctl serve`; this pins down the rules themselves.
"""
from __future__ import annotations

import asyncio
import threading
from urllib.parse import parse_qs

import pytest

from appliance.api import asgi


class BlockingApp:
    """WSGI: a request that asks to wait blocks until `release` is set."""

    def __init__(self):
        self.release = threading.Event()
        self.waiting = 0
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        wait = parse_qs(environ["QUERY_STRING"]).get("wait", [None])[-1]
        if wait is None:  # as the API: writes wait by default, reads never
            wait = "true" if environ["REQUEST_METHOD"] in ("POST", "PUT", "PATCH", "DELETE") else "0"
        waits = wait not in ("false", "0")
        body = environ["wsgi.input"].read()
        if waits:
            with self.lock:
                self.waiting += 1
            self.release.wait(10)
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [f"{environ['REQUEST_METHOD']} {environ['PATH_INFO']}?{environ['QUERY_STRING']} {len(body)}".encode()]


async def call(front: asgi.Front, method: str, path: str, query: str = "", body: bytes = b"",
               headers: list | None = None, chunks: list | None = None) -> tuple[int, bytes]:
    scope = {"type": "http", "method": method, "path": path, "query_string": query.encode(),
             "headers": headers if headers is not None else [(b"content-length", str(len(body)).encode())],
             "http_version": "1.1", "root_path": "", "scheme": "http"}
    messages = list(chunks) if chunks is not None else [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        if messages:
            return messages.pop(0)
        await asyncio.sleep(3600)  # a client that sends nothing more

    status, out = None, []

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            out.append(message.get("body", b""))

    await front(scope, receive, send)
    return status, b"".join(out)


def test_long_requests_leave_threads_for_quick_ones():
    async def scenario():
        app = BlockingApp()
        front = asgi.Front(app, threads=8)
        assert front.long_limit == 6
        waits = [asyncio.create_task(call(front, "GET", "/v1/operations/op1", "wait=30")) for _ in range(6)]
        while app.waiting < 6:
            await asyncio.sleep(0.01)
        # The long share is full: quick requests still run at once ...
        status, body = await asyncio.wait_for(call(front, "GET", "/healthz"), 2)
        assert (status, body) == (200, b"GET /healthz? 0")
        # ... a wait is answered at once, as with wait=0 / wait=false ...
        status, body = await asyncio.wait_for(call(front, "GET", "//v1/operations/op1/", "wait=30"), 2)
        assert (status, body) == (200, b"GET //v1/operations/op1/?wait=0 0")
        status, body = await asyncio.wait_for(
            call(front, "PUT", "/v1/vms/a/state", "timeout=60&wait=true", body=b"running"), 2)
        assert (status, body) == (200, b"PUT /v1/vms/a/state?wait=false 7")
        # ... and so is a write that asked not to wait, untouched.
        status, body = await asyncio.wait_for(call(front, "POST", "/v1/vms", "wait=false", body=b"{}"), 2)
        assert (status, body) == (200, b"POST /v1/vms?wait=false 2")
        # A streamed upload cannot take a thread now: 503 with Retry-After.
        big = [(b"content-length", str(asgi.BUFFERED_BODY + 1).encode())]
        status, body = await asyncio.wait_for(call(front, "PUT", "/v1/images/x", headers=big), 2)
        assert status == 503 and b"long requests" in body
        app.release.set()
        results = await asyncio.wait_for(asyncio.gather(*waits), 5)
        assert all(status == 200 for status, _ in results)
        assert front.long_in_flight == 0
        # With the share free again, a wait waits (blocks) again.
        app.release.clear()
        app.waiting = 0
        task = asyncio.create_task(call(front, "GET", "/v1/operations/op1", "wait=5"))
        while app.waiting < 1:
            await asyncio.sleep(0.01)
        assert front.long_in_flight == 1
        app.release.set()
        assert (await task)[1] == b"GET /v1/operations/op1?wait=5 0"

    asyncio.run(scenario())


def test_a_body_that_does_not_arrive_is_refused_without_a_thread(monkeypatch):
    monkeypatch.setattr(asgi, "BODY_DEADLINE", 0.3)

    async def scenario():
        app = BlockingApp()
        front = asgi.Front(app, threads=2)
        # Content-Length 100, ten bytes sent, then silence.
        chunks = [{"type": "http.request", "body": b"0123456789", "more_body": True}]
        status, body = await asyncio.wait_for(
            call(front, "POST", "/v1/vms", "wait=false", headers=[(b"content-length", b"100")], chunks=chunks), 2)
        assert status == 408 and b"did not arrive" in body
        assert app.waiting == 0 and front.long_in_flight == 0

    asyncio.run(scenario())


@pytest.mark.parametrize(("method", "path", "query", "expected"), [
    ("POST", "/v1/vms", [], True),  # writes wait by default
    ("POST", "/v1/vms", [("wait", "false")], False),
    ("POST", "/v1/vms", [("wait", "false"), ("wait", "true")], True),  # any true spelling counts
    ("DELETE", "/v1/vms/a", [("wait", "0")], False),
    ("GET", "/v1/operations/x", [("wait", "10")], True),
    ("GET", "//v1/operations/x/", [("wait", "10")], True),
    ("GET", "/v1/operations/x", [("wait", "0")], False),
    ("GET", "/v1/operations/x", [], False),
    ("GET", "/v1/vms", [("wait", "10")], False),  # reads do not wait
])
def test_which_requests_may_wait(method, path, query, expected):
    assert asgi.may_wait(method, path, query) is expected


def test_a_read_without_a_body_goes_to_its_thread_at_once():
    """A GET with neither Content-Length nor Transfer-Encoding has no body (HTTP/1.1's
    framing): the front does not wait for one (no task, no timer in the loop); a GET
    that declares a body still has it read, and a write without one still asks."""

    async def scenario():
        app = BlockingApp()
        front = asgi.Front(app, threads=2)
        # chunks=[]: a receive() that never answers; the GET does not call it
        status, body = await asyncio.wait_for(call(front, "GET", "/v1/vms/a", headers=[], chunks=[]), 2)
        assert (status, body) == (200, b"GET /v1/vms/a? 0")
        status, body = await asyncio.wait_for(
            call(front, "GET", "/v1/vms/a", headers=[(b"content-length", b"3")],
                 chunks=[{"type": "http.request", "body": b"abc", "more_body": False}]), 2)
        assert (status, body) == (200, b"GET /v1/vms/a? 3")
        with pytest.raises(TimeoutError):  # a write's (missing) body is still waited for
            await asyncio.wait_for(call(front, "POST", "/v1/vms", "wait=false", headers=[], chunks=[]), 0.5)

    asyncio.run(scenario())

"""Bounds on what a request may send (issue 9, finding 6).

A 100 MB JSON body used to be parsed whole, and a 100 MB `PUT .../state`
echoed back in a 524 MB error. Every request body is capped at
config.max_body_bytes (default 1 MiB: a spec with 64 KiB of user data is far
below it) before anything reads it: a declared Content-Length above the cap
is 413 at once, and a chunked body is cut off with 413 when it passes the cap.
The image upload (PUT /v1/images/NAME) streams to disk under its own cap
(config max_image_bytes) and is left to it.
"""
from __future__ import annotations

import io
import math
from typing import Any

import falcon
import pydantic_core
from falcon.typing import ReadableIO

from appliance import jsonio
from appliance.errors import Invalid

# Routes (template, method) whose body is not held in memory and has its own bound.
STREAMED = {("/v1/images/{name}", "PUT")}


def too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(title="Request body too large",
                                      description=f"the body may be at most {limit} bytes")


class LimitedStream:
    """A request stream that refuses to yield more than limit bytes in all."""

    def __init__(self, stream: ReadableIO, limit: int):
        self.stream = stream
        self.limit = limit
        self.seen = 0

    def read(self, size: int | None = -1) -> bytes:
        want = self.limit + 1 - self.seen
        if size is not None and size >= 0:
            want = min(want, size)
        data = self.stream.read(want) if want > 0 else b""
        self.seen += len(data)
        if self.seen > self.limit:
            raise too_large(self.limit)
        return data


class BodyLimit:
    """Falcon middleware: the cap on request bodies, on the matched route."""

    def __init__(self, limit: int):
        self.limit = limit

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict) -> None:
        if (req.uri_template, req.method) in STREAMED:
            return
        if req.content_length is not None and req.content_length > self.limit:
            raise too_large(self.limit)
        req.stream = LimitedStream(req.stream, self.limit)
        if req.content_length is None and req.get_header("Transfer-Encoding"):
            self._buffer_chunked(req)

    @staticmethod
    def _buffer_chunked(req: falcon.Request) -> None:
        """A chunked body (no Content-Length) read whole, under the cap, and handed
        on with its length: Falcon's bounded_stream and get_media read
        Content-Length bytes of wsgi.input, so such a body read as empty (a
        `PUT .../state` of "running" sent chunked wrote "")."""
        data = req.stream.read()
        req.env["wsgi.input"] = req.stream = io.BytesIO(data)
        req.env["CONTENT_LENGTH"] = str(len(data))


# Query parameters that are seconds to wait (GET /v1/operations/ID?wait=N, a write's ?timeout=N).
SECONDS_PARAMS = ("wait", "timeout")
READ_METHODS = ("GET", "HEAD", "OPTIONS")


class FiniteWaits:
    """Falcon middleware: a write's wait or timeout that its responder would refuse is
    refused before anything runs, so that a refused write changes nothing.

    A write's responder reads `wait` (a boolean) and `timeout` (seconds) only once the
    write is recorded, to wait for its operation: `DELETE /v1/pools/NAME?wait=maybe`
    deleted the pool, then answered 400 (found by the stateful API fuzzing, issue 17).
    They are parsed here, on the matched route, with the responder's own rules. And
    float("nan") passes Falcon's min_value/max_value checks (every comparison with NaN
    is false), and a deadline of now + NaN is never reached: such a wait held its
    thread until the operation ended, past max_wait: 422, for a read's `wait` too."""

    def process_resource(self, req: falcon.Request, resp: falcon.Response, resource: Any,
                         params: dict) -> None:
        for name in SECONDS_PARAMS:
            value = req.get_param(name)
            if value is None:
                continue
            try:
                seconds = float(value)
            except ValueError:
                continue  # wait=false and the like: below for a write
            if not math.isfinite(seconds):
                raise Invalid("must be a finite number of seconds", name)
        if req.method not in READ_METHODS:  # as resources._wanted and _timeout read them
            req.get_param_as_bool("wait")
            req.get_param_as_float("timeout", min_value=0, max_value=3600)


# An answer's JSON as resp.media writes it (json_handlers), for answers kept already
# written (resources.VM's GET): one encoder for both.
dump_json = pydantic_core.to_json


def json_handlers() -> falcon.media.Handlers:
    """JSON bodies parsed with jsonio.loads: deep nesting is 400, not a RecursionError's 500.
    Answers are written by pydantic-core's encoder (the spec library's own, in Rust):
    json.dumps was a fifth of a GET /v1/vms/NAME's time in the worker and 16-38 ms of
    a GET /v1/vms at 1,000 VMs; to_json writes the same JSON 4-8x faster (compact,
    UTF-8, as Falcon's default with ensure_ascii=False)."""
    handler = falcon.media.JSONHandler(dumps=dump_json, loads=jsonio.loads)
    return falcon.media.Handlers(
        {falcon.MEDIA_JSON: handler, "application/json; charset=UTF-8": handler}
    )

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

from typing import Any, BinaryIO

import falcon

from appliance import jsonio

# Routes (template, method) whose body is not held in memory and has its own bound.
STREAMED = {("/v1/images/{name}", "PUT")}


def too_large(limit: int) -> falcon.HTTPContentTooLarge:
    return falcon.HTTPContentTooLarge(title="Request body too large",
                                      description=f"the body may be at most {limit} bytes")


class LimitedStream:
    """A request stream that refuses to yield more than limit bytes in all."""

    def __init__(self, stream: BinaryIO, limit: int):
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


def json_handlers() -> falcon.media.Handlers:
    """JSON bodies parsed with jsonio.loads: deep nesting is 400, not a RecursionError's 500."""
    handler = falcon.media.JSONHandler(loads=jsonio.loads)
    return falcon.media.Handlers({falcon.MEDIA_JSON: handler, "application/json; charset=UTF-8": handler})

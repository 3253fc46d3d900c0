"""Console tickets ride in WebSocket URLs (`?ticket=vmt_...`, browsers cannot set a
header), and uvicorn logs every WebSocket handshake with its path and query string in
the API's log (HOME/logs/api.log), the plain HTTP requests in access.log. A ticket
refused before it is used (a bad `mode`, a full worker, a wrong path) stays valid for
its minute: whoever reads the log could use it. The API's worker redacts them."""
from __future__ import annotations

import logging
import os

import pytest
from gunicorn.config import Config as GunicornConfig
from gunicorn.glogging import Logger

from appliance.api.http_deadline import Worker

TICKET = "vmt_" + "A1b2C3d4E5f6" * 3 + "g7H8i9J"  # the shape: vmt_ + 43 url-safe characters


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def worker_loggers():
    """uvicorn's two loggers as the API's gunicorn worker leaves them (the worker is made
    as gunicorn's arbiter makes it, before it forks), with a handler that keeps the lines."""
    cfg = GunicornConfig()
    Worker(0, os.getpid(), [], None, 30, cfg, Logger(cfg))
    capture = Capture()
    loggers = [logging.getLogger("uvicorn.error"), logging.getLogger("uvicorn.access")]
    for logger in loggers:
        logger.addHandler(capture)
        logger.setLevel(logging.INFO)
    yield loggers, capture
    for logger in loggers:
        logger.removeHandler(capture)


@pytest.mark.parametrize("query", [
    f"ticket={TICKET}&mode=bad",  # refused with 422 before the ticket is taken: still valid
    f"mode=ro&ticket={TICKET}",
    f"ticke%74=vmt%5F{TICKET[4:]}",  # parse_qsl decodes names and values: the same ticket
])
def test_a_websocket_s_ticket_never_reaches_the_api_log(worker_loggers, query):
    (error_log, _access), capture = worker_loggers
    # uvicorn's own call, websockets_impl.asgi_send on a refusal
    error_log.info('%s - "WebSocket %s" %d', "127.0.0.1:40000",
                   f"/v1/vms/web1/console?{query}", 422)
    assert len(capture.lines) == 1
    assert TICKET[4:] not in capture.lines[0], capture.lines[0]
    assert "/v1/vms/web1/console?" in capture.lines[0]  # the line still says what was asked


def test_a_ticket_in_a_plain_request_never_reaches_the_access_log(worker_loggers):
    (_error, access_log), capture = worker_loggers
    # uvicorn's access line (httptools_impl): client, method, path with query, version, status
    access_log.info('%s - "%s %s HTTP/%s" %d', "127.0.0.1:40000", "GET",
                    f"/v1/vms/web1/console?ticket={TICKET}", "1.1", 401)
    assert TICKET[4:] not in capture.lines[0], capture.lines[0]

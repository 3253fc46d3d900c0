"""A WSGI app served over real HTTP in a daemon thread, for unit tests that run
vmctl (or another HTTP client) against the REST app without `vmctl serve`."""
from __future__ import annotations

import threading
from wsgiref.simple_server import WSGIRequestHandler, make_server


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *args) -> None:
        pass


class HttpServed:
    def __init__(self, app) -> None:
        self.server = make_server("127.0.0.1", 0, app, handler_class=_QuietHandler)
        # A short poll: shutdown() waits for the serving loop to look (0.5 s by default, every test).
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"poll_interval": 0.02}, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)

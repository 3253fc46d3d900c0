"""`vmctl exporter`: the libvirt families alone, for hosts that run no API.

Same collector as /metrics, one target (the given libvirt URI, labelled
host=NAME). Runs in the foreground until SIGTERM or SIGINT.

Who may read it: the API's own token check (appliance/api/auth.py TokenAuth,
the same middleware, the same 401 body), with the token of HOME/token (made,
0600, at first start, as `vmctl serve` makes it). DESIGN.md's security model
is deny by default, and a loopback listener is no shelter: a guest on a
user-mode NIC reaches the host's 127.0.0.1 as 10.0.2.2 (SECURITY.md).
`--public` serves without the token, as config metrics_public does for the API.

Served by a threaded wsgiref server, as prometheus_client's start_http_server
does, but with our Falcon app in front of the registry, so that the token
check and the error shape are the API's. Over HTTPS (appliance/tls.py: on
unless the listen address is loopback, or --insecure-http), with the home's
certificate; the handshake happens in each connection's own thread.
"""
from __future__ import annotations

import logging
import signal
import socket
import socketserver
import ssl
import sys
import threading
from pathlib import Path
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import falcon
import libvirt
from prometheus_client import CollectorRegistry

from appliance import sdnotify
from appliance.api import error_shape
from appliance.api.auth import TokenAuth, single_token
from appliance.tls import fingerprint, server_context
from exporter.registry import MetricsResource, build_registry

log = logging.getLogger("vmctl.exporter")


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen wants HOST:PORT, not {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def create_app(registry: CollectorRegistry, token: str | None) -> falcon.App:
    """/metrics behind the API's token check; token=None: public (`--public`)."""
    middleware = [] if token is None else [TokenAuth(single_token(token), public_paths=frozenset())]
    app = falcon.App(middleware=middleware)
    error_shape.install(app)
    app.add_route("/metrics", MetricsResource(registry))
    return app


class _ThreadingServer(socketserver.ThreadingMixIn, WSGIServer):
    """One thread per scrape, as prometheus_client's own server; none outlives the process."""

    daemon_threads = True

    def handle_error(self, request: object, client_address: object) -> None:
        """A failed TLS handshake or a dropped connection is the client's
        business (a port scan, plain HTTP to the HTTPS port): one line, no traceback."""
        err = sys.exc_info()[1]
        if isinstance(err, OSError):
            log.debug("connection from %s: %s", client_address, err)
        else:
            super().handle_error(request, client_address)  # type: ignore[arg-type]


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base's signature
        """Prometheus scrapes every 15 s: no log line per scrape."""


def serve(app: falcon.App, address: str, port: int, context: ssl.SSLContext | None = None
          ) -> tuple[WSGIServer, threading.Thread]:
    """Serve `app` at address:port in a daemon thread; returns the server and its thread.
    context: HTTPS with it; accept() does no handshake (the serving thread would
    wait on each client), the connection's thread does it at its first read."""
    server_class = type("Server", (_ThreadingServer,),
                        {"address_family": socket.getaddrinfo(address, port)[0][0]})
    server: WSGIServer = make_server(address, port, app, server_class=server_class,
                         handler_class=_QuietHandler)
    if context is not None:
        server.socket = context.wrap_socket(server.socket, server_side=True,
                                            do_handshake_on_connect=False)
    thread = threading.Thread(target=server.serve_forever, name="exporter-http", daemon=True)
    thread.start()
    return server, thread


def run(listen: str, libvirt_uri: str, token: str | None, host_name: str | None = None,
        deadline: float = 5.0, all_domains: bool = False,
        tls_files: tuple[Path, Path] | None = None, appliance: str | None = None) -> int:
    """all_domains: every domain of the host, not only the appliance's.
    appliance: the instance id whose domains are reported (None: any appliance's).
    tls_files: HTTPS with this certificate and key (appliance/tls.py prepare)."""
    sdnotify.configure_logging()
    libvirt.registerErrorHandler(lambda *_: None, None)  # errors are handled; keep stderr quiet
    address, port = parse_listen(listen)
    registry = build_registry(libvirt_uri, host_name=host_name or socket.gethostname(),
                              api_metrics=False, deadline=deadline,
                              all_domains=all_domains, appliance=appliance)
    context = None if tls_files is None else server_context(*tls_files)
    server, thread = serve(create_app(registry, token), address, port, context)
    reporting = ("every domain" if all_domains else "every appliance's domains"
                 if appliance is None else f"appliance {appliance}'s domains")
    log.info("serving /metrics on %s://%s:%d for %s (%s), reporting %s",
             "http" if context is None else "https", address, port, libvirt_uri,
             "public" if token is None else "bearer token", reporting)
    if tls_files is not None:
        log.info("TLS certificate %s, SHA-256 fingerprint %s", tls_files[0],
                 fingerprint(tls_files[0].read_bytes()))
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()
    server.shutdown()
    thread.join(timeout=5)
    server.server_close()
    return 0

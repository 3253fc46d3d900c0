"""`vmctl exporter`: the libvirt families alone, for hosts that run no API.

Same collector as /metrics, one target (the given libvirt URI, labelled
host=NAME), served by prometheus_client's own threaded HTTP server. Runs in
the foreground until SIGTERM or SIGINT.
"""
from __future__ import annotations

import logging
import signal
import socket
import threading

import libvirt
from prometheus_client import start_http_server

from exporter.registry import build_registry


def parse_listen(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--listen wants HOST:PORT, not {listen!r}")
    return host.strip("[]") or "127.0.0.1", int(port)


def run(listen: str, libvirt_uri: str, host_name: str | None = None, deadline: float = 5.0,
        all_domains: bool = False) -> int:
    """all_domains: every domain of the host, not only the appliance's."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    libvirt.registerErrorHandler(lambda *_: None, None)  # errors are handled; keep stderr quiet
    address, port = parse_listen(listen)
    registry = build_registry(None, libvirt_uri, host_name=host_name or socket.gethostname(),
                              api_metrics=False, deadline=deadline, all_domains=all_domains)
    server, thread = start_http_server(port, addr=address, registry=registry)
    logging.getLogger("vmctl.exporter").info("serving /metrics on http://%s:%d for %s", address, port, libvirt_uri)
    stopping = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.set())
    stopping.wait()
    server.shutdown()
    thread.join(timeout=5)
    return 0

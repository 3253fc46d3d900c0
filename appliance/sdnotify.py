"""systemd's readiness protocol for `vmctl serve` (vm-appliance.service is
Type=notify): READY=1 once the API answers /readyz, STOPPING=1 at a stop; and
log lines the journal files at their level (configure_logging).

sd_notify(3) is one datagram to the AF_UNIX socket named by $NOTIFY_SOCKET (a
path, or an abstract name written with a leading "@"); with no such variable
(the clone's `make run`, tests) nothing is sent and nothing waits.
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Callable

from appliance.config import Config

log = logging.getLogger("vmctl.sdnotify")
ENV = "NOTIFY_SOCKET"


def enabled() -> bool:
    return bool(os.environ.get(ENV))


def notify(message: str) -> bool:
    """Send message ("READY=1", "STATUS=...", newline-separated) to systemd;
    False when there is no socket to send to, or it refused."""
    address = os.environ.get(ENV, "")
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False  # unset, or a vsock address: not ours to speak
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
    except OSError as err:
        log.warning("sd_notify %r to %s: %s", message.split("\n")[0], os.environ[ENV], err)
        return False
    return True


def api_ready(config: Config) -> bool:
    """Whether the API of this home answers /readyz with 200 (store and libvirt reachable)."""
    from appliance.client import APIError, Client

    try:
        client = Client.from_home(str(config.home))
    except ValueError:
        return False
    client.timeout = 5
    try:
        client.request("GET", "/readyz")
    except APIError:
        return False
    return True


def notify_when_ready(config: Config, stopping: threading.Event, interval: float = 0.5,
                      ready: Callable[[Config], bool] = api_ready) -> threading.Thread | None:
    """A thread that sends READY=1 the first time ready(config) holds, unless
    stopping is set first; None (no thread) when systemd is not listening."""
    if not enabled():
        return None

    def wait() -> None:
        started = time.monotonic()
        while not stopping.is_set():
            if ready(config):
                notify(f"READY=1\nSTATUS=serving on {config.listen} (home {config.home})")
                log.info("ready after %.1f s: told systemd", time.monotonic() - started)
                return
            stopping.wait(interval)

    thread = threading.Thread(target=wait, name="sd-notify-ready", daemon=True)
    thread.start()
    return thread


def stderr_is_journal() -> bool:
    """Whether this process's stderr is systemd's journal ($JOURNAL_STREAM names
    its device and inode): then serve's children log there too, not to HOME/logs."""
    value = os.environ.get("JOURNAL_STREAM", "")
    try:
        stat = os.fstat(2)
    except OSError:
        return False
    return bool(value) and value == f"{stat.st_dev}:{stat.st_ino}"


LOG_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def syslog_priority(levelno: int) -> int:
    """sd-daemon(3)'s priority of a logging level: 2 critical ... 7 debug."""
    for floor, priority in ((logging.CRITICAL, 2), (logging.ERROR, 3), (logging.WARNING, 4),
                            (logging.INFO, 6)):
        if levelno >= floor:
            return priority
    return 7


class JournalFormatter(logging.Formatter):
    """Each line of a record prefixed with its priority ("<4>" for a warning):
    journald strips the prefix and files the line at that priority
    (SyslogLevelPrefix=, on by default), so that `journalctl -u vm-appliance -p
    warning` finds the appliance's warnings and errors; without it every line of
    a stream is "info". A traceback's lines carry their record's prefix too."""

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).splitlines())


def configure_logging(level: int = logging.INFO) -> None:
    """logging.basicConfig for serve and the processes it runs (the mount, the
    console broker) and for the exporter: to stderr, as before; when stderr is
    systemd's journal, with priorities and without a timestamp (the journal
    keeps its own)."""
    handler = logging.StreamHandler()
    if stderr_is_journal():
        handler.setFormatter(JournalFormatter("%(name)s %(levelname)s %(message)s"))
    else:
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    logging.basicConfig(level=level, handlers=[handler])

"""The broker's libvirt connections: one per host, opened on demand, re-opened
after a failure; and the lookup of a VM's running domain.

These connections serve lookups, VNC and screenshots, from the event loop's
thread: calls are short, and a dead remote host is noticed by the keepalive
(2 s x 3) rather than waited on forever. A console stream has a connection and
a thread of its own (port.py; console_uri says where): a guest that does not
read its serial port makes libvirtd stop reading the connection its stream is
on, and every call on it would block.
"""
from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable

import libvirt

from appliance import hosturi
from appliance.config import Config
from appliance.consoles.protocol import ConsoleUnavailable
from appliance.errors import Conflict, Failed, NotFound
from appliance.host_access import connection_uri
from appliance.store import Row, Store
from appliance.virt.reasons import connect_reason

log = logging.getLogger("appliance.consoles")

# Transports over which libvirt can pass a file descriptor (openGraphicsFD):
# a UNIX socket to a libvirtd of this machine; not ssh, TLS nor TCP.
FD_PASSING_SCHEMES = ("qemu", "qemu+unix")


class HostConnections:
    """libvirt connections by host name, following the store's hosts table."""

    def __init__(self, store: Store, config: Config,
                 open_connection: Callable[[str], libvirt.virConnect] = libvirt.open):
        self.store = store
        self.config = config
        self.open_connection = open_connection
        self._conns: dict[str, tuple[str, libvirt.virConnect]] = {}  # host -> (uri, connection)

    def vm(self, vm_id: str) -> Row:
        row = self.store.get_vm_by_id(vm_id)
        if row is None:
            raise NotFound(f"no VM with id {vm_id}", "vm")
        return row

    def _host_row(self, host: str) -> Row:
        try:
            return self.store.get_host(host)
        except NotFound:
            raise Failed(f"host {host!r} is not known") from None

    def uri_of(self, host: str) -> str:
        uri = str(self._host_row(host)["uri"])
        # A URI in the store was allow-listed when an admin added it; one
        # written there by other means is not opened (the controller's rule).
        refused = hosturi.refused(uri, self.config)
        if refused:
            raise Failed(f"host {host}: {refused}")
        return uri

    def connection(self, host: str) -> libvirt.virConnect:
        """The host's connection, (re)opened when it is missing or dead."""
        uri = self.uri_of(host)
        known = self._conns.get(host)
        if known is not None:
            known_uri, conn = known
            if known_uri == uri and _alive(conn):
                return conn
            self.drop(host)
        if not self._host_row(host).get("up"):
            # The controller's heartbeat says it does not answer: a connect could
            # hang (a TCP connect to a dead address) and, on the loop's thread,
            # stop every console; ask again once the host is back.
            raise ConsoleUnavailable(f"host {host} is down")
        try:
            conn = self.open_connection(connection_uri(uri, self.config))
        except libvirt.libvirtError as err:
            log.warning("cannot connect to host %s (%s): %s", host, uri, err.get_error_message())
            raise ConsoleUnavailable(f"host {host} is unreachable: {connect_reason(err)}") from None
        if not uri.startswith("test:"):
            try:
                conn.setKeepAlive(2, 3)
            except libvirt.libvirtError:
                pass  # local drivers without keepalive support
        self._conns[host] = (uri, conn)
        log.info("connected to host %s (%s)", host, uri)
        return conn

    def console_uri(self, row: Row) -> tuple[str, str]:
        """The VM's host and the URI a console stream's own connection opens
        (the checks of `connection`, without connecting)."""
        host = row.get("host")
        if not host:
            raise Conflict(f"{row['name']} is not running: start it first", "vm")
        uri = self.uri_of(host)
        if not self._host_row(host).get("up"):
            raise ConsoleUnavailable(f"host {host} is down")
        return host, connection_uri(uri, self.config)

    def drop(self, host: str) -> None:
        known = self._conns.pop(host, None)
        if known is not None:
            try:
                known[1].close()
            except libvirt.libvirtError:
                pass

    def close_all(self) -> None:
        for host in list(self._conns):
            self.drop(host)

    def running_domain(self, row: Row) -> tuple[str, libvirt.virDomain]:
        """The VM's host and its active domain there; Conflict when it is not running."""
        host = row.get("host")
        if not host:
            raise Conflict(f"{row['name']} is not running: start it first", "vm")
        conn = self.connection(host)
        try:
            dom = conn.lookupByUUIDString(row["id"])
            active = dom.isActive()
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise Conflict(f"{row['name']} is not running: start it first", "vm") from None
            if not _alive(conn):
                self.drop(host)
                raise ConsoleUnavailable(f"host {host} is unreachable") from None
            raise Failed(f"cannot look up {row['name']} on {host}: {_message(err)}") from None
        if not active:
            raise Conflict(f"{row['name']} is stopped: start it first", "vm")
        return host, dom

    def passes_fds(self, host: str) -> tuple[bool, str]:
        """Whether the host's transport can pass a file descriptor, and its scheme."""
        scheme = urllib.parse.urlsplit(self.uri_of(host)).scheme
        return scheme in FD_PASSING_SCHEMES, scheme


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())
    except libvirt.libvirtError:
        return False


def _message(err: libvirt.libvirtError) -> str:
    """libvirt's message, cut short (it names only the appliance's own domains)."""
    return (err.get_error_message() or "error")[:200]

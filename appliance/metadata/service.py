"""The metadata service: a listener on 169.254.169.254:80 in the network namespace of
each libvirt host of this machine, kept in step with the store's hosts.

Every RECONCILE_SECONDS the hosts are looked at: a local one (qemu:///system,
qemu+unix) is reached on its UNIX socket, whose listening process says which
network namespace the host's guests live in (netns.py); hosts sharing one share a
listener. A namespace without a listener gets one; a listener whose hosts are all
gone or unreachable is closed (its socket would keep the namespace alive). A
remote host (ssh, TLS, TCP) cannot be served: the appliance cannot listen in its
network, and its guests keep their seed (NoCloud or ConfigDrive).

The machine's own network namespace (this process's: qemu:///system's hosts) is
served only with metadata_host_namespace: 169.254.169.254/32 on its `lo` would hide
the machine's own metadata service (a cloud provider's) from the machine. Its hosts
are skipped otherwise, and the log says so once for each.

A second appliance on the same libvirt finds the address taken (EADDRINUSE) and
serves nothing there; it tries again at each round. The address is removed from
the namespace's `lo` when its listener closes or the service stops, unless it was
there before (netns.Loopback).
"""
from __future__ import annotations

import asyncio
import errno
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import libvirt

from appliance import hosturi
from appliance.config import Config
from appliance.metadata import documents, netns
from appliance.metadata.http import MAX_HEAD, Handler
from appliance.metadata.identify import Identifier, Namespace
from appliance.store import Store

log = logging.getLogger("appliance.metadata")
RECONCILE_SECONDS = 5.0
WORKERS = 4  # threads identifying VMs (store, libvirt, /proc)


@dataclass
class Listener:
    ns: Namespace
    server: asyncio.base_events.Server
    diag: netns.SocketDiag
    loopback: netns.Loopback

    def close(self) -> None:
        """Stop listening (in the event loop's thread); then release() the address."""
        self.server.close()
        self.diag.close()

    def release(self) -> None:
        try:
            self.loopback.release()
        except OSError as err:
            log.warning("metadata: %s stays on lo in namespace %s: %s",
                        netns.METADATA_ADDRESS, self.ns.key, err)


class Connections:
    """libvirt connections by host name, opened on first use, re-opened when dead."""

    def __init__(self, uris: Callable[[str], str]):
        self.uris = uris
        self._conns: dict[str, tuple[str, Any]] = {}
        self._lock = threading.Lock()

    def __call__(self, host: str) -> Any:
        uri = self.uris(host)
        with self._lock:
            known = self._conns.get(host)
            if known is not None and known[0] == uri and known[1].isAlive():
                return known[1]
            conn = libvirt.open(uri)  # a local URI: no credentials to add
            self._conns[host] = (uri, conn)
            if known is not None:
                try:
                    known[1].close()
                except libvirt.libvirtError:
                    pass
            return conn

    def close(self) -> None:
        with self._lock:
            for _uri, conn in self._conns.values():
                try:
                    conn.close()
                except libvirt.libvirtError:
                    pass
            self._conns.clear()


class MetadataService:
    def __init__(self, config: Config, store: Store):
        self.config = config
        self.store = store
        self.uris: dict[str, str] = {}
        self.connections = Connections(lambda host: self.uris[host])
        self.identifier = Identifier(store, self.connections)
        self.pool = ThreadPoolExecutor(WORKERS, thread_name_prefix="metadata")
        self.listeners: dict[tuple[int, int], Listener] = {}
        self._refused: set[tuple[int, int]] = set()  # namespaces we could not listen in
        self._unserved: set[str] = set()  # hosts in the machine's namespace, said once

    # -- the hosts' namespaces --------------------------------------------------
    def local_hosts(self) -> dict[tuple[int, int], tuple[int, dict[str, int]]]:
        """The namespaces of the reachable local hosts: key -> (a pid there, host -> pid)."""
        found: dict[tuple[int, int], tuple[int, dict[str, int]]] = {}
        uris: dict[str, str] = {}
        own = netns.namespace_key(os.getpid())
        unserved = []
        for host in self.store.list_hosts():
            uri = str(host["uri"])
            path = netns.socket_path(uri)
            if path is None or hosturi.refused(uri, self.config):
                continue
            try:
                pid = netns.listener_pid(path)
                key = netns.namespace_key(pid)
            except OSError as err:
                log.debug("host %s: no local libvirt at %s (%s)", host["name"], path, err)
                continue
            if key == own and not self.config.metadata_host_namespace:
                unserved.append(host["name"])
                continue
            uris[host["name"]] = uri
            found.setdefault(key, (pid, {}))[1][host["name"]] = pid
        self.uris.update(uris)
        if not self._unserved.issuperset(unserved):
            self._unserved.update(unserved)
            log.info("metadata: not serving hosts %s: they are in this machine's own network "
                     "namespace, whose %s stays the machine's (metadata_host_namespace = false; "
                     "vmctl serve --metadata-host-namespace serves them); their guests have "
                     "their seed only", ", ".join(sorted(unserved)), netns.METADATA_ADDRESS)
        return found

    async def reconcile(self) -> None:
        loop = asyncio.get_running_loop()
        wanted = await loop.run_in_executor(self.pool, self.local_hosts)
        for key in list(self.listeners):
            if key not in wanted:
                log.info("metadata: closing the listener of namespace %s (no host there)", key)
                gone = self.listeners.pop(key)
                gone.close()
                await loop.run_in_executor(self.pool, gone.release)
        for key, (pid, pids) in wanted.items():
            listener = self.listeners.get(key)
            if listener is not None:
                listener.ns.pid, listener.ns.pids = pid, pids
                listener.ns.hosts = sorted(pids)
                continue
            try:
                sock, diag, loopback = await loop.run_in_executor(self.pool, self._open, pid,
                                                                  key)
            except OSError as err:
                if key not in self._refused:
                    why = ("another process listens there (a second appliance?)"
                           if err.errno == errno.EADDRINUSE else str(err))
                    log.warning("metadata: cannot listen on %s:%d for hosts %s: %s",
                                netns.METADATA_ADDRESS, netns.METADATA_PORT,
                                ", ".join(sorted(pids)), why)
                    self._refused.add(key)
                continue
            self._refused.discard(key)
            ns = Namespace(key, pid, sorted(pids), diag.established_inode, pids,
                           diag.neighbour_macs)
            server = await asyncio.start_server(Handler(self._resolver(ns)), sock=sock,
                                                limit=MAX_HEAD)
            self.listeners[key] = Listener(ns, server, diag, loopback)
            log.info("metadata: serving http://%s/ for hosts %s", netns.METADATA_ADDRESS,
                     ", ".join(sorted(pids)))

    @staticmethod
    def _open(pid: int, key: tuple[int, int]) -> tuple[Any, netns.SocketDiag, netns.Loopback]:
        def setup() -> tuple[Any, netns.SocketDiag, bool]:
            added = netns.add_loopback_address()
            try:
                ours = added or netns.loopback_label() == netns.OUR_LABEL
                sock = netns.open_listener()
                try:
                    return sock, netns.SocketDiag(), ours
                except OSError:
                    sock.close()
                    raise
            except OSError:
                if added:  # not one found there: another appliance may listen on it
                    netns.remove_loopback_address()
                raise
        fd = netns.open_namespace(pid, expected=key)  # the pid may be another's by now
        try:
            sock, diag, ours = netns.in_namespace(pid, setup, ns_fd=fd)
        except BaseException:
            os.close(fd)
            raise
        return sock, diag, netns.Loopback(pid, fd, ours)

    def _resolver(self, ns: Namespace) -> Callable[[str, int], Any]:
        async def resolve(ip: str, port: int) -> documents.Dir | None:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self.pool, self.documents_of, ns, ip, port)
        return resolve

    def documents_of(self, ns: Namespace, ip: str, port: int) -> documents.Dir | None:
        vm = self.identifier.identify(ns, ip, port)
        return None if vm is None else documents.tree(vm)

    # -- running ------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        try:
            while not stop.is_set():
                try:
                    await self.reconcile()
                except Exception:  # the next round tries again  # noqa: BLE001
                    log.exception("metadata: reconciling the listeners failed")
                try:
                    await asyncio.wait_for(stop.wait(), RECONCILE_SECONDS)
                except TimeoutError:
                    pass
        finally:
            for listener in self.listeners.values():
                listener.close()
                listener.release()
            self.listeners.clear()
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.connections.close()

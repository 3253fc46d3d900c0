"""Hosts: the links to every host in the hosts table, (re)connecting off the
loop, the heartbeat that records each host's inventory, and what follows a
host that stays down (evacuation) or is up (console mirroring)."""
from __future__ import annotations

import concurrent.futures
import logging
import os
import threading
from collections.abc import Callable
from typing import Any

from appliance import hosturi
from appliance.controller.cluster_cpu import ClusterCpu
from appliance.controller.context import HOST_NAME, Context, HostLink
from appliance.controller.evacuation import Evacuation
from appliance.controller.files import VmFiles
from appliance.virt.driver import DriverError, Unreachable

log = logging.getLogger("appliance.controller")

HEARTBEAT_SECONDS = 2.0


class ConnectBusy(RuntimeError):
    """A connect to that host, at that address, is still under way (hung)."""


class ConnectThreads(concurrent.futures.Executor):
    """A thread of its own for each connect. libvirt's open has no timeout: a host
    whose connect hangs (an ssh tunnel to a machine gone dark, a TCP SYN nobody
    answers) holds its thread until the kernel gives up. In a pool of 4, four such
    hosts held every thread and no other host reconnected (the closing note of
    session 14). At most one connect per host and address is under way: a link's
    own (HostLink.connecting), and one of a link dropped meanwhile (a host removed
    and added again) refuses the next with ConnectBusy until it returns; so the
    threads are bounded by the addresses an admin gave, however long they hang.
    submit raises RuntimeError when no thread can be had (pids.max): the caller
    tries again later."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running: dict[tuple[str, str], threading.Thread] = {}
        self._shut = False

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any
               ) -> concurrent.futures.Future[Any]:
        link = args[0] if args else None
        key = (str(getattr(link, "name", "")), str(getattr(link, "uri", "")))
        done: concurrent.futures.Future[Any] = concurrent.futures.Future()

        def run() -> None:
            try:
                if done.set_running_or_notify_cancel():
                    try:
                        done.set_result(fn(*args, **kwargs))
                    except BaseException as err:  # noqa: BLE001 - handed to the future's reader
                        done.set_exception(err)
            finally:
                with self._lock:
                    if self._running.get(key) is threading.current_thread():
                        del self._running[key]

        with self._lock:
            if self._shut:
                raise RuntimeError("the connector is shut down")
            busy = self._running.get(key)
            if busy is not None and busy.is_alive():
                raise ConnectBusy(f"a connect to {key[0]} ({key[1]}) is still under way")
            thread = threading.Thread(target=run, name=f"connect-{key[0] or 'host'}", daemon=True)
            thread.start()  # RuntimeError when the system has no thread to give
            self._running[key] = thread
        return done

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        """No new connect; those under way are left to end (or hang) on their own:
        their threads are daemons, and a connect cannot be cancelled."""
        with self._lock:
            self._shut = True


class HostMonitor:
    def __init__(self, ctx: Context, files: VmFiles, evacuation: Evacuation,
                 on_up: Callable[[HostLink], None]):
        self.ctx = ctx
        self.files = files
        self.evacuation = evacuation
        self.on_up = on_up  # at each heartbeat of a host that answers (console mirroring)
        self.cluster_cpu = ClusterCpu(ctx)  # the cluster's baseline CPU model (issue 14, F)

    def register_local_host(self) -> None:
        """The appliance's own libvirt is the first host, once: an operator who
        removes it later does not see it come back."""
        store, config = self.ctx.store, self.ctx.config
        with store.transaction():
            if store.get_meta("local-host-registered"):
                return
            if not store.host_exists(HOST_NAME) and not any(
                    h["uri"] == config.libvirt_uri for h in store.list_hosts()):
                store.upsert_host(
                    {
                        "name": HOST_NAME,
                        "uri": config.libvirt_uri,
                        "state": "enabled",
                        "up": 0,
                        "last_seen": None,
                        "info": {},
                        "cpu_ratio": 16.0,
                        "ram_ratio": 1.5,
                        "disk_ratio": 1.0,
                        "reserved_memory_mib": 0,
                        "labels": {},
                        "storage": "shared",
                        "created": self.ctx.clock(),
                    }
                )
            store.set_meta("local-host-registered", "1")

    def sync_links(self) -> None:
        """Follow the hosts table: connect to added hosts, drop removed ones (and those
        removed and added again: a link is for one row, told by its `created`)."""
        hosts = self.ctx.store.list_hosts()
        self.ctx.links.sync({h["name"]: h["uri"] for h in hosts},
                            {h["name"]: h.get("created") for h in hosts})
        self.cluster_cpu.recompute()  # a host removed: a new baseline (cheap when unchanged)

    def due_connects(self, now: float) -> list[HostLink]:
        """Links to (re)connect now (about once a second each), marked as connecting."""
        due = []
        for link in self.ctx.links.all():
            if not link.connecting and not link.connected and now >= link.next_attempt:
                link.next_attempt = now + 1.0
                link.connecting = True
                due.append(link)
        return due

    def reconnect(self, link: HostLink) -> bool:
        """Connect (again); False while the host is unreachable. An outage is one
        host-down event and one warning, however many attempts it takes."""
        store = self.ctx.store
        if link.was_up:
            link.was_up = False
            link.down_since = link.down_since or self.ctx.clock()
            log.warning("lost the connection to %s (%s); reconnecting", link.name, link.uri)
            store.add_event(
                "host-down", f"lost the connection to host {link.name} (libvirt at {link.uri})"
            )
            link.reported_down = True
        refused = hosturi.refused(link.uri, self.ctx.config)
        try:
            if refused:
                raise ConnectionRefusedError(refused)
            link.driver.connect()
        except (Unreachable, ConnectionRefusedError) as err:
            if self._dropped(link):
                return False
            if link.down_since is None:
                link.down_since = self.ctx.clock()
            reason = refused or (err.reason if isinstance(err, Unreachable) else str(err))
            self._record(link, up=False, attempt=reason)
            if not link.reported_down:
                link.reported_down = True
                log.warning(
                    "host %s (libvirt at %s) unreachable (%s); retrying every second",
                    link.name,
                    link.uri,
                    err,
                )
                store.add_event(
                    "host-down", f"host {link.name} (libvirt at {link.uri}) unreachable: {reason}"
                )
            return False
        if self._dropped(link):
            link.driver.disconnect()  # nobody would use or close it
            return False
        link.was_up, link.reported_down, link.down_since = True, False, None
        log.info("connected to %s (%s)", link.name, link.uri)
        store.add_event("host-up", f"host {link.name} (libvirt at {link.uri}) reachable")
        # up with what it has: placeable at once
        self._record(link, up=True, info=self._inventory(link), attempt="")
        self.cluster_cpu.host_connected(link)
        return True

    def _dropped(self, link: HostLink) -> bool:
        """Whether the link was dropped while its connect ran (its host removed, re-addressed,
        or removed and added again): what that connect found is not the host row's to record
        (the row is another link's now)."""
        if self.ctx.links.get(link.name) is link:
            return False
        log.info("a connect to %s (%s) ended after its link was dropped; not recorded",
                 link.name, link.uri)
        return True

    def _record(self, link: HostLink, up: bool, info: dict | None = None,
                attempt: str | None = None) -> None:
        """attempt: a connect finished ('' when it connected, else why not; None:
        the heartbeat, which is no attempt)."""
        fields: dict = {
            "up": int(up),
            "last_seen": self.ctx.clock(),
            "down_since": None if up else link.down_since,
        }
        if info is not None:
            fields["info"] = info
        if attempt is not None:
            fields["last_attempt"] = self.ctx.clock()
            fields["connect_error"] = attempt[:500] or None
        with self.ctx.store.transaction():
            if self.ctx.store.host_exists(link.name):
                self.ctx.store.update_host(link.name, **fields)

    def _inventory(self, link: HostLink) -> dict | None:
        try:
            info = link.driver.inventory()
            info.update(link.driver.cpu_inventory())  # hugepages (issue 14, part F)
            info["disk_bytes"], info["disk_free_bytes"] = self._storage_bytes(link)
            return info
        except DriverError:
            return None

    def _storage_bytes(self, link: HostLink) -> tuple[int, int]:
        """Size and free space of the storage where the host's VM disks go: the
        appliance's own folder, or (storage of its own) the file system under
        its image pool."""
        if self.files.own_storage(link.name) and link.connected:
            return link.driver.images_space()
        stat = os.statvfs(self.ctx.config.vms_dir)
        return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize

    def heartbeat(self) -> list[HostLink]:
        """Record every host's liveness and inventory; return the links that are
        down. Safe off the loop (the controller beats in a thread of its own, so
        that a long loop pass cannot make a live host look dead)."""
        down = []
        for link in self.ctx.links.all():
            if link.connecting:  # its connector records it; a connect that hangs counts as down
                if link.down_since is None and not link.was_up:
                    link.down_since = self.ctx.clock()
                down.append(link)
                continue
            up = link.connected
            info = None
            if up:
                info = self._inventory(link)
                up = info is not None
            if not up and link.down_since is None:
                link.down_since = self.ctx.clock()
            self._record(link, up, info)
            if not up:
                down.append(link)
        return down

    def follow_up(self, down: list[HostLink]) -> None:
        """In the loop, after a heartbeat: evacuate hosts down for too long,
        mirror the consoles of those that answer."""
        for link in self.ctx.links.all():
            if link in down:
                self.evacuation.maybe_evacuate(link)
            else:
                self.on_up(link)

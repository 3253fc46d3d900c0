"""The controller: the only libvirt writer. It converges libvirt to the store.

It runs operations recorded by the service (create, start, stop, ...), each
written to be safe to run again: after a crash, an operation found `running`
in the store is simply executed once more. Observed state comes from libvirt
lifecycle events; a periodic resync corrects anything an event missed (a
libvirtd restart, a crash of this process) and enforces run strategies.
"""
from __future__ import annotations

import json
import logging
import os
import queue
import shutil
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable

import libvirt

from appliance import hosturi, placement
from appliance.config import Config
from appliance.errors import Failed, NotFound
from appliance.notify import Listener, Notifier
from appliance.probes import Prober
from appliance.store import Store
from appliance.virt import cloudinit, dhcp, domain, guestaddrs, images, portforward, reasons, storage
from appliance.virt.host import LibvirtHost, describe_state, start_event_loop

log = logging.getLogger(__name__)

HOST_NAME = "local"  # the appliance's own libvirt (config.libvirt_uri), the first host by default
RESYNC_SECONDS = 5.0
HEARTBEAT_SECONDS = 2.0
MAX_BACKOFF = 300.0
RETRY_EVACUATION_SECONDS = 30.0
MIB = 1024 * 1024


class HostLink:
    """One libvirt host as the controller sees it: the connection and what the
    controller remembers about it between loops."""

    def __init__(self, name: str, uri: str, on_event: Callable[[str, str, int, int], None],
                 open_connection: Callable[[str], libvirt.virConnect]):
        self.name = name
        self.lv = LibvirtHost(name, uri, lambda vm_id, event, detail: on_event(name, vm_id, event, detail),
                              open_connection)
        self.was_up = False  # connected at the last look (for the host-down event)
        self.reported_down = False  # this outage has had its event
        self.next_attempt = 0.0
        self.down_since: float | None = None
        self.next_evacuation = 0.0
        self.connecting = False  # a connect is under way in the connector pool
        self.identities: dict[str, dict | None] = {}  # domain uuid -> its appliance <metadata>

    @property
    def uri(self) -> str:
        return self.lv.uri

    @property
    def connected(self) -> bool:
        return self.lv.connected

    @property
    def conn(self) -> libvirt.virConnect | None:
        return self.lv.conn

    def lookup(self, vm_id: str) -> libvirt.virDomain | None:
        return self.lv.lookup(vm_id)


class Controller:
    def __init__(
        self,
        store: Store,
        config: Config,
        instance_id: str,
        domain_type: str,
        open_connection: Callable[[str], libvirt.virConnect] = libvirt.open,
        clock: Callable[[], float] = time.time,
        workers: int = 8,
    ):
        self.store = store
        self.config = config
        self.instance_id = instance_id
        self.domain_type = domain_type
        self.clock = clock
        self.open_connection = open_connection
        self.links: dict[str, HostLink] = {}
        self._links_lock = threading.Lock()
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._connector = ThreadPoolExecutor(max_workers=4, thread_name_prefix="connect")
        self._reconnected = threading.Event()  # a link came (back) up: resync now
        self._busy: set[str] = set()  # VM ids with an operation in a worker
        self._busy_lock = threading.Lock()
        self._migrating: set[str] = set()  # VM ids in a live migration
        self._observe_lock = threading.Lock()
        self._stop = threading.Event()
        self._listener = Listener(config.notify_socket)
        self._nudge = Notifier(config.notify_socket)
        self._thread: threading.Thread | None = None
        self._backoff: dict[str, tuple[int, float]] = {}  # vm id -> (failures, not before)
        self._direct_io = images.supports_direct_io(config.vms_dir)
        self.reconcile_seconds = 0.0  # duration of the last resync, for metrics
        self._register_local_host()
        self._sync_links()
        self.prober = Prober(store, config, self._lookup_row, self._liveness_failed, clock)

    # -- hosts --------------------------------------------------------------------------
    def _register_local_host(self) -> None:
        """The appliance's own libvirt is the first host, once: an operator who
        removes it later does not see it come back."""
        with self.store.transaction():
            if self.store.get_meta("local-host-registered"):
                return
            if not self.store.host_exists(HOST_NAME) and not any(
                    h["uri"] == self.config.libvirt_uri for h in self.store.list_hosts()):
                self.store.upsert_host({
                    "name": HOST_NAME, "uri": self.config.libvirt_uri, "state": "enabled", "up": 0,
                    "last_seen": None, "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                    "reserved_memory_mib": 0, "labels": {}, "storage": "shared", "created": self.clock()})
            self.store.set_meta("local-host-registered", "1")

    def _sync_links(self) -> None:
        """Follow the hosts table: connect to added hosts, drop removed ones."""
        wanted = {h["name"]: h["uri"] for h in self.store.list_hosts()}
        with self._links_lock:
            for name in list(self.links):
                if name not in wanted or wanted[name] != self.links[name].uri:
                    self.links.pop(name).lv.disconnect()
            for name, uri in wanted.items():
                if name not in self.links:
                    self.links[name] = HostLink(name, uri, self._on_libvirt_event, self.open_connection)

    def link(self, name: str | None) -> HostLink | None:
        with self._links_lock:
            return self.links.get(name) if name else None

    @property
    def host(self) -> LibvirtHost:
        """The local host's connection (the only one before clusters)."""
        link = self.link(HOST_NAME) or next(iter(self.links.values()))
        return link.lv

    def _connected(self, name: str | None) -> HostLink:
        link = self.link(name)
        if link is None:
            raise Failed(f"host {name!r} is not known")
        if not link.connected:
            raise Failed(f"host {name} is unreachable")
        return link

    def _lookup_row(self, row: dict) -> libvirt.virDomain | None:
        link = self.link(row["host"])
        if link is None or not link.connected:
            return None
        return link.lookup(row["id"])

    # -- life of the controller ------------------------------------------------
    def start(self) -> None:
        start_event_loop()
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._nudge()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._connector.shutdown(wait=False, cancel_futures=True)
        self.prober.stop()
        with self._links_lock:
            for link in self.links.values():
                link.lv.disconnect()
        self._listener.close()

    def _run(self) -> None:
        next_resync = next_heartbeat = 0.0
        while not self._stop.is_set():
            try:
                now = self.clock()
                if now >= next_heartbeat:
                    self._sync_links()
                for link in list(self.links.values()):
                    if not link.connecting and not link.connected and now >= link.next_attempt:
                        link.next_attempt = now + 1.0  # about once a second
                        link.connecting = True
                        self._connector.submit(self._connect_in_background, link)
                if self._reconnected.is_set():
                    self._reconnected.clear()
                    next_resync = 0.0
                self._drain_events()
                if now >= next_heartbeat:
                    self._heartbeat()
                    next_heartbeat = now + HEARTBEAT_SECONDS
                if now >= next_resync:
                    self.resync()
                    next_resync = now + RESYNC_SECONDS
                self._dispatch()
                self.prober.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("controller loop")
                time.sleep(0.5)
            self._listener.wait(0.5)

    def _connect_in_background(self, link: HostLink) -> None:
        """Connections are opened off the loop: a host that hangs on connect
        (an ssh tunnel to a machine that went dark) stalls only its own link."""
        try:
            if self._reconnect(link):
                self._reconnected.set()
                self._nudge()
        except Exception:  # noqa: BLE001 - a connector thread must not die silently
            log.exception("connecting to %s", link.name)
        finally:
            link.connecting = False

    def _reconnect(self, link: HostLink) -> bool:
        """Connect (again); False while libvirt is unreachable. An outage is one
        host-down event and one warning, however many attempts it takes."""
        if link.was_up:
            link.was_up = False
            link.down_since = link.down_since or self.clock()
            log.warning("lost the connection to %s (%s); reconnecting", link.name, link.uri)
            self.store.add_event("host-down", f"lost the connection to host {link.name} (libvirt at {link.uri})")
            link.reported_down = True
        refused = hosturi.refused(link.uri, self.config)
        try:
            if refused:
                raise ConnectionRefusedError(refused)
            link.lv.connect()
        except (libvirt.libvirtError, ConnectionRefusedError) as err:
            if link.down_since is None:
                link.down_since = self.clock()
            self._record_host(link, up=False)
            if not link.reported_down:
                link.reported_down = True
                reason = refused or reasons.connect_reason(err)
                log.warning("host %s (libvirt at %s) unreachable (%s); retrying every second", link.name,
                            link.uri, err.get_error_message() if isinstance(err, libvirt.libvirtError) else err)
                self.store.add_event("host-down", f"host {link.name} (libvirt at {link.uri}) unreachable: {reason}")
            return False
        link.was_up, link.reported_down, link.down_since = True, False, None
        log.info("connected to %s (%s)", link.name, link.uri)
        self.store.add_event("host-up", f"host {link.name} (libvirt at {link.uri}) reachable")
        self._record_host(link, up=True, info=self._inventory(link))  # up with what it has: placeable at once
        return True

    def _record_host(self, link: HostLink, up: bool, info: dict | None = None) -> None:
        fields: dict = {"up": int(up), "last_seen": self.clock(), "down_since": None if up else link.down_since}
        if info is not None:
            fields["info"] = info
        with self.store.transaction():
            if self.store.host_exists(link.name):
                self.store.update_host(link.name, **fields)

    def _inventory(self, link: HostLink) -> dict | None:
        try:
            info = link.lv.inventory()
            info["disk_bytes"], info["disk_free_bytes"] = self._storage_bytes(link)
            return info
        except libvirt.libvirtError:
            return None

    def _heartbeat(self) -> None:
        for link in list(self.links.values()):
            if link.connecting:  # its connector records it; a connect that hangs counts as down
                if link.down_since is None and not link.was_up:
                    link.down_since = self.clock()
                self._maybe_evacuate(link)
                continue
            up = link.connected
            info = None
            if up:
                info = self._inventory(link)
                up = info is not None
            if not up and link.down_since is None:
                link.down_since = self.clock()
            self._record_host(link, up, info)
            if not up:
                self._maybe_evacuate(link)
            else:
                self._mirror_consoles(link)

    def _storage_bytes(self, link: HostLink) -> tuple[int, int]:
        """Size and free space of the storage where the host's VM disks go: the
        appliance's own folder, or (storage of its own) the file system under
        its image pool."""
        if self._own_storage(link.name) and link.conn is not None:
            pool = self._images_pool(link.conn)
            pool.refresh(0)
            _state, capacity, _allocation, available = pool.info()
            return capacity, available
        stat = os.statvfs(self.config.vms_dir)
        return stat.f_blocks * stat.f_frsize, stat.f_bavail * stat.f_frsize

    # -- evacuation: a host dead for longer than the grace period ---------------------------
    def _maybe_evacuate(self, link: HostLink) -> None:
        now = self.clock()
        if link.down_since is None or now - link.down_since < self.config.evacuate_after:
            return
        if now < link.next_evacuation:
            return
        link.next_evacuation = now + RETRY_EVACUATION_SECONDS
        self.evacuate(link.name)

    def evacuate(self, name: str) -> None:
        """Restart the dead host's VMs (run strategy Always, disks on storage
        another host sees) where the scheduler puts them; mark the rest lost.
        The dead host's copies are removed when it returns (never twice)."""
        host = self.store.get_host(name)
        down_for = self.clock() - (self.link(name).down_since or self.clock()) if self.link(name) else 0
        for row in self.store.list_vms("host = ? AND desired_state != 'deleted'", [name], with_xml=False):
            if self._is_busy(row["id"]) or self._has_open_ops(row["id"]):
                continue
            strategy = row["spec"]["run_strategy"]
            with self.store.transaction():
                fresh = self.store.get_vm_by_id(row["id"])
                if fresh is None or fresh["host"] != name:
                    continue
                if strategy == "Always" and fresh["desired_state"] in ("running", "paused"):
                    decision = placement.place(self.store, self.config, fresh["spec"], fresh["id"], self.clock(),
                                               ignore_hosts=frozenset([name]),
                                               storage=host["storage"] or f"host:{name}")
                    if decision.host is not None:
                        self.store.update_vm(fresh["id"], bump=False, host=decision.host, observed_state="stopped",
                                             observed_reason="evacuated", state_changed=self.clock())
                        op = self.store.add_operation(str(uuid.uuid4()), fresh, "start",
                                                      {"by": "controller", "evacuated_from": name})
                        self.store.add_event("evacuated", f"host {name} down for {down_for:.0f} s: restarting "
                                             f"here, {decision.explain()}", fresh, op["id"])
                        continue
                    why = decision.explain()
                else:
                    why = f"run strategy {strategy}, desired {fresh['desired_state']}: not restarted elsewhere"
                if fresh["observed_state"] != "lost":
                    self.store.update_vm(fresh["id"], bump=False, observed_state="lost",
                                         observed_reason=f"host {name} down", state_changed=self.clock())
                    self.store.add_event("lost", f"host {name} down for {down_for:.0f} s; {why}", fresh)

    # -- libvirt events -------------------------------------------------------------
    def _on_libvirt_event(self, host: str, vm_id: str, event: int, detail: int) -> None:
        self.events.put((host, vm_id, event, detail))
        self._nudge()

    def _drain_events(self) -> None:
        seen = set()
        while True:
            try:
                host, vm_id, _event, _detail = self.events.get_nowait()
            except queue.Empty:
                break
            seen.add((host, vm_id))
        for host, vm_id in seen:
            row = self.store.get_vm_by_id(vm_id)
            if row is None or row["host"] != host or vm_id in self._migrating:
                continue  # a migration's ends (its operation records the outcome), or a stale copy
            link = self.link(host)
            if link is None or not link.connected:
                continue
            dom = link.lookup(vm_id)
            self._observe(row, dom)
            if not self._is_busy(vm_id):
                self._enforce(self.store.get_vm_by_id(vm_id))

    # -- observed state ---------------------------------------------------------------
    def _observe(self, row: dict, dom: libvirt.virDomain | None, record_xml: bool = False) -> str:
        """Record what libvirt shows for one VM; return the observed state.

        Called from the loop and from workers: serialised, and compared with a
        fresh row so that one change is recorded (and announced) once."""
        with self._observe_lock:
            fresh = self.store.get_vm_by_id(row["id"])
            if fresh is None:
                return "deleted"
            return self._observe_locked(fresh, dom, record_xml)

    def _observe_locked(self, row: dict, dom: libvirt.virDomain | None, record_xml: bool) -> str:
        if dom is None:
            state, reason = ("provisioning", "") if row["observed_state"] == "provisioning" else ("stopped", "undefined")
        else:
            state, reason = describe_state(*dom.state())
        fields: dict = {}
        if state != row["observed_state"] or reason != (row["observed_reason"] or ""):
            fields.update(observed_state=state, observed_reason=reason, state_changed=self.clock())
        if dom is not None and (record_xml or fields):
            try:
                fields["domain_xml"] = dom.XMLDesc()
            except libvirt.libvirtError:
                pass
        if fields:
            self.store.update_vm(row["id"], bump=False, **fields)
            if "observed_state" in fields:
                message = state + (f" ({reason})" if reason else "")
                self.store.add_event("state-changed", f"now {message}", row)
        return state

    def resync(self) -> None:
        """Compare every VM with libvirt on every reachable host: adopt, report
        strangers, remove stale copies (never twice), enforce run strategies."""
        started = time.perf_counter()
        found: dict[str, dict[str, libvirt.virDomain]] = {}  # host -> our domains there by uuid
        for link in list(self.links.values()):
            if not link.connected:
                continue
            try:
                found[link.name] = self._our_domains(link)
            except libvirt.libvirtError as err:
                log.info("listing domains on %s failed: %s", link.name, err.get_error_message())
        rows = {row["id"]: row for row in self.store.list_vms()}
        for host, domains in found.items():
            for vm_id, dom in domains.items():
                row = rows.get(vm_id)
                if row is None:
                    self._report_orphan(vm_id, dom)
                elif row["host"] != host and not self._is_busy(vm_id) and not self._has_open_ops(vm_id):
                    self._other_copy(host, row, dom, found.get(row["host"]))
        for vm_id, row in rows.items():
            if row["host"] not in found or self._is_busy(vm_id):
                continue  # its host is unreachable: nothing to observe there (evacuation decides)
            dom = found[row["host"]].get(vm_id)
            self._observe(row, dom, record_xml=row["domain_xml"] is None)
            row = self.store.get_vm_by_id(vm_id)
            if row is not None and not self._has_open_ops(vm_id):
                self._enforce(row)
                self._refresh_addresses(row, dom)
        self.reconcile_seconds = time.perf_counter() - started

    def _our_domains(self, link: HostLink) -> dict[str, libvirt.virDomain]:
        conn = link.conn
        assert conn is not None  # noqa: S101 - narrows the type; _connected() checked it
        ours = {}
        domains = conn.listAllDomains()
        for dom in domains:
            uuid_ = dom.UUIDString()
            if uuid_ not in link.identities:  # a domain's <metadata> is set once, at define
                try:
                    link.identities[uuid_] = domain.read_identity(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
                except libvirt.libvirtError:
                    continue
            identity = link.identities[uuid_]
            if identity and identity.get("appliance") == self.instance_id:
                ours[uuid_] = dom
        if len(link.identities) > 2 * len(domains) + 100:
            present = {d.UUIDString() for d in domains}
            link.identities = {k: v for k, v in link.identities.items() if k in present}
        return ours

    def _other_copy(self, host: str, row: dict, dom: libvirt.virDomain,
                    own: dict[str, libvirt.virDomain] | None) -> None:
        """A VM's domain on a host other than its own. While its own host cannot
        be asked, nothing is touched (which copy runs is unknown). If the copy
        runs and the VM does not run on its own host, the copy is the guest
        (a migration libvirt finished while the controller was away, or a
        cut-off host's guest that outlived its evacuation's failed start): the
        record follows it. Otherwise the copy is stale and goes."""
        if own is None:
            return
        mine = own.get(row["id"])
        try:
            elsewhere_active = bool(dom.isActive())
            mine_active = mine is not None and bool(mine.isActive())
        except libvirt.libvirtError:
            return
        if elsewhere_active and not mine_active:
            with self.store.transaction():
                self.store.update_vm(row["id"], bump=False, host=host)
                self.store.add_event("adopted", f"found running on {host} while its record said {row['host']}; "
                                     f"the record now follows the guest", row)
            self._backoff.pop(row["id"], None)
            return
        self._remove_stale_copy(host, row, dom)

    def _remove_stale_copy(self, host: str, row: dict, dom: libvirt.virDomain) -> None:
        """A VM's domain on a host other than its own: left by an evacuation (the
        host was dead and came back) or by an offline move whose source was
        unreachable. The VM's host is the truth; the copy goes, disks stay."""
        try:
            was_active = bool(dom.isActive())
            if was_active:
                dom.destroy()
            dom.undefine()
        except libvirt.libvirtError as err:
            log.warning("removing the stale copy of %s on %s failed: %s", row["name"], host, err.get_error_message())
            return
        self.link(host).identities.pop(row["id"], None)
        self._backoff.pop(row["id"], None)  # a start held back by that copy may go now
        self.store.add_event("stale-copy-removed", f"host {host} still had this VM's domain"
                             + (" running" if was_active else "") + f" although it belongs on {row['host']}; "
                             "it was " + ("destroyed and " if was_active else "") + "undefined (disks kept)", row)

    def _report_orphan(self, vm_id: str, dom: libvirt.virDomain) -> None:
        key = f"orphan-reported:{vm_id}"
        if self.store.get_meta(key):
            return
        self.store.set_meta(key, "1")
        self.store.add_event("orphan-domain", f"domain {dom.name()} ({vm_id}) carries this appliance's id "
                             "but matches no VM in the store; it was left untouched")

    def adopt_on_start(self) -> None:
        """Remove disk folders of VMs the store no longer has (their delete was cut short)."""
        ids = {row["id"] for row in self.store.list_vms()}
        if not self.config.vms_dir.exists():
            return
        for path in self.config.vms_dir.iterdir():
            if path.is_dir() and path.name not in ids:
                shutil.rmtree(path, ignore_errors=True)
                self.store.add_event("orphan-disk-removed", f"removed {path}, which belonged to no VM")

    def _refresh_addresses(self, row: dict, dom: libvirt.virDomain | None) -> None:
        addresses = []
        network = row["spec"]["network"]
        if dom is not None and row["observed_state"] in ("running", "paused"):
            sources = [libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT]
            if network["type"] == "network":
                sources.insert(0, libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE)
            for source in sources:
                try:
                    found = dom.interfaceAddresses(source)
                except libvirt.libvirtError:
                    continue
                # the agent's answer is the guest's own text: checked and bounded (virt/guestaddrs.py)
                addresses = guestaddrs.checked(found, "agent" if source else "dhcp")
                if addresses:
                    break
            if not addresses and network["type"] == "user":
                # QEMU's user-mode DHCP server has exactly one lease to give.
                addresses.append({"interface": "net0", "mac": row["mac"], "address": "10.0.2.15",
                                  "prefix": 24, "source": "user-mode"})
        encoded = json.dumps(addresses)
        if encoded != (row.get("addresses") or "[]"):
            self.store.update_vm(row["id"], bump=False, addresses=encoded)

    # -- run strategies ---------------------------------------------------------------------
    def _enforce(self, row: dict) -> None:
        """Converge a VM with no operation in flight to its desired state, by its run strategy."""
        if row is None or row["desired_state"] == "deleted" or row["observed_state"] == "provisioning":
            return
        if self._has_open_ops(row["id"]):
            return
        observed, desired = row["observed_state"], row["desired_state"]
        strategy = row["spec"]["run_strategy"]
        reason = row["observed_reason"] or ""
        if observed in ("stopped", "crashed") and desired in ("running", "paused"):
            if strategy == "Manual" or (strategy == "RerunOnFailure" and reason == "shutdown"):
                self.store.update_vm(row["id"], desired_state="stopped")
                self.store.add_event("stopped", f"the guest stopped ({reason or observed}); "
                                     f"run strategy {strategy} leaves it stopped", row)
                return
            failures, not_before = self._backoff.get(row["id"], (0, 0.0))
            if self.clock() < not_before:
                return
            self._backoff[row["id"]] = (failures + 1, self.clock() + min(MAX_BACKOFF, 5.0 * 2 ** failures))
            self._queue_op(row, "start", f"restarting: the guest is {observed}"
                           + (f" ({reason})" if reason else "") + f", run strategy {strategy}")
        elif observed in ("running", "paused") and desired == "stopped":
            self._queue_op(row, "stop", f"stopping: it runs but should be stopped ({strategy})")
        elif observed == "running" and desired == "paused":
            self._queue_op(row, "pause", "pausing: desired state is paused")
        elif observed == "paused" and desired == "running" and reason != "migration":
            self._queue_op(row, "resume", f"resuming: paused ({reason}) but should run")
        elif observed == desired == "running":
            self._backoff.pop(row["id"], None)

    def _liveness_failed(self, row: dict, reason: str) -> None:
        """Called by the prober: pull the plug; the run strategy decides the rest."""
        strategy = row["spec"]["run_strategy"]
        self.store.add_event("liveness-failed", f"{reason}; forcing it off (run strategy {strategy})", row)
        self._queue_op(row, "force-stop", "forcing off after the liveness probe failed")
        self._nudge()

    def _queue_op(self, row: dict, kind: str, why: str) -> None:
        with self.store.transaction():
            op = self.store.add_operation(str(uuid.uuid4()), row, kind, {"by": "controller"})
            self.store.add_event("converging", why, row, op["id"])

    # -- operations ---------------------------------------------------------------------
    def _is_busy(self, vm_id: str) -> bool:
        with self._busy_lock:
            return vm_id in self._busy

    def _has_open_ops(self, vm_id: str) -> bool:
        row = self.store.db.execute(
            "SELECT 1 FROM operations WHERE vm_id = ? AND status IN ('pending', 'running') LIMIT 1", [vm_id]
        ).fetchone()
        return row is not None

    def _ready_to_run(self, op: dict) -> bool:
        """An operation waits while the host it needs is unreachable (it runs
        when the host returns, or the VM is evacuated)."""
        row = self.store.get_vm_by_id(op["vm_id"])
        if row is None:
            return True  # _execute records the failure
        needed = op["params"].get("target") if op["kind"] == "move" else row["host"]
        link = self.link(needed)
        return link is None or link.connected  # an unknown host fails in the handler, with the reason

    def _dispatch(self) -> None:
        claimed = set()
        for op in self.store.next_operations():
            vm_id = op["vm_id"]
            if vm_id in claimed:
                continue
            claimed.add(vm_id)
            if not self._ready_to_run(op):
                continue
            with self._busy_lock:
                if vm_id in self._busy:
                    continue
                self._busy.add(vm_id)
            self.pool.submit(self._execute, op)

    def _execute(self, op: dict) -> None:
        vm_id = op["vm_id"]
        if not self.store.claim_operation(op["id"], self.clock()):
            with self._busy_lock:  # finished or cancelled since the loop listed it
                self._busy.discard(vm_id)
            return
        try:
            row = self.store.get_vm_by_id(vm_id)
            if row is None:
                raise Failed("the VM no longer exists")
            handler = getattr(self, "_op_" + op["kind"].replace("-", "_"))
            handler(op, row)
            # Observed state first: whoever waits on the operation reads the VM next.
            self._observe_after(vm_id)
            self.store.update_operation(op["id"], status="succeeded", progress=100, finished=self.clock())
            if self.store.get_vm_by_id(vm_id) is not None:
                self.store.update_vm(vm_id, bump=False, last_error=None)
        except Exception as err:  # noqa: BLE001 - every failure is recorded, none is lost
            reason = reasons.operation_reason(err)
            log.warning("operation %s %s on %s failed: %s", op["id"], op["kind"], op["vm_name"],
                        err.get_error_message() if isinstance(err, libvirt.libvirtError) else err)
            self._observe_after(vm_id)
            status = "cancelled" if self._op_cancelled(op) else "failed"
            self.store.update_operation(op["id"], status=status, error=reason, finished=self.clock())
            row = self.store.get_vm_by_id(vm_id)
            if row is not None:
                self.store.update_vm(vm_id, bump=False, last_error=f"{op['kind']}: {reason}")
                self.store.add_event("operation-failed", f"{op['kind']} failed: {reason}", row, op["id"])
        finally:
            with self._busy_lock:
                self._busy.discard(vm_id)
            self._nudge()

    def _observe_after(self, vm_id: str) -> None:
        row = self.store.get_vm_by_id(vm_id)
        link = self.link(row["host"]) if row is not None else None
        if link is None or not link.connected:
            return
        try:
            dom = link.lookup(vm_id)
            self._observe(row, dom, record_xml=True)
            fresh = self.store.get_vm_by_id(vm_id)
            if fresh is not None:
                self._refresh_addresses(fresh, dom)
        except libvirt.libvirtError:
            pass

    def _op_cancelled(self, op: dict) -> bool:
        current = self.store.get_operation(op["id"])
        return current["status"] == "cancelled" or bool(current["params"].get("cancel"))

    # -- the domain definition ----------------------------------------------------------
    def plan(self, row: dict) -> domain.DomainPlan:
        vm_dir = self.config.vm_dir(row["id"])
        seed = vm_dir / "cidata.iso"
        return domain.DomainPlan(
            vm_id=row["id"], domain_name=self.config.domain_prefix + row["name"], vm_name=row["name"],
            instance_id=self.instance_id, spec=row["spec"], domain_type=self.domain_type, vm_dir=vm_dir,
            mac=row["mac"], seed_iso=seed, direct_io=self._direct_io,
        )

    def _ensure_defined(self, row: dict, host: str | None = None) -> libvirt.virDomain:
        """Disks, seed and definition (on the VM's host, or `host`) as the spec says; safe to repeat."""
        link = self._connected(host or row["host"])
        plan = self.plan(row)
        plan.vm_dir.mkdir(parents=True, exist_ok=True)
        cloudinit.write_seed_iso(plan.seed_iso, cloudinit.seed_files(row["id"], row["name"], row["spec"]["cloud_init"]))
        if self._own_storage(link.name):
            self._ensure_files_on_host(link, row, plan)
        else:
            self._ensure_files_here(row, plan)
        conn = link.conn
        assert conn is not None  # noqa: S101 - narrows the type; _connected() checked it
        self._reserve_address(row, link)
        dom = link.lookup(row["id"])
        if dom is not None and dom.name() != plan.domain_name:
            if dom.isActive():
                raise Failed("cannot rename a running domain")
            dom.rename(plan.domain_name, 0)
        return conn.defineXML(domain.build(plan))

    # -- VM files: here (hosts that see the appliance's folders) or on the host ----------------
    def _storage_of(self, host: str | None) -> str:
        try:
            return self.store.get_host(host)["storage"] or placement.APPLIANCE_STORAGE
        except NotFound:  # an unknown host has no storage of its own
            return placement.APPLIANCE_STORAGE

    def _own_storage(self, host: str | None) -> bool:
        """The host does not see the appliance's folders: its VM files are made through libvirt."""
        return self._storage_of(host) != placement.APPLIANCE_STORAGE

    def _images_pool(self, conn: libvirt.virConnect) -> libvirt.virStoragePool:
        """A host's pool of base images (storage of its own), at the appliance's images path."""
        return storage.ensure_pool(conn, storage.images_pool_name(self.config.images_dir), self.config.images_dir)

    def _upload_image(self, conn: libvirt.virConnect, row: dict) -> tuple[libvirt.virStorageVol, dict]:
        """The VM's base image on the host (uploaded once per host)."""
        image = self.store.get_image(row["spec"]["image"])
        return storage.upload(conn, self._images_pool(conn), Path(image["path"]).name, Path(image["path"])), image

    def _ensure_files_here(self, row: dict, plan: domain.DomainPlan) -> None:
        if not plan.root_disk.exists():
            image = self.store.get_image(row["spec"]["image"])
            tmp = plan.root_disk.with_suffix(".tmp")
            images.create_overlay(image["path"], image["format"], tmp)
            tmp.replace(plan.root_disk)  # a disk is there whole or not at all
        for disk in row["spec"]["disks"]:
            path = plan.disk_path(disk["name"])
            if not path.exists():
                tmp = path.with_suffix(".tmp")
                images.create_blank(tmp, disk["size"])
                tmp.replace(path)

    def _ensure_files_on_host(self, link: HostLink, row: dict, plan: domain.DomainPlan) -> None:
        """The same files at the same paths on the host's own disks: the image
        uploaded once per host, the overlay on it, the disks, the seed."""
        conn = link.conn
        assert conn is not None  # noqa: S101 - narrows the type; _connected() checked it
        pool = storage.ensure_pool(conn, storage.vm_pool_name(row["id"]), plan.vm_dir)
        if storage.lookup(pool, plan.root_disk.name) is None:
            base, image = self._upload_image(conn, row)
            storage.create_volume(pool, plan.root_disk.name, image["virtual_size"], "qcow2",
                                  backing=(base.path(), image["format"]))
        for disk in row["spec"]["disks"]:
            storage.create_volume(pool, plan.disk_path(disk["name"]).name, disk["size"] * MIB)
        storage.upload(conn, pool, plan.seed_iso.name, plan.seed_iso, replace=True)

    def _writable_disks(self, row: dict, plan: domain.DomainPlan) -> list[tuple[Path, int]]:
        """(path, size in bytes) of each disk a live migration copies."""
        image = self.store.get_image(row["spec"]["image"])
        return [(plan.root_disk, image["virtual_size"])] + [
            (plan.disk_path(d["name"]), d["size"] * MIB) for d in row["spec"]["disks"]]

    def _prepare_copy(self, row: dict, dest: HostLink) -> None:
        """Empty disks of the same sizes on the target, which the migration fills
        (libvirt's NON_SHARED_DISK: the whole chain is copied into them), and the
        seed, which it does not copy (read-only)."""
        plan = self.plan(row)
        plan.vm_dir.mkdir(parents=True, exist_ok=True)
        cloudinit.write_seed_iso(plan.seed_iso, cloudinit.seed_files(row["id"], row["name"], row["spec"]["cloud_init"]))
        self.store.db.execute("DELETE FROM meta WHERE key = ?", [self._mirror_key(row["id"], dest.name)])
        if self._own_storage(dest.name):
            conn = dest.conn
            assert conn is not None  # noqa: S101 - narrows the type; _connected() checked it
            pool = storage.ensure_pool(conn, storage.vm_pool_name(row["id"]), plan.vm_dir)
            for path, size in self._writable_disks(row, plan):
                old = storage.lookup(pool, path.name)
                if old is not None:
                    old.delete(0)
                storage.create_volume(pool, path.name, size)
            storage.upload(conn, pool, plan.seed_iso.name, plan.seed_iso, replace=True)
        else:
            for path, size in self._writable_disks(row, plan):
                path.unlink(missing_ok=True)
                images.create_blank_bytes(path, size)

    def _copy_disks(self, row: dict, source: HostLink, dest: HostLink) -> None:
        """An offline move between storages: each disk file, as it is (a root
        overlay keeps its backing file, which the target gets too), through a
        local temporary file when either end is a host's own storage."""
        plan = self.plan(row)
        plan.vm_dir.mkdir(parents=True, exist_ok=True)
        if self._own_storage(dest.name):
            self._upload_image(dest.conn, row)  # the overlay's backing file, at the same path
            dest_pool = storage.ensure_pool(dest.conn, storage.vm_pool_name(row["id"]), plan.vm_dir)
        for path, _size in self._writable_disks(row, plan):
            tmp = path.with_name(f".{path.name}.move")
            try:
                if self._own_storage(source.name):
                    pool = source.conn.storagePoolLookupByName(storage.vm_pool_name(row["id"]))
                    pool.refresh(0)
                    vol = storage.lookup(pool, path.name)
                    if vol is None:
                        raise Failed(f"{path.name} is missing on {source.name}")
                    storage.download_to(source.conn, vol, tmp)
                    local = tmp
                else:
                    local = path
                if self._own_storage(dest.name):
                    storage.upload(dest.conn, dest_pool, path.name, local, replace=True)
                elif local is tmp:
                    tmp.replace(path)
            finally:
                tmp.unlink(missing_ok=True)

    def _drop_copy(self, row: dict, source: HostLink) -> None:
        """After a copying migration: the disks left behind on the source."""
        plan = self.plan(row)
        if self._own_storage(source.name):
            if source.connected:
                storage.remove_pool(source.conn, storage.vm_pool_name(row["id"]))
        else:
            for path, _size in self._writable_disks(row, plan):
                path.unlink(missing_ok=True)

    @staticmethod
    def _mirror_key(vm_id: str, host: str) -> str:
        return f"console-mirror:{vm_id}:{host}"

    def _mirror_consoles(self, link: HostLink) -> None:
        """Copy what is new in the console logs on a host with storage of its own
        into the appliance's folders, where the console files and probes read."""
        if not self._own_storage(link.name) or link.conn is None:
            return
        for row in self.store.list_vms("host = ? AND observed_state IN ('running', 'paused', 'stopping')",
                                       [link.name], with_xml=False):
            try:
                pool = link.conn.storagePoolLookupByName(storage.vm_pool_name(row["id"]))
                pool.refresh(0)
                vol = storage.lookup(pool, "console.log")
                if vol is None:
                    continue
                size = vol.info()[1]
                key = self._mirror_key(row["id"], link.name)
                done = int(self.store.get_meta(key) or 0)
                if size < done:
                    done = 0  # a new log file
                if size > done:
                    data = storage.download_from(link.conn, vol, done, size - done)
                    with open(self.config.vm_dir(row["id"]) / "console.log", "ab") as out:
                        out.write(data)
                    self.store.set_meta(key, str(done + len(data)))
            except libvirt.libvirtError as err:
                log.info("console of %s on %s: %s", row["name"], link.name, err.get_error_message())

    # -- fixed IPs: a DHCP reservation in the libvirt network ------------------------------
    def _release_address(self, row: dict, link: HostLink | None) -> None:
        """Remove the reservation this VM made on the host (never another's for its MAC)."""
        if link is None or not link.connected:
            return
        dhcp.release(self.store, link.conn, link.name, row)

    def _reserve_address(self, row: dict, link: HostLink) -> None:
        """Fixed IPs, which KubeVirt lacks: the libvirt network's DHCP server
        gives this VM's MAC its address, whatever the guest OS."""
        dhcp.reserve(self.store, link.conn, link.name, row)

    # -- operation handlers (each idempotent) ------------------------------------------------
    def _op_create(self, op: dict, row: dict) -> None:
        dom = self._ensure_defined(row)
        self._observe(row, dom, record_xml=True)
        row = self.store.get_vm_by_id(row["id"])
        if row["desired_state"] in ("running", "paused"):
            self._start(row, dom)
            if row["desired_state"] == "paused":
                dom.suspend()

    def _op_update(self, op: dict, row: dict) -> None:
        dom = self._ensure_defined(row)
        if not dom.isActive():
            self.store.update_vm(row["id"], bump=False, restart_required=0)

    def _lookup(self, row: dict) -> libvirt.virDomain | None:
        """The VM's domain on its host (which must be reachable)."""
        return self._connected(row["host"]).lookup(row["id"])

    def _op_start(self, op: dict, row: dict) -> None:
        dom = self._lookup(row)
        state = describe_state(*dom.state())[0] if dom is not None else "stopped"
        if state == "paused":
            dom.resume()
            return
        if state in ("running", "stopping"):
            return
        dom = self._ensure_defined(row)
        self._start(row, dom)

    def _running_elsewhere(self, row: dict) -> str | None:
        """Another reachable host where this VM's domain is active, if any."""
        for link in list(self.links.values()):
            if link.name == row["host"] or not link.connected:
                continue
            try:
                other = link.lookup(row["id"])
                if other is not None and other.isActive():
                    return link.name
            except libvirt.libvirtError:
                continue
        return None

    def _start(self, row: dict, dom: libvirt.virDomain) -> None:
        if not dom.isActive():
            elsewhere = self._running_elsewhere(row)
            if elsewhere is not None:  # never twice: the stale copy must go first (resync removes it)
                raise Failed(f"a copy of this VM still runs on host {elsewhere}; not starting a second one")
            # Console probes look only at what this boot prints.
            console = self.config.vm_dir(row["id"]) / "console.log"
            offset = console.stat().st_size if console.exists() else 0
            self.store.update_vm(row["id"], bump=False, boot_console_offset=offset)
            link = self.link(row["host"])
            if link is not None and portforward.on_this_machine(link.uri):
                portforward.check_free(self._forwards(row))  # taken: fail before QEMU runs
            dom.create()
            self.store.update_vm(row["id"], bump=False, restart_required=0)
            try:
                self._apply_port_forwards(row, dom)
            except Failed:
                dom.destroy()  # nothing half-done: a guest is not left running without its forwards
                raise
        else:
            self._apply_port_forwards(row, dom)

    @staticmethod
    def _forwards(row: dict) -> list[dict]:
        network = row["spec"]["network"]
        return network.get("port_forwards", []) if network["type"] == "user" else []

    def _apply_port_forwards(self, row: dict, dom: libvirt.virDomain) -> None:
        portforward.apply(dom, self._forwards(row))

    def _op_resume(self, op: dict, row: dict) -> None:
        self._op_start(op, row)

    def _op_pause(self, op: dict, row: dict) -> None:
        dom = self._lookup(row)
        if dom is None or not dom.isActive():
            dom = self._ensure_defined(row)
            self._start(row, dom)
        if describe_state(*dom.state())[0] != "paused":
            dom.suspend()

    def _op_force_stop(self, op: dict, row: dict) -> None:
        dom = self._lookup(row)
        if dom is not None and dom.isActive():
            dom.destroy()

    def _op_stop(self, op: dict, row: dict) -> None:
        self._graceful_stop(op, row)

    def _graceful_stop(self, op: dict, row: dict) -> None:
        """ACPI shutdown; after the grace period (or when a force-stop is queued), pull the plug."""
        dom = self._lookup(row)
        if dom is None or not dom.isActive():
            return
        grace = row["spec"]["termination_grace_period"]
        deadline = self.clock() + grace
        try:
            dom.shutdown()
        except libvirt.libvirtError as err:
            log.info("shutdown of %s refused (%s); destroying", row["name"], err.get_error_message())
            deadline = 0
        while dom.isActive() and self.clock() < deadline:
            if self._force_stop_waiting(row["id"]):
                break
            time.sleep(0.1)
        if dom.isActive():
            dom.destroy()
            self.store.add_event("forced-off", f"the guest did not power off within {grace} s; forced off",
                                 row, op["id"])

    def _force_stop_waiting(self, vm_id: str) -> bool:
        return self.store.db.execute(
            "SELECT 1 FROM operations WHERE vm_id = ? AND kind = 'force-stop' AND status = 'pending'", [vm_id]
        ).fetchone() is not None

    def _op_reboot(self, op: dict, row: dict) -> None:
        """A restart as KubeVirt does it: graceful stop, then start with the current spec."""
        self._graceful_stop(op, row)
        dom = self._ensure_defined(self.store.get_vm_by_id(row["id"]))
        self._start(row, dom)

    def _op_converge(self, op: dict, row: dict) -> None:
        self._op_start(op, row)

    def _op_delete(self, op: dict, row: dict) -> None:
        link = self._connected(row["host"])
        dom = link.lookup(row["id"])
        if dom is not None:
            if dom.isActive():
                dom.destroy()
            flags = (libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
                     | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM)
            try:
                dom.undefineFlags(flags)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_INVALID_ARG:
                    raise
                dom.undefine()  # drivers without NVRAM support (the test driver)
        self._release_address(row, link)
        if self._own_storage(link.name):
            storage.remove_pool(link.conn, storage.vm_pool_name(row["id"]))
        vm_dir: Path = self.config.vm_dir(row["id"])
        shutil.rmtree(vm_dir, ignore_errors=True)
        with self.store.transaction():
            self.store.add_event("deleted", "VM deleted; its disks were removed", row, op["id"])
            self.store.delete_vm(row["id"])

    # -- moving between hosts ------------------------------------------------------------------
    def _migration_flags(self, dom: libvirt.virDomain) -> int:
        # UNSAFE: the service only migrates between hosts that declare the same
        # storage, i.e. see the disks at the same path. libvirt recognises only
        # network file systems (NFS, GFS2, Ceph...) as shared and refuses the
        # rest ("Migration without shared storage is unsafe"), such as hosts on
        # one machine or a SAN volume mounted on each. QEMU flushes the disks
        # before the switch-over; with O_DIRECT (cache='none', used whenever the
        # file system supports it) no page cache is left stale.
        flags = (libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_PERSIST_DEST
                 | libvirt.VIR_MIGRATE_UNDEFINE_SOURCE | libvirt.VIR_MIGRATE_ABORT_ON_ERROR
                 | libvirt.VIR_MIGRATE_UNSAFE)
        if describe_state(*dom.state())[0] == "paused":
            flags |= libvirt.VIR_MIGRATE_PAUSED
        return flags

    def _op_migrate(self, op: dict, row: dict) -> None:
        """Live migration, peer to peer: the source libvirtd talks to the target's
        itself; disks stay where they are (storage both hosts see). Progress goes
        into the operation; a cancelled operation aborts the job, and the guest
        keeps running on the source."""
        target = op["params"]["target"]
        dest = self._connected(target)
        source = self._connected(row["host"])
        where = self._settle_earlier_migration(row["id"], source, dest)
        if where == "target":
            self._moved(op, row, target, dest.lookup(row["id"]), "found running on the target: the migration "
                        "finished before the controller (restarted since) could record it")
            return
        dom = source.lookup(row["id"])
        if dom is None or not dom.isActive():
            raise Failed(f"the VM does not run on {row['host']}; nothing to migrate live")
        params: dict = {}
        address = self.store.get_host(target)["migration_address"]
        if address:
            params[libvirt.VIR_MIGRATE_PARAM_URI] = f"tcp://{address}"
        if op["params"].get("bandwidth"):
            params[libvirt.VIR_MIGRATE_PARAM_BANDWIDTH] = op["params"]["bandwidth"]
        flags = self._migration_flags(dom)
        copy = self._storage_of(row["host"]) != self._storage_of(target)
        if copy:  # the target does not see these disks: copy them during the migration
            self._prepare_copy(row, dest)
            flags |= libvirt.VIR_MIGRATE_NON_SHARED_DISK
        started = time.monotonic()
        result: dict = {}

        def migrate() -> None:
            try:
                result["dom"] = dom.migrateToURI3(dest.uri, params, flags)
            except libvirt.libvirtError as err:
                result["error"] = err

        worker = threading.Thread(target=migrate, name=f"migrate-{row['name']}", daemon=True)
        self._migrating.add(row["id"])
        try:
            aborted = self._follow_migration(op, dom, worker)
        finally:
            self._migrating.discard(row["id"])
        if "error" in result:
            self._wait_target_gone(dest, row["id"])
            if aborted:
                raise Failed(f"cancelled; the guest stays on {row['host']}")
            raise result["error"]
        elapsed = time.monotonic() - started
        self._moved(op, row, target, dest.lookup(row["id"]), f"live-migrated from {row['host']} to {target} "
                    f"in {elapsed:.1f} s" + (" (disks copied)" if copy else ""))
        if copy:
            self._drop_copy(row, source)

    def _settle_earlier_migration(self, vm_id: str, source: HostLink, dest: HostLink,
                                  timeout: float = 600.0) -> str:
        """Where the guest runs before (re)starting a migration: a controller
        killed in the middle of one finds the job still running in libvirt (the
        guest active on both ends, the target's copy paused for the incoming
        migration); wait until libvirt has finished or abandoned it. Returns
        "target" when the guest ended up there, else "source"."""
        deadline = time.monotonic() + timeout
        while True:
            on_source = self._active(source, vm_id)
            on_target = self._active(dest, vm_id)
            if on_source and self._job_running(source, vm_id):
                on_target = True  # the source is still in a job: wait for its outcome
            if on_target and not on_source:
                return "target"
            if not on_target:
                return "source"
            if time.monotonic() > deadline:
                raise Failed(f"an earlier migration to {dest.name} is still in progress after {timeout:.0f} s")
            time.sleep(0.2)

    @staticmethod
    def _job_running(link: HostLink, vm_id: str) -> bool:
        dom = link.lookup(vm_id)
        if dom is None:
            return False
        try:
            return dom.jobInfo()[0] not in (libvirt.VIR_DOMAIN_JOB_NONE, libvirt.VIR_DOMAIN_JOB_COMPLETED,
                                            libvirt.VIR_DOMAIN_JOB_FAILED, libvirt.VIR_DOMAIN_JOB_CANCELLED)
        except libvirt.libvirtError:
            return False

    @staticmethod
    def _active(link: HostLink, vm_id: str) -> bool:
        dom = link.lookup(vm_id)
        try:
            return dom is not None and bool(dom.isActive())
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return False  # undefined between the lookup and the question (a migration's end)
            raise

    def _wait_target_gone(self, dest: HostLink, vm_id: str, timeout: float = 30.0) -> None:
        """After a failed or aborted migration the target's libvirtd tears down
        the incoming (paused, never started) QEMU on its own; report the outcome
        only when it is gone, so that nobody sees the VM active in two places."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dom = dest.lookup(vm_id)
                if dom is None or not dom.isActive():
                    return
            except libvirt.libvirtError:
                return
            time.sleep(0.1)
        log.warning("the incoming copy of %s on %s outlived the failed migration by %.0f s", vm_id, dest.name, timeout)

    def _follow_migration(self, op: dict, dom: libvirt.virDomain, worker: threading.Thread) -> bool:
        """Run the migration thread to its end, recording progress; abort the job
        if the operation is cancelled. Returns whether it was aborted."""
        worker.start()
        aborted = False
        while worker.is_alive():
            worker.join(0.2)
            if not worker.is_alive():
                break
            if not aborted and self._op_cancelled(op):
                aborted = True
                try:
                    dom.abortJob()
                except libvirt.libvirtError as err:
                    log.info("abortJob on %s: %s", op["vm_name"], err.get_error_message())
                continue
            try:
                stats = dom.jobStats()
            except libvirt.libvirtError:
                continue
            total = stats.get("data_total") or 0
            if total:
                done = min(99, int(100 * (stats.get("data_processed") or 0) / total))
                self.store.update_operation(op["id"], progress=done)
        return aborted

    def _moved(self, op: dict, row: dict, target: str, dom: libvirt.virDomain | None, message: str) -> None:
        with self.store.transaction():
            self.store.update_vm(row["id"], bump=False, host=target)
            self.store.add_event("migrated", message, row, op["id"])
        if dom is not None and dom.isActive():
            self._apply_port_forwards(row, dom)  # the source's QEMU held the ports until it quit

    def _op_move(self, op: dict, row: dict) -> None:
        """Offline move of a stopped VM: define it on the target, then forget it on
        the source (or let resync remove that copy when the source is unreachable)."""
        target = op["params"]["target"]
        source = self.link(row["host"])
        if source is not None and source.connected:
            old = source.lookup(row["id"])
            if old is not None and old.isActive():
                raise Failed(f"the VM runs on {row['host']}; migrate it live instead")
        copy = self._storage_of(row["host"]) != self._storage_of(target)
        if copy:
            if source is None or not source.connected:
                raise Failed(f"its disks are on {row['host']}, which is unreachable")
            self._copy_disks(row, source, self._connected(target))
        self._ensure_defined(row, host=target)
        with self.store.transaction():
            self.store.update_vm(row["id"], bump=False, host=target)
            self.store.add_event("migrated", f"moved (stopped) from {row['host']} to {target}"
                                 + (" (disks copied)" if copy else ""), row, op["id"])
        if copy:
            self._drop_copy(row, source)
        if source is not None and source.connected:
            old = source.lookup(row["id"])
            if old is not None and not old.isActive():
                old.undefine()
                source.identities.pop(row["id"], None)
            self._release_address(row, source)

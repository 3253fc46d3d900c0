"""The controller: the only writer to the hosts. It converges them to the store.

It runs operations recorded by the service (create, start, stop, ...), each
written to be safe to run again: after a crash, an operation found `running`
in the store is simply executed once more. Observed state comes from libvirt
lifecycle events; a periodic resync corrects anything an event missed (a
libvirtd restart, a crash of this process) and enforces run strategies.

This module is the loop and the worker pools; the work is in the components
it wires together over a shared Context: hosts.py, evacuation.py, vms.py,
runstrategy.py, operations.py (with lifecycle.py and migration.py as the
handler families), consoles.py. Each host is reached through its driver
(appliance/virt/driver.py).
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor, ThreadPoolExecutor

from appliance.config import Config
from appliance.controller import firewall, networks
from appliance.controller.backup_schedule import BackupScheduler
from appliance.controller.backups import Backups
from appliance.controller.consoles import ConsoleMirror
from appliance.controller.context import Context, HostLink, Links
from appliance.controller.evacuation import Evacuation
from appliance.controller.files import VmFiles
from appliance.controller.hosts import HEARTBEAT_SECONDS, ConnectBusy, ConnectThreads, HostMonitor
from appliance.controller.lifecycle import Lifecycle
from appliance.controller.migration import Migrations
from appliance.controller.operations import OperationRunner
from appliance.controller.pools import PoolController
from appliance.controller.restore_in_place import InPlaceRestore
from appliance.controller.runstrategy import RunStrategies
from appliance.controller.shapes import LifecycleShapes
from appliance.controller.snapshots import SnapshotOperations
from appliance.controller.vms import VmObserver
from appliance.notify import Listener, Notifier
from appliance.probes import Prober
from appliance.service.images import end_interrupted_imports
from appliance.store import Store
from appliance.virt.domain import DomainPlan
from appliance.virt.driver import DriverFactory, Guest, HostDriver

log = logging.getLogger("appliance.controller")

RESYNC_SECONDS = 5.0
# A full resync reads every VM and every domain: its cost grows with the store
# (~15 us of this process's CPU per VM here). Its period grows with it, so that
# it takes at most RESYNC_CPU_BUDGET of a core (the idle CPU stays flat however
# many VMs there are: 5 s up to ~1,500 VMs, ~90 s at 40,000; issue 17) and at
# most RESYNC_DUTY of the loop's time (a slow listing: libvirtd, a remote host),
# but never longer than RESYNC_MAX_SECONDS (Nova's power-state sync: 10 min).
# Lifecycle events still act at once; between full passes, the VMs seen lately
# and those waiting for a restart are compared every RESYNC_SECONDS
# (VmObserver.resync_recent), and a host's reconnection (libvirtd restarted)
# asks for a full pass at once.
RESYNC_CPU_BUDGET = 0.005
RESYNC_DUTY = 0.02
# While a stale copy waits for its busy VM, the next full pass comes after RESYNC_SECONDS,
# or later if a pass takes more than this share of the time between them.
RESYNC_SOON_SHARE = 0.2
RESYNC_MAX_SECONDS = 300.0
# How often the event log is cut back to config.events_kept.
EVENTS_PRUNE_SECONDS = 300.0
# How often image imports whose mount process is gone are ended (service/images.py).
IMPORT_SWEEP_SECONDS = 10.0
# How often the per-host claim totals (store/claims.py) are checked against a full
# sum and repaired, besides at the start: O(VMs), ~0.1 s at 20,000 VMs.
CLAIMS_CHECK_SECONDS = 3600.0


def resync_period(seconds: float, cpu_seconds: float) -> float:
    """Seconds until the next full resync, after one that took `seconds` (of
    which `cpu_seconds` of this process's CPU)."""
    return min(RESYNC_MAX_SECONDS, max(RESYNC_SECONDS, seconds / RESYNC_DUTY,
                                       cpu_seconds / RESYNC_CPU_BUDGET))


def libvirt_drivers(config: Config) -> DriverFactory:
    # the real hypervisor, loaded only when used
    import libvirt

    from appliance.host_access import connection_uri
    from appliance.virt.libvirt_driver import LibvirtDriver

    # qemu+ssh and qemu+tls hosts are opened with the appliance's own keys
    return LibvirtDriver.factory(config.images_dir,
                                 lambda uri: libvirt.open(connection_uri(uri, config)))


class Controller:
    def __init__(
        self,
        store: Store,
        config: Config,
        instance_id: str,
        domain_type: str,
        drivers: DriverFactory | None = None,
        clock: Callable[[], float] = time.time,
        workers: int = 8,
        pool: Executor | None = None,
        connector: Executor | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
        heartbeat_seconds: float = HEARTBEAT_SECONDS,
    ):
        """`drivers` makes each host's driver (libvirt's by default); `pool`
        runs operations and `connector` connects to hosts (thread pools by
        default; a test hands in executors that run inline)."""
        self.events: queue.SimpleQueue = queue.SimpleQueue()
        self._listener = Listener(config.notify_socket)
        self._nudge = Notifier(config.notify_socket)
        self.ctx = Context(
            store=store,
            config=config,
            instance_id=instance_id,
            domain_type=domain_type,
            links=Links(drivers or libvirt_drivers(config), self._on_event),
            nudge=self._nudge,
            clock=clock,
            monotonic=monotonic,
            sleep=sleep,
        )
        self.pool = pool or ThreadPoolExecutor(max_workers=workers, thread_name_prefix="op")
        self._connector = connector or ConnectThreads()
        self.files = VmFiles(self.ctx)
        self.strategies = RunStrategies(self.ctx)
        self.vms = VmObserver(self.ctx, self.strategies)
        self.evacuation = Evacuation(self.ctx)
        self.consoles = ConsoleMirror(self.ctx, self.files)
        self.hosts = HostMonitor(self.ctx, self.files, self.evacuation, self.consoles.mirror)
        self.operations = OperationRunner(self.ctx, self.vms, self.pool, workers)
        lifecycle = Lifecycle(self.ctx, self.files, self.vms)
        self.operations.register(lifecycle.handlers())
        self.operations.register(Migrations(self.ctx, self.files).handlers())
        self.operations.register(LifecycleShapes(self.ctx, self.files, lifecycle).handlers())
        self.backup_schedule = BackupScheduler(store, clock, self._nudge)
        self.operations.register(SnapshotOperations(self.ctx, self.files, lifecycle).handlers())
        self.backups = Backups(self.ctx, self.files)
        self.operations.register(self.backups.handlers())
        self.operations.register(InPlaceRestore(self.ctx, self.files).handlers())
        self.pools = PoolController(self.ctx)  # replica pools: scale, heal, roll-out
        self._reconnected = threading.Event()  # a link came (back) up: resync now
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._heartbeat_thread: threading.Thread | None = None
        self._heartbeat_seconds = heartbeat_seconds
        self._heartbeat_lock = threading.Lock()  # one heartbeat at a time
        self._follow_up_lock = threading.Lock()
        self._down_after_heartbeat: list[HostLink] | None = None  # for the loop's follow-up
        self._next_resync = self._next_heartbeat = self._next_link_sync = 0.0
        self._next_recent = 0.0  # the next resync_recent, between full passes
        self._next_events_prune = 0.0
        self._next_filter_sweep = 0.0  # orphan network filters (controller/firewall.py)
        self._next_claims_check = 0.0
        self._next_import_sweep = 0.0
        self.hosts.register_local_host()
        self.hosts.sync_links()
        self.prober = Prober(
            store, config, self._probe_lookup, self.strategies.liveness_failed, clock
        )

    # -- what callers (serve.py, tests) use ----------------------------------------------
    @property
    def store(self) -> Store:
        return self.ctx.store

    @property
    def config(self) -> Config:
        return self.ctx.config

    @property
    def instance_id(self) -> str:
        return self.ctx.instance_id

    @property
    def host(self) -> HostDriver:
        """The local host's driver (the only one before clusters)."""
        return self.ctx.links.local().driver

    def link(self, name: str | None) -> HostLink | None:
        return self.ctx.links.get(name)

    @property
    def reconcile_seconds(self) -> float:
        return self.vms.reconcile_seconds

    def resync(self) -> None:
        self.vms.resync()

    def evacuate(self, name: str) -> None:
        self.evacuation.evacuate(name)

    def adopt_on_start(self) -> None:
        self.vms.adopt_on_start()
        self.backups.recover_interrupted()

    def plan(self, row: dict) -> DomainPlan:
        return self.files.plan(row)

    def _probe_lookup(self, row: dict) -> Guest | None:
        """The VM's domain on its host, for the prober (None while the host is unreachable)."""
        link = self.ctx.links.get(row["host"])
        if link is None or not link.connected:
            return None
        return link.lookup(row["id"])

    # -- life of the controller ----------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="controller", daemon=True)
        self._thread.start()
        self._heartbeat_thread = threading.Thread(target=self._beat, name="heartbeat", daemon=True)
        self._heartbeat_thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._nudge()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._heartbeat_thread is not None:
            self._heartbeat_thread.join(timeout=30)
        self.pool.shutdown(wait=False, cancel_futures=True)
        self._connector.shutdown(wait=False, cancel_futures=True)
        self.prober.stop()
        self.ctx.links.disconnect_all()
        self._listener.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:  # noqa: BLE001 - the loop must survive anything
                log.exception("controller loop")
                time.sleep(0.5)
            self._listener.wait(0.5)

    def _beat(self) -> None:
        """The heartbeat's own thread: a host's record says it is alive every
        HEARTBEAT_SECONDS however long a loop pass takes (a resync over
        thousands of VMs, a burst of creates), so that placement and /readyz
        never count a live host as down because the loop was busy."""
        while not self._stop.wait(self._heartbeat_seconds / 4):
            try:
                self._heartbeat_if_due(self.ctx.clock())
            except Exception:  # noqa: BLE001 - the heartbeat must survive anything
                log.exception("controller heartbeat")

    def _heartbeat_if_due(self, now: float, wait: bool = True) -> None:
        """Called by the heartbeat thread and by the loop (tests drive only the
        loop), which does not wait for a heartbeat under way in the thread."""
        if not self._heartbeat_lock.acquire(blocking=wait):
            return
        try:
            if now < self._next_heartbeat:
                return
            self._next_heartbeat = now + self._heartbeat_seconds
            down = self.hosts.heartbeat()
            with self._follow_up_lock:
                self._down_after_heartbeat = down
        finally:
            self._heartbeat_lock.release()

    def tick(self) -> None:
        """One pass of the loop: links, events, heartbeat (if its thread has not
        beaten yet) and its follow-up, resync, operations, probes, scheduled backups."""
        now = self.ctx.clock()
        if now >= self._next_link_sync:
            self._next_link_sync = now + self._heartbeat_seconds
            self.hosts.sync_links()
        for link in self.hosts.due_connects(now):
            try:
                self._connector.submit(self._connect_in_background, link)
            except ConnectBusy:  # a dropped link's connect to that address still hangs
                link.connecting = False
            except RuntimeError as err:  # no thread to be had: again in a second
                link.connecting = False
                log.warning("could not start a connect to %s: %s", link.name, err)
        if self._reconnected.is_set():
            self._reconnected.clear()
            self._next_resync = self._next_filter_sweep = 0.0
        changed = self._drain_events()
        self._heartbeat_if_due(now, wait=False)
        with self._follow_up_lock:
            down, self._down_after_heartbeat = self._down_after_heartbeat, None
        if down is not None:
            self.hosts.follow_up(down)  # evacuation and console mirroring stay on the loop
        if now >= self._next_resync:
            self.vms.resync()
            networks.sweep(self.ctx)  # deleted networks off the hosts (issue 15)
            if now >= self._next_filter_sweep:  # and the filters of VMs gone
                self._next_filter_sweep = now + firewall.SWEEP_SECONDS
                firewall.sweep(self.ctx)
            # A stale copy left for a busy VM (an evacuated VM still starting when its dead
            # host returns) goes at the next pass, not one a costly pass put far off; still
            # within RESYNC_SOON_SHARE of the loop's time (a copy that waits long, a slow
            # host, must not make full passes run back to back).
            self._next_resync = now + (
                max(RESYNC_SECONDS, self.vms.reconcile_seconds / RESYNC_SOON_SHARE)
                if self.vms.copies_waiting
                else resync_period(self.vms.reconcile_seconds, self.vms.reconcile_cpu_seconds))
            self._next_recent = now + RESYNC_SECONDS
            changed = True
        elif now >= self._next_recent:
            self._next_recent = now + RESYNC_SECONDS
            changed = self.vms.resync_recent() > 0 or changed
        if changed:  # running VMs may have changed: hosts' CPU warnings judged again (issue 14, F)
            self.hosts.cluster_cpu.follow()
        self.pools.tick()
        self.operations.dispatch()
        self.prober.tick()
        if now >= self._next_events_prune:
            self._next_events_prune = now + EVENTS_PRUNE_SECONDS
            self._prune_events()
        if now >= self._next_import_sweep:
            self._next_import_sweep = now + IMPORT_SWEEP_SECONDS
            end_interrupted_imports(self.ctx.store, self.ctx.clock)
        if now >= self._next_claims_check:
            self._next_claims_check = now + CLAIMS_CHECK_SECONDS
            self.check_claims()
        self.backup_schedule.tick()

    def check_claims(self) -> bool:
        """The per-host claim totals the scheduler reads (store/claims.py) against a
        full sum, repaired if they differ (or if the triggers that keep them were
        not today's); whether they were right. At the first pass, then hourly."""
        remade, drift = self.ctx.store.repair_claims()
        if remade:
            log.warning("claims: the triggers that keep the per-host totals were missing or "
                        "older; totals rebuilt")
        for host, (kept, full) in drift.items():
            log.error("claims: host %s's totals were %s, a full sum says %s; rebuilt",
                      host, kept, full)
        return not remade and not drift

    def _prune_events(self) -> None:
        """Every write adds an event (the audit trail): keep the newest events_kept."""
        dropped = self.ctx.store.prune_events(max(1000, self.ctx.config.events_kept))
        if dropped:
            log.info("event log: dropped the %d oldest events (events_kept %d)", dropped,
                     self.ctx.config.events_kept)

    def _connect_in_background(self, link: HostLink) -> None:
        """Connections are opened off the loop: a host that hangs on connect
        (an ssh tunnel to a machine that went dark) stalls only its own link."""
        try:
            if self.hosts.reconnect(link):
                self._reconnected.set()
                self._nudge()
        except Exception:  # noqa: BLE001 - a connector thread must not die silently
            log.exception("connecting to %s", link.name)
        finally:
            link.attempted = True
            link.connecting = False

    # -- lifecycle events ----------------------------------------------------------------
    def _on_event(self, host: str, vm_id: str, event: int, detail: int) -> None:
        """In the hypervisor's event thread: queue, and wake the loop."""
        self.events.put((host, vm_id, event, detail))
        self._nudge()

    def _drain_events(self) -> bool:
        seen = set()
        while True:
            try:
                host, vm_id, _event, _detail = self.events.get_nowait()
            except queue.Empty:
                break
            seen.add((host, vm_id))
        self.vms.on_events(seen)
        return bool(seen)

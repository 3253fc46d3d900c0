"""Appliance families, read from the store at each scrape; and how the serve process publishes
the controller's reconcile duration and scheduler metrics.

The store is shared by every process (SQLite, WAL), so families read from it
are the same whichever gunicorn worker answers the scrape: no multiprocess
bookkeeping is needed for them. Counters here are counts of rows that only
ever grow (finished operations, events).

The controller runs in the serve process, not in the API workers that answer
/metrics. `publish_reconcile` runs in the serve process and copies the
controller's `reconcile_seconds` into the store's meta table after each
resync (key `metrics.reconcile_seconds`, with `metrics.reconcile_time`);
`ApplianceCollector` reads it back. (The serve process's scheduler metrics
reach the workers through the multiprocess directory: exporter/shared_metrics.py.)

Host families (`_hosts`) are the scheduler's view of each host, from the same
functions placement uses (placement.host_states, placement.allocations), so
that what /metrics calls allocated and capacity is exactly what the filters
compare: a fixed number of queries per scrape, whatever the number of hosts,
and no libvirt.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)

from appliance import placement
from appliance.access.principal import qualified_name
from appliance.config import Config
from appliance.model import HOST_RATIOS, HOST_STATES, HostAdminState, VMState
from appliance.service import is_ready
from appliance.store import Store
from exporter.backups import backup_families
from exporter.collector import Target
from exporter.projects import project_families

log = logging.getLogger(__name__)

RECONCILE_KEY = "metrics.reconcile_seconds"
RECONCILE_TIME_KEY = "metrics.reconcile_time"
OPERATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)
MIB = 1024 * 1024
GIB = 1024 ** 3


# Event kinds counted per VM (vmappliance_vm_events_total), for alerts that name the VM.
VM_EVENT_KINDS = (
    "liveness-failed",
    "operation-failed",
    "converging",
    "evacuated",
    "lost",
    "migrated",
)


def publish_reconcile(controller, store: Store, stopping: threading.Event,
                      period: float = 1.0) -> threading.Thread:
    """Copy controller.reconcile_seconds to the meta table whenever it changes."""

    def run() -> None:
        last = None
        while not stopping.wait(period):
            value = controller.reconcile_seconds
            if value == last:
                continue
            try:
                with store.transaction():
                    store.set_meta(RECONCILE_KEY, repr(value))
                    store.set_meta(RECONCILE_TIME_KEY, repr(time.time()))
                last = value
            except Exception:
                log.exception("publishing the reconcile duration")

    thread = threading.Thread(target=run, name="metrics-reconcile", daemon=True)
    thread.start()
    return thread


def store_targets(
    store: Store, default_uri: str, uri_allowed: Callable[[str], bool] = lambda uri: True,
    connect_uri: Callable[[str], str] = lambda uri: uri,
) -> Callable[[], list[Target]]:
    """The hosts the controller recorded; the configured URI as `local` before it has.
    A host whose URI is not allowed (appliance/hosturi.py) is not opened; the others
    are opened as connect_uri says (the appliance's keys: appliance/host_access.py)."""

    def targets() -> list[Target]:
        hosts = [
            Target(h["name"], connect_uri(h["uri"]))
            for h in store.list_hosts()
            if h.get("uri") and uri_allowed(h["uri"])
        ]
        return hosts or [Target("local", default_uri)]

    return targets


def store_uptimes(
    store: Store, clock: Callable[[], float] = time.time,
    running_since: Callable[[], dict[str, float]] | None = None,
) -> Callable[[], dict[str, float]]:
    """Seconds since each running VM was last seen to start running (from the clock
    at each call; running_since: where the start times are read, store.running_since
    unless given)."""
    since = running_since or store.running_since

    def uptimes() -> dict[str, float]:
        now = clock()
        return {vm_id: max(0.0, now - changed) for vm_id, changed in since().items()}

    return uptimes


class ApplianceCollector:
    """VMs by state, operations, events, the controller's reconcile duration, hosts as the
    scheduler sees them, projects' usage and quotas, backups.

    heartbeat_age: a host whose heartbeat is older counts as down (Config.heartbeat_age)."""

    def __init__(
        self,
        store: Store,
        heartbeat_age: float | None = None,
        clock: Callable[[], float] = time.time,
    ):
        self.store = store
        self.heartbeat_age = Config.heartbeat_age if heartbeat_age is None else heartbeat_age
        self.clock = clock

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        sections = (self._vms, self._operations, self._events, self._reconcile, self._hosts,
                    self._projects, self._backups)
        for section in sections:
            try:
                yield from section()
            except Exception:
                log.exception("appliance metrics: %s", section.__name__)
        duration = GaugeMetricFamily("vmappliance_exporter_store_scrape_duration_seconds",
                                     "Time the exporter took to read the store.")
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def _vms(self) -> list[Metric]:
        by_desired, by_observed = self.store.vm_counts_by_state()
        desired = GaugeMetricFamily(
            "vmappliance_vms_desired", "VMs by desired state.", labels=["state"]
        )
        for state, count in by_desired:
            desired.add_metric([state or ""], count)
        observed = GaugeMetricFamily(
            "vmappliance_vms_observed", "VMs by observed state.", labels=["state"]
        )
        for state, count in by_observed:
            observed.add_metric([state or "unknown"], count)
        ready = GaugeMetricFamily(
            "vmappliance_vm_ready",
            "1 if a running VM is ready (its readiness probe passes, or it has none).",
            labels=["vm"],
        )
        for row in self.store.vms_in_states([VMState.RUNNING]):
            ready.add_metric([qualified_name(row["project"], row["name"])], float(is_ready(row)))
        # KubeVirt's RestartRequired condition: spec changes a running VM has not taken live.
        restart = GaugeMetricFamily(
            "vmappliance_vm_restart_required",
            "1 if a running or paused VM waits for a restart to apply spec changes.",
            labels=["vm"],
        )
        for row in self.store.vms_in_states([VMState.RUNNING, VMState.PAUSED]):
            restart.add_metric([qualified_name(row["project"], row["name"])],
                               float(bool(row["restart_required"])))
        return [desired, observed, ready, restart]

    def _operations(self) -> list[Metric]:
        finished = CounterMetricFamily(
            "vmappliance_operations",
            "Operations finished, by kind and result.",
            labels=["kind", "status"],
        )
        for kind, status, count in self.store.finished_operation_counts():
            finished.add_metric([kind, status], count)
        open_ = GaugeMetricFamily(
            "vmappliance_operations_open",
            "Operations pending or running, by kind.",
            labels=["kind", "status"],
        )
        progress = GaugeMetricFamily("vmappliance_operation_progress_ratio",
                                     "Progress of each running operation (0-1), e.g. a migration.",
                                     labels=["vm", "kind"])
        for kind, status, count in self.store.open_operation_counts():
            open_.add_metric([kind, status], count)
        for vm, kind, value in self.store.running_operation_progress():
            progress.add_metric([vm or "", kind], (value or 0) / 100.0)
        # The duration histogram, bucketed in SQL: one pass over the table.
        duration = HistogramMetricFamily(
            "vmappliance_operation_duration_seconds",
            "Time from an operation's start to its end, by kind and result.",
            labels=["kind", "status"],
        )
        for kind, status, *values in self.store.operation_duration_buckets(OPERATION_BUCKETS):
            counts, total, seconds = values[:-2], values[-2], values[-1]
            buckets = [(str(b), c) for b, c in zip(OPERATION_BUCKETS, counts, strict=True)] + [
                ("+Inf", total)
            ]
            duration.add_metric([kind, status], buckets, seconds or 0.0)
        return [finished, open_, progress, duration]

    def _events(self) -> list[Metric]:
        events = CounterMetricFamily(
            "vmappliance_events", "Events recorded, by kind.", labels=["kind"]
        )
        for kind, count in self.store.event_counts():
            events.add_metric([kind], count)
        # The kinds an alert wants to name a VM for, for the VMs that exist (a
        # deleted VM's series end with it: the label set stays bounded).
        per_vm = CounterMetricFamily(
            "vmappliance_vm_events",
            "Events about a VM that alerts name it for, by kind.",
            labels=["vm", "kind"],
        )
        for vm, kind, count in self.store.vm_event_counts(VM_EVENT_KINDS):
            per_vm.add_metric([vm, kind], count)
        return [events, per_vm]

    def _projects(self) -> list[Metric]:
        """Each project's usage and quota (exporter/projects.py)."""
        return project_families(self.store)

    def _backups(self) -> list[Metric]:
        """Each VM's last good backup and backup schedule (exporter/backups.py)."""
        return backup_families(self.store)

    def _reconcile(self) -> list[Metric]:
        value = self.store.get_meta(RECONCILE_KEY)
        if value is None:
            return []
        seconds = GaugeMetricFamily("vmappliance_controller_reconcile_seconds",
                                    "Duration of the controller's last full resync with libvirt.")
        seconds.add_metric([], float(value))
        when = GaugeMetricFamily("vmappliance_controller_last_reconcile_timestamp_seconds",
                                 "When the controller's last resync finished (Unix time).")
        when.add_metric([], float(self.store.get_meta(RECONCILE_TIME_KEY) or 0))
        return [seconds, when]

    def _hosts(self) -> list[Metric]:
        """The store's hosts: admin state, the controller's heartbeat, inventory, overcommit,
        capacity and claims, exactly as placement reads them. `resource` is vcpus,
        memory_bytes or disk_bytes; a resource whose inventory is unknown yet (0) has
        no physical or capacity series, so ratios against it stay empty."""
        g = GaugeMetricFamily
        state = g(
            "vmappliance_host_state",
            "1 for the host's administrative state (enabled, disabled, maintenance).",
            labels=["host", "state"],
        )
        heartbeat = g(
            "vmappliance_host_heartbeat_up",
            "1 if the controller's heartbeat on the host's libvirt is recent and answered (the "
            "scheduler's view), else 0.",
            labels=["host"],
        )
        last_seen = g(
            "vmappliance_host_last_heartbeat_timestamp_seconds",
            "When the controller last heard from the host's libvirt (Unix time).",
            labels=["host"],
        )
        physical = g(
            "vmappliance_host_physical",
            "The host's inventory: CPUs, memory and VM disk storage "
            "(resource = vcpus, memory_bytes, disk_bytes).",
            labels=["host", "resource"],
        )
        ratio = g(
            "vmappliance_host_overcommit_ratio",
            "Overcommit allowed on the host: capacity = physical x ratio "
            "(memory: minus the reserved memory).",
            labels=["host", "resource"],
        )
        reserved = g(
            "vmappliance_host_reserved_memory_bytes",
            "Memory kept for the host itself, out of capacity.",
            labels=["host"],
        )
        capacity = g(
            "vmappliance_host_capacity",
            "What the scheduler may place on the host: physical x overcommit "
            "ratio (memory: minus reserved).",
            labels=["host", "resource"],
        )
        allocated = g(
            "vmappliance_host_allocated",
            "What the VMs placed on the host and those migrating to it "
            "claim: disks always; vCPUs and memory while active (desired running or paused) or "
            "reserved (reserve_when_stopped).",
            labels=["host", "resource"],
        )
        vms = g("vmappliance_host_vms", "VMs placed on the host, running or not.", labels=["host"])
        storage_free = g(
            "vmappliance_host_storage_free_bytes",
            "Free space where the host's VM disks are (thin disks grow into it).",
            labels=["host"],
        )
        rows = {row["name"]: row for row in self.store.list_hosts()}
        counts = placement.vms_by_host(self.store)
        used = placement.allocations(self.store)
        now = self.clock()
        for name, row in rows.items():
            info = row["info"] or {}
            admin = row["state"] or HostAdminState.ENABLED
            for value in HOST_STATES:
                state.add_metric([name, value], 1.0 if admin == value else 0.0)
            heartbeat.add_metric(
                [name], 1.0 if placement.host_is_up(row, now, self.heartbeat_age) else 0.0
            )
            if row["last_seen"] is not None:
                last_seen.add_metric([name], row["last_seen"])
            # Defaults as placement.host_states applies them.
            ratios = {"vcpus": row["cpu_ratio"] or HOST_RATIOS["cpu_ratio"].default,
                      "memory_bytes": row["ram_ratio"] or HOST_RATIOS["ram_ratio"].default,
                      "disk_bytes": row["disk_ratio"] or HOST_RATIOS["disk_ratio"].default}
            reserved_bytes = int(row["reserved_memory_mib"] or 0) * MIB
            inventory = {
                "vcpus": int(info.get("cpus") or 0),
                "memory_bytes": int(info.get("memory_mib") or 0) * MIB,
                "disk_bytes": int(info.get("disk_bytes") or 0),
            }
            cpus, memory_mib, disk = used.get(name, (0, 0, 0))
            claims = {"vcpus": cpus, "memory_bytes": memory_mib * MIB, "disk_bytes": disk}
            reserved.add_metric([name], reserved_bytes)
            for resource in ("vcpus", "memory_bytes", "disk_bytes"):
                ratio.add_metric([name, resource], ratios[resource])
                allocated.add_metric([name, resource], claims[resource])
                if inventory[resource] > 0:
                    physical.add_metric([name, resource], inventory[resource])
                    cap = inventory[resource] * ratios[resource]
                    if resource == "memory_bytes":
                        cap -= reserved_bytes
                    capacity.add_metric([name, resource], cap)
            vms.add_metric([name], counts.get(name, 0))
            if info.get("disk_free_bytes") is not None:
                storage_free.add_metric([name], int(info["disk_free_bytes"]))
        return [
            state,
            heartbeat,
            last_seen,
            physical,
            ratio,
            reserved,
            capacity,
            allocated,
            vms,
            storage_free,
        ]

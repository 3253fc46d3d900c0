"""Prometheus families for VMs and hosts, from a fixed number of bulk libvirt calls per host per scrape.

`LibvirtCollector.collect()` runs fresh at every scrape (prometheus_client
calls it). Per host it makes a fixed number of calls, whatever the number of
domains, and never a call per domain:
- the running domains: `listAllDomains(ACTIVE)`, then the bulk stats call
  `domainListGetStats` on them, split into at most CHUNKS parts made at once
  on each of CONNECTIONS connections.
  libvirtd runs each domain's QEMU monitor queries one after another inside
  one call; on a loaded host (10 TCG guests on 2 cores) the split made the
  call 3-4x faster (1,495 ms in one call, 321 ms in 4). libvirtd serves 5
  requests of one client at a time by default (max_client_requests), so 4;
- the shut-off domains: one `getAllDomainStats(INACTIVE)` asking only for
  state, vCPUs and balloon. Block stats of a shut-off domain make libvirt
  open each of its disk images: on 1,833 shut-off domains, every group took
  445 ms against 33 ms for state alone;
- `getInfo` and `getFreeMemory` for the host families.
Every stats call carries VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT, so that a
domain busy in a migration or another job answers with what it has instead
of blocking the scrape.

Failure is contained, as client_python's process_collector does it:
- a host that cannot be reached, or does not answer within the deadline,
  costs its own series and shows `vmappliance_host_up{host} 0`;
- a domain whose stats are odd costs only that domain's series (counted in
  `vmappliance_exporter_domain_errors`);
- a host still busy with the previous scrape's call is reported down at once
  rather than queueing a second call behind the first.

Naming: the `vm` label is the appliance's VM name, looked up by the domain's
UUID (the appliance uses the VM id as the domain UUID) in a map the caller
supplies (from the store). Domains the appliance does not know ("strangers")
are labelled by their libvirt domain name and show `managed="false"` in
`vmappliance_vm_info`. A stranger whose name equals a managed VM's name on the
same host is skipped (its series would collide). Interfaces are labelled
`net0`, `net1`, ... in domain order, not by tap device name (vnetN changes at
every start); disks by target name (vda).
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout

import libvirt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance.virt.domain import METADATA_NS
from appliance.virt.host import REASONS, STATES

log = logging.getLogger(__name__)

KIB = 1024
NS = 1e-9

NOWAIT = libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_NOWAIT
# (stats groups, flags) of the bulk calls: see the module's docstring.
# Only the groups exported: each further one (iothread, dirtyrate, vm, perf) is another round
# trip to every QEMU's monitor, and "0" (every group) cost 2.5x these on loaded TCG guests.
ACTIVE_GROUPS = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_CPU_TOTAL | libvirt.VIR_DOMAIN_STATS_BALLOON
                 | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_INTERFACE | libvirt.VIR_DOMAIN_STATS_BLOCK)
ACTIVE_CALL = (ACTIVE_GROUPS, NOWAIT)  # domainListGetStats takes no ACTIVE/INACTIVE filter
INACTIVE_CALL = (libvirt.VIR_DOMAIN_STATS_STATE | libvirt.VIR_DOMAIN_STATS_VCPU | libvirt.VIR_DOMAIN_STATS_BALLOON,
                 NOWAIT | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE)
CHUNKS = 4  # parts in flight on one connection (libvirtd's max_client_requests is 5)
# libvirtd answers one connection's requests at most 5 at a time, and the time
# of a stats call is spent waiting for each QEMU's monitor, not computing: so
# the running domains are spread over a few connections (an idle connection
# costs libvirtd nothing). 10 TCG guests: 244 ms on one connection, see BENCHMARKS.md.
CONNECTIONS = 3
MAX_IDENTITIES = 100_000  # per host, which domains are the appliance's (`ours_only`)

# (stats key, family suffix, help, scale) -- a table, so coverage is easy to read.
VM_GAUGES = [
    ("vcpu.current", "vcpus", "Virtual CPUs the VM has now.", 1),
    ("vcpu.maximum", "vcpus_maximum", "Virtual CPUs the VM may have.", 1),
    ("balloon.current", "memory_current_bytes", "Memory the VM has now (balloon size).", KIB),
    ("balloon.maximum", "memory_maximum_bytes", "Memory the VM may have.", KIB),
    ("balloon.available", "memory_available_bytes", "Memory the guest sees (balloon driver).", KIB),
    ("balloon.usable", "memory_usable_bytes", "Memory the guest could use without swapping.", KIB),
    ("balloon.unused", "memory_unused_bytes", "Memory the guest leaves unused.", KIB),
    ("balloon.disk_caches", "memory_disk_caches_bytes", "Guest memory used for disk caches.", KIB),
    ("balloon.rss", "memory_rss_bytes", "Resident memory of the VM's process on the host.", KIB),
]
VM_COUNTERS = [
    ("cpu.time", "cpu_seconds", "CPU time the VM used.", NS),
    ("cpu.user", "cpu_user_seconds", "User CPU time of the VM's process.", NS),
    ("cpu.system", "cpu_system_seconds", "System CPU time of the VM's process.", NS),
    ("balloon.swap_in", "memory_swap_in_bytes", "Memory the guest swapped in.", KIB),
    ("balloon.swap_out", "memory_swap_out_bytes", "Memory the guest swapped out.", KIB),
    ("balloon.major_fault", "memory_major_faults", "Major page faults in the guest.", 1),
    ("balloon.minor_fault", "memory_minor_faults", "Minor page faults in the guest.", 1),
]
BLOCK_GAUGES = [
    ("capacity", "block_capacity_bytes", "Size of the disk as the guest sees it.", 1),
    ("allocation", "block_allocation_bytes", "Highest offset written in the disk's image.", 1),
    ("physical", "block_physical_bytes", "Size of the disk's image on the host.", 1),
]
BLOCK_COUNTERS = [
    ("rd.bytes", "block_read_bytes", "Bytes read from the disk.", 1),
    ("wr.bytes", "block_write_bytes", "Bytes written to the disk.", 1),
    ("rd.reqs", "block_read_requests", "Read requests to the disk.", 1),
    ("wr.reqs", "block_write_requests", "Write requests to the disk.", 1),
    ("fl.reqs", "block_flush_requests", "Flush requests to the disk.", 1),
    ("rd.times", "block_read_seconds", "Time spent reading the disk.", NS),
    ("wr.times", "block_write_seconds", "Time spent writing the disk.", NS),
    ("fl.times", "block_flush_seconds", "Time spent flushing the disk.", NS),
]
NET_COUNTERS = [
    ("rx.bytes", "network_receive_bytes", "Bytes received.", 1),
    ("rx.pkts", "network_receive_packets", "Packets received.", 1),
    ("rx.errs", "network_receive_errors", "Receive errors.", 1),
    ("rx.drop", "network_receive_drops", "Received packets dropped.", 1),
    ("tx.bytes", "network_transmit_bytes", "Bytes sent.", 1),
    ("tx.pkts", "network_transmit_packets", "Packets sent.", 1),
    ("tx.errs", "network_transmit_errors", "Transmit errors.", 1),
    ("tx.drop", "network_transmit_drops", "Sent packets dropped.", 1),
]
VCPU_COUNTERS = [
    ("time", "vcpu_seconds", "CPU time of one virtual CPU.", NS),
    ("wait", "vcpu_wait_seconds", "Time one virtual CPU waited for a host CPU.", NS),
]

VM_LABELS = ["vm", "host"]


@dataclasses.dataclass(frozen=True)
class Target:
    """One libvirt host to scrape."""
    name: str
    uri: str


@dataclasses.dataclass
class HostSample:
    """What one host answered: the raw results of its calls."""
    domains: list[tuple[str, str, dict]]  # (uuid, domain name, stats)
    info: list
    free_memory: int
    ours: frozenset[str] | None = None  # uuids of the domains with the appliance's metadata (ours_only)


def open_read_only(uri: str) -> libvirt.virConnect:
    return libvirt.openReadOnly(uri)


def _list_active(conn: libvirt.virConnect) -> list:
    return conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)


def _shut_off_and_host(conn: libvirt.virConnect) -> tuple[list, list, int]:
    return conn.getAllDomainStats(*INACTIVE_CALL), conn.getInfo(), conn.getFreeMemory()


class _Host:
    """A target's cached connection and the call in flight (at most one)."""

    def __init__(self, target: Target):
        self.target = target
        self.conn: libvirt.virConnect | None = None
        self.more_conns: list[libvirt.virConnect] = []  # for the running domains' stats in parallel
        self.pending: Future | None = None
        self.identities: dict[str, bool] = {}  # domain uuid -> carries the appliance's metadata


class LibvirtCollector:
    """VM and host families. `targets()` and `names()` are asked at each scrape,
    so hosts and VMs added to the store show up without a restart."""

    def __init__(
        self,
        targets: Callable[[], Iterable[Target]],
        names: Callable[[], dict[str, str]] = dict,
        open_connection: Callable[[str], libvirt.virConnect] = open_read_only,
        deadline: float = 5.0,
        uptimes: Callable[[], dict[str, float]] = dict,
        chunks: int = CHUNKS,
        connections: int = CONNECTIONS,
        managed_only: bool = False,
        ours_only: bool = False,
    ):
        self.chunks = chunks
        self.connections = connections
        self.targets = targets
        self.names = names
        # Leave out the domains `names` does not know (another tenant's on a shared libvirtd).
        self.managed_only = managed_only
        # Without a store (`vmctl exporter`): only the domains with the appliance's <metadata>.
        self.ours_only = ours_only
        self.uptimes = uptimes
        self.open_connection = open_connection
        self.deadline = deadline
        self._hosts: dict[Target, _Host] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="libvirt-scrape")
        self._chunk_pool = ThreadPoolExecutor(max_workers=4 * chunks * connections, thread_name_prefix="libvirt-stats")

    # -- talking to libvirt (in a worker thread, under the deadline) ---------------------
    def _sample(self, host: _Host) -> HostSample:
        try:
            if host.conn is None:
                host.conn = self.open_connection(host.target.uri)
                # The test driver keeps a separate world per connection: one only.
                extra = 0 if host.target.uri.startswith("test:") else self.connections - 1
                host.more_conns = [self.open_connection(host.target.uri) for _ in range(extra)]
            conns = [host.conn, *host.more_conns]
            # The shut-off domains and the host's figures, on the last connection,
            # while the running domains' stats are asked for (they were one after the other).
            side = self._chunk_pool.submit(_shut_off_and_host, conns[-1])
            running = self._active_stats(conns)
            shut_off, info, free_memory = side.result()
            domains, seen, ours = [], set(), set()
            for dom, record in running + shut_off:
                uuid = dom.UUIDString()
                if uuid not in seen:  # a domain that started between the two calls
                    seen.add(uuid)
                    domains.append((uuid, dom.name(), record))
                    if self.ours_only and self._ours(host, uuid, dom):
                        ours.add(uuid)
            return HostSample(domains, info, free_memory, frozenset(ours) if self.ours_only else None)
        except libvirt.libvirtError:
            # The connection may be dead: open a fresh one at the next scrape.
            conns, host.conn, host.more_conns = [host.conn, *host.more_conns], None, []
            for conn in conns:
                if conn is not None:
                    try:
                        conn.close()
                    except libvirt.libvirtError:
                        pass
            raise

    def _ours(self, host: _Host, uuid: str, dom: libvirt.virDomain) -> bool:
        """Whether the domain carries the appliance's <metadata> (read once per
        domain: it is written at define and never changes)."""
        known = host.identities.get(uuid)
        if known is None:
            try:
                dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
                known = True
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    return False  # gone meanwhile, or the connection failed: asked again next time
                known = False
            if len(host.identities) > MAX_IDENTITIES:
                host.identities.clear()
            host.identities[uuid] = known
        return known

    def _active_stats(self, conns: list[libvirt.virConnect]) -> list:
        """The running domains' stats: one list call, then the domains dealt out
        in parts, CHUNKS parts in flight per connection. One call per part with
        every group: a domain's groups split over calls made at once lose their
        QEMU-monitor part (each call takes the domain's job, NOWAIT skips)."""
        conn = conns[0]
        first = conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
        if not first:
            return []
        count = min(self.chunks * len(conns), len(first))
        # Other connections are listed only when their parts are needed (a few domains: one connection).
        used = conns[: -(-count // self.chunks)]
        listed = [first, *self._chunk_pool.map(_list_active, used[1:])]
        by_uuid = [{d.UUIDString(): d for d in doms} for doms in listed]
        # Part p goes through connection p % len(used); a domain that connection
        # has not listed (it just started) goes through the first one instead.
        parts: dict[tuple[int, int], list] = {}
        for i, uuid in enumerate(sorted(by_uuid[0])):
            part = i % count
            owner = part % len(used)
            if uuid not in by_uuid[owner]:
                owner = 0
            parts.setdefault((part, owner), []).append(by_uuid[owner][uuid])

        def stats(item: tuple[tuple[int, int], list]) -> list:
            (_part, owner), doms = item
            return used[owner].domainListGetStats(doms, *ACTIVE_CALL)

        try:
            records = []
            for part in self._chunk_pool.map(stats, parts.items()):
                records.extend(part)
            return records
        except libvirt.libvirtError as err:
            if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN:
                raise
            # One went away since the list: ask for whatever is running now, in one call.
            return conn.getAllDomainStats(ACTIVE_CALL[0],
                                          ACTIVE_CALL[1] | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_ACTIVE)

    def _host(self, target: Target) -> _Host:
        with self._lock:
            if target not in self._hosts:
                self._hosts[target] = _Host(target)
            return self._hosts[target]

    def sample_all(self, targets: list[Target]) -> dict[Target, HostSample | str]:
        """Ask every host at once; each answer or the reason it is missing."""
        started = time.monotonic()
        futures = {}
        results: dict[Target, HostSample | str] = {}
        for target in targets:
            host = self._host(target)
            if host.pending is not None and not host.pending.done():
                results[target] = "the previous scrape's call has not returned"
                continue
            host.pending = self._pool.submit(self._sample, host)
            futures[target] = host.pending
        for target, future in futures.items():
            try:
                results[target] = future.result(timeout=max(0.0, self.deadline - (time.monotonic() - started)))
            except FutureTimeout:
                results[target] = f"no answer within {self.deadline} s"
            except Exception as err:  # noqa: BLE001 - one host's failure is that host's only
                message = err.get_error_message() if isinstance(err, libvirt.libvirtError) else None
                results[target] = message or repr(err)
        return results

    # -- families -------------------------------------------------------------------------
    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            targets = list(self.targets())
        except Exception:
            log.exception("listing the hosts to scrape")
            targets = []
        try:
            names = self.names()
        except Exception:
            log.exception("reading VM names")
            names = {}
        try:
            uptimes = self.uptimes()
        except Exception:
            log.exception("reading VM uptimes")
            uptimes = {}
        samples = self.sample_all(targets)
        yield from self.families(samples, names, uptimes)
        duration = GaugeMetricFamily("vmappliance_exporter_libvirt_scrape_duration_seconds",
                                     "Time the exporter took to read libvirt, all hosts.")
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def families(self, samples: dict[Target, HostSample | str], names: dict[str, str],
                 uptimes: dict[str, float]) -> Iterator[Metric]:
        f = _Families()
        for target, sample in samples.items():
            up = isinstance(sample, HostSample)
            f.host_up.add_metric([target.name], 1.0 if up else 0.0)
            if not up:
                log.warning("libvirt host %s (%s): %s", target.name, target.uri, sample)
                continue
            try:
                _host_families(f, target.name, sample)
            except Exception:
                log.exception("host families of %s", target.name)
            seen: set[str] = set()
            errors = 0
            managed_names = {names[uuid] for uuid, _, _ in sample.domains if uuid in names}
            for uuid, dom_name, stats in sample.domains:
                managed = uuid in names
                if (not managed and self.managed_only) or (sample.ours is not None and uuid not in sample.ours):
                    continue
                vm = names[uuid] if managed else dom_name
                if vm in seen or (not managed and vm in managed_names):
                    errors += 1
                    continue
                seen.add(vm)
                try:
                    rows = _domain_rows(stats, uptimes.get(uuid) if managed else None)
                except Exception:
                    log.exception("stats of domain %s on %s", dom_name, target.name)
                    errors += 1
                    continue
                f.vm_info.add_metric([vm, target.name, dom_name, "true" if managed else "false"], 1)
                for family, extra, value in rows:
                    f.get(family).add_metric([vm, target.name, *extra], value)
            f.domain_errors.add_metric([target.name], errors)
        return f.all()


class _Families:
    """Every family made once per scrape, so that each appears once however many hosts."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.host_up = g("vmappliance_host_up", "1 if the host's libvirt answered this scrape, else 0.",
                         labels=["host"])
        self.domain_errors = g("vmappliance_exporter_domain_errors",
                               "Domains left out of this scrape (bad stats or a name clash).", labels=["host"])
        self.vm_info = g("vmappliance_vm_info", "One per VM: its libvirt domain and whether the appliance manages it.",
                         labels=["vm", "host", "domain", "managed"])
        self.by_name: dict[str, Metric] = {}
        self._define(g("vmappliance_vm_state", "1 for the VM's current state and the reason libvirt gives.",
                       labels=[*VM_LABELS, "state", "reason"]))
        self._define(g("vmappliance_vm_uptime_seconds",
                       "Seconds since the appliance saw the VM start running (managed, running VMs only).",
                       labels=VM_LABELS))
        for _, name, doc, _ in VM_GAUGES:
            self._define(g("vmappliance_vm_" + name, doc, labels=VM_LABELS))
        for _, name, doc, _ in VM_COUNTERS:
            self._define(c("vmappliance_vm_" + name, doc, labels=VM_LABELS))
        for _, name, doc, _ in VCPU_COUNTERS:
            self._define(c("vmappliance_vm_" + name, doc, labels=[*VM_LABELS, "vcpu"]))
        for _, name, doc, _ in BLOCK_GAUGES:
            self._define(g("vmappliance_vm_" + name, doc, labels=[*VM_LABELS, "disk"]))
        for _, name, doc, _ in BLOCK_COUNTERS:
            self._define(c("vmappliance_vm_" + name, doc, labels=[*VM_LABELS, "disk"]))
        for _, name, doc, _ in NET_COUNTERS:
            self._define(c("vmappliance_vm_" + name, doc, labels=[*VM_LABELS, "interface"]))
        for name, doc in HOST_GAUGES:
            self._define(g("vmappliance_host_" + name, doc, labels=["host"]))

    def _define(self, family: Metric) -> None:
        self.by_name[family.name] = family

    def get(self, name: str) -> Metric:
        return self.by_name[name]

    def all(self) -> list[Metric]:
        return [self.host_up, self.domain_errors, self.vm_info, *self.by_name.values()]


HOST_GAUGES = [
    ("cpus", "Host CPUs libvirt reports."),
    ("cpu_mhz", "Host CPU frequency libvirt reports, MHz."),
    ("memory_total_bytes", "Host memory libvirt reports."),
    ("memory_free_bytes", "Host memory free now."),
    ("domains", "Domains defined or running on the host."),
    ("running_domains", "Domains running (or paused) on the host."),
    ("vcpus_allocated", "Virtual CPUs of the active domains on the host."),
    ("memory_allocated_bytes", "Memory of the active domains on the host (balloon size)."),
]


def _host_families(f: _Families, host: str, sample: HostSample) -> None:
    _model, memory_mib, cpus, mhz, *_ = sample.info
    active = [s for _, _, s in sample.domains
              if s.get("state.state") not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED, None)]
    values = {
        "cpus": cpus, "cpu_mhz": mhz, "memory_total_bytes": memory_mib * 1024 * 1024,
        "memory_free_bytes": sample.free_memory, "domains": len(sample.domains), "running_domains": len(active),
        "vcpus_allocated": sum(s.get("vcpu.current", 0) for s in active),
        "memory_allocated_bytes": sum(s.get("balloon.current", 0) for s in active) * KIB,
    }
    for name, value in values.items():
        f.get("vmappliance_host_" + name).add_metric([host], value)


def _counter(name: str) -> str:
    # CounterMetricFamily adds _total itself; the family is named without it.
    return "vmappliance_vm_" + name


def _domain_rows(stats: dict, uptime: float | None) -> list[tuple[str, list[str], float]]:
    """Every (family, extra labels, value) of one domain, all or nothing: a domain
    whose stats cannot be read raises, and the caller leaves it out whole."""
    rows: list[tuple[str, list[str], float]] = []
    state = stats["state.state"]
    reason = stats.get("state.reason", 0)
    # Prometheus drops empty labels: a reason libvirt does not give is "unknown".
    reason_name = REASONS.get(state, {}).get(reason) or "unknown"
    rows.append(("vmappliance_vm_state", [STATES.get(state, "unknown"), reason_name], 1))
    if uptime is not None and state in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED):
        rows.append(("vmappliance_vm_uptime_seconds", [], uptime))
    for key, name, _, scale in VM_GAUGES:
        if key in stats:
            rows.append(("vmappliance_vm_" + name, [], float(stats[key]) * scale))
    for key, name, _, scale in VM_COUNTERS:
        if key in stats:
            rows.append((_counter(name), [], float(stats[key]) * scale))
    for index in range(int(stats.get("vcpu.maximum", 0))):
        for key, name, _, scale in VCPU_COUNTERS:
            value = stats.get(f"vcpu.{index}.{key}")
            if value is not None:
                rows.append((_counter(name), [str(index)], float(value) * scale))
    for index in range(int(stats.get("block.count", 0))):
        prefix = f"block.{index}."
        disk = stats.get(prefix + "name") or str(index)
        for key, name, _, scale in BLOCK_GAUGES + BLOCK_COUNTERS:
            value = stats.get(prefix + key)
            if value is not None:
                rows.append(("vmappliance_vm_" + name, [disk], float(value) * scale))
    for index in range(int(stats.get("net.count", 0))):
        prefix = f"net.{index}."
        for key, name, _, scale in NET_COUNTERS:
            value = stats.get(prefix + key)
            if value is not None:
                rows.append((_counter(name), [f"net{index}"], float(value) * scale))
    return rows

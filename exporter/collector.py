"""Prometheus families for VMs and hosts, from a fixed number of bulk libvirt calls
per host per scrape.

`LibvirtCollector.collect()` runs fresh at every scrape (prometheus_client
calls it). Per host it makes a fixed number of calls, whatever the number of
domains, and never a call per domain:
- the running domains: `listAllDomains(ACTIVE)`, then for the wanted ones
  (the appliance's, unless every domain is reported) two bulk calls made at
  once, one with the groups that need QEMU's monitor (balloon, block), split
  into at most CHUNKS parts on each of CONNECTIONS connections, and one with
  the others (state, CPU, vCPU, interface), which libvirt then answers without
  asking the monitor; other domains get one call with what the host families
  count (running_stats.py says why and measures it).
  libvirtd runs each domain's QEMU monitor queries one after another inside
  one call; on a loaded host (10 TCG guests on 2 cores) the split made the
  call 3-4x faster (1,495 ms in one call, 321 ms in 4). libvirtd serves 5
  requests of one client at a time by default (max_client_requests), so 4;
- the shut-off domains: one `getAllDomainStats(INACTIVE)` asking only for
  state, vCPUs and balloon. Block stats of a shut-off domain make libvirt
  open each of its disk images: on 1,833 shut-off domains, every group took
  445 ms against 33 ms for state alone;
- `getInfo` and `getFreeMemory` for the host families;
- the one exception to "never a call per domain": the guest agent of each of the
  appliance's running domains with a NIC libvirt has no counters for (a
  user-mode NIC), asked for its interfaces' counters, bounded in time (agent_net.py).
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
from prometheus_client.core import GaugeMetricFamily, Metric

from appliance.virt.domain import METADATA_NS, appliance_of
from exporter.agent_net import AgentCounters
from exporter.families import Families, domain_rows, host_families
from exporter.running_stats import ACTIVE_CALL, MONITOR_CALL, NOWAIT, PLAIN_CALL, running_stats

__all__ = ["ACTIVE_CALL", "CHUNKS", "CONNECTIONS", "INACTIVE_CALL", "MONITOR_CALL", "PLAIN_CALL",
           "HostSample", "LibvirtCollector", "Target"]

log = logging.getLogger(__name__)

# (stats groups, flags) of the shut-off domains' call; the running domains' are in
# running_stats.py (see the module's docstring for both).
INACTIVE_CALL = (
    libvirt.VIR_DOMAIN_STATS_STATE
    | libvirt.VIR_DOMAIN_STATS_VCPU
    | libvirt.VIR_DOMAIN_STATS_BALLOON,
    NOWAIT | libvirt.VIR_CONNECT_GET_ALL_DOMAINS_STATS_INACTIVE,
)
CHUNKS = 4  # monitor parts in flight on one connection (libvirtd's max_client_requests is 5)
# libvirtd answers one connection's requests at most 5 at a time, and the time
# of a stats call is spent waiting for each QEMU's monitor, not computing: so
# the running domains are spread over a few connections (an idle connection
# costs libvirtd nothing). 10 TCG guests: 244 ms on one connection, see BENCHMARKS.md.
CONNECTIONS = 3
MAX_IDENTITIES = 100_000  # per host, which appliance each domain belongs to (`ours_only`)



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
    ours: frozenset[str] | None = (
        None  # uuids of the domains with the appliance's metadata (ours_only)
    )


def open_read_only(uri: str) -> libvirt.virConnect:
    return libvirt.openReadOnly(uri)


def _shut_off_and_host(conn: libvirt.virConnect) -> tuple[list, list, int]:
    return conn.getAllDomainStats(*INACTIVE_CALL), conn.getInfo(), conn.getFreeMemory()


class _Host:
    """A target's cached connection and the call in flight (at most one)."""

    def __init__(self, target: Target):
        self.target = target
        self.conn: libvirt.virConnect | None = None
        self.more_conns: list[libvirt.virConnect] = []  # for the running domains' stats in parallel
        self.pending: Future | None = None
        # domain uuid -> the `appliance` its <metadata> names ("" if it names none;
        # None: no such <metadata>, a stranger)
        self.identities: dict[str, str | None] = {}


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
        appliance: str | None = None,
        agent: AgentCounters | bool = True,
    ):
        """agent: the guest agent's counters for NICs libvirt has none for
        (agent_net.py; False: none)."""
        self.chunks = chunks
        self.agent = AgentCounters() if agent is True else agent or None
        self.connections = connections
        self.targets = targets
        self.names = names
        # Leave out the domains `names` does not know (another tenant's on a shared libvirtd).
        self.managed_only = managed_only
        # Without a store (`vmctl exporter`): only the domains whose <metadata> names
        # `appliance` (the instance id the appliance writes at define), or, with
        # appliance=None, any appliance's (several may share one libvirtd).
        self.ours_only = ours_only
        self.appliance = appliance
        self.uptimes = uptimes
        self.open_connection = open_connection
        self.deadline = deadline
        self._hosts: dict[Target, _Host] = {}
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="libvirt-scrape")
        self._chunk_pool = ThreadPoolExecutor(
            max_workers=4 * chunks * connections, thread_name_prefix="libvirt-stats"
        )

    # -- talking to libvirt (in a worker thread, under the deadline) ---------------------
    def _sample(self, host: _Host, names: dict[str, str] | None = None) -> HostSample:
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
            running = running_stats(conns, self._wanted(host, names), self.chunks, self._chunk_pool)
            if self.agent is not None:
                self._agent_counters(self.agent, host, names, running)
            shut_off, info, free_memory = side.result()
            domains, seen, ours = [], set(), set()
            for dom, record in running + shut_off:
                uuid = dom.UUIDString()
                if uuid not in seen:  # a domain that started between the two calls
                    seen.add(uuid)
                    domains.append((uuid, dom.name(), record))
                    if self.ours_only and self._ours(host, uuid, dom):
                        ours.add(uuid)
            return HostSample(
                domains, info, free_memory, frozenset(ours) if self.ours_only else None
            )
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

    def _agent_counters(self, agent: AgentCounters, host: _Host, names: dict[str, str] | None,
                        running: list[tuple[libvirt.virDomain, dict]]) -> None:
        """The guest agent's counters into the records of the appliance's domains
        only: the store's, or those whose <metadata> names this appliance (any
        appliance's with `--any-appliance`); no other tenant's guest agent is asked."""
        records = {}
        for dom, record in running:
            if "net.count" not in record:
                continue  # not a reported domain (no interface group asked)
            uuid = dom.UUIDString()
            if (names and uuid in names) or (
                (self.ours_only or self.appliance is not None) and self._ours(host, uuid, dom)
            ):
                records[uuid] = record
        if records:
            try:
                agent.fill(host.target.uri, records)
            except Exception:  # noqa: BLE001 - the agent's counters cost only themselves
                log.exception("guest agent NIC counters on %s", host.target.name)

    def _ours(self, host: _Host, uuid: str, dom: libvirt.virDomain) -> bool:
        """Whether the domain carries the appliance's <metadata>, naming this
        appliance if one was given (read once per domain: it is written at
        define and never changes)."""
        if uuid not in host.identities:
            try:
                element = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, METADATA_NS)
            except libvirt.libvirtError as err:
                if err.get_error_code() != libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                    return False  # gone meanwhile, or the connection failed: asked again next time
                element = None
            if len(host.identities) > MAX_IDENTITIES:
                host.identities.clear()
            host.identities[uuid] = None if element is None else appliance_of(element)
        known = host.identities[uuid]
        if self.appliance is None:
            return known is not None
        return known == self.appliance

    def _wanted(self, host: _Host, names: dict[str, str] | None
                ) -> Callable[[libvirt.virDomain], bool]:
        """Which running domains are reported, hence asked for their full stats
        (the others only for what the host families count)."""
        if self.managed_only and names is not None:
            return lambda dom: dom.UUIDString() in names
        if self.ours_only:
            return lambda dom: self._ours(host, dom.UUIDString(), dom)
        return lambda dom: True

    def _host(self, target: Target) -> _Host:
        with self._lock:
            if target not in self._hosts:
                self._hosts[target] = _Host(target)
            return self._hosts[target]

    def sample_all(self, targets: list[Target], names: dict[str, str] | None = None
                   ) -> dict[Target, HostSample | str]:
        """Ask every host at once; each answer or the reason it is missing.
        names: the store's VMs (uuid -> name), for `managed_only`."""
        started = time.monotonic()
        futures = {}
        results: dict[Target, HostSample | str] = {}
        for target in targets:
            host = self._host(target)
            if host.pending is not None and not host.pending.done():
                results[target] = "the previous scrape's call has not returned"
                continue
            host.pending = self._pool.submit(self._sample, host, names)
            futures[target] = host.pending
        for target, future in futures.items():
            try:
                results[target] = future.result(
                    timeout=max(0.0, self.deadline - (time.monotonic() - started))
                )
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
        samples = self.sample_all(targets, names)
        yield from self.families(samples, names, uptimes)
        duration = GaugeMetricFamily("vmappliance_exporter_libvirt_scrape_duration_seconds",
                                     "Time the exporter took to read libvirt, all hosts.")
        duration.add_metric([], time.perf_counter() - started)
        yield duration

    def families(self, samples: dict[Target, HostSample | str], names: dict[str, str],
                 uptimes: dict[str, float]) -> list[Metric]:
        f = Families()
        for target, sample in samples.items():
            up = isinstance(sample, HostSample)
            f.host_up.add_metric([target.name], 1.0 if up else 0.0)
            if not isinstance(sample, HostSample):
                log.warning("libvirt host %s (%s): %s", target.name, target.uri, sample)
                continue
            try:
                host_families(f, target.name, sample.info, sample.free_memory, sample.domains)
            except Exception:
                log.exception("host families of %s", target.name)
            seen: set[str] = set()
            errors = 0
            managed_names = {names[uuid] for uuid, _, _ in sample.domains if uuid in names}
            for uuid, dom_name, stats in sample.domains:
                managed = uuid in names
                if (not managed and self.managed_only) or (
                    sample.ours is not None and uuid not in sample.ours
                ):
                    continue
                vm = names[uuid] if managed else dom_name
                if vm in seen or (not managed and vm in managed_names):
                    errors += 1
                    continue
                seen.add(vm)
                try:
                    rows = domain_rows(stats, uptimes.get(uuid) if managed else None)
                except Exception:
                    log.exception("stats of domain %s on %s", dom_name, target.name)
                    errors += 1
                    continue
                f.vm_info.add_metric([vm, target.name, dom_name, "true" if managed else "false"], 1)
                for family, extra, value in rows:
                    f.get(family).add_metric([vm, target.name, *extra], value)
            f.domain_errors.add_metric([target.name], errors)
        return f.all()

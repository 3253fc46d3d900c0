"""The families a scrape fills (collector.py reads libvirt): what each libvirt
stats key becomes, in tables, so coverage is easy to read; a domain's rows,
all or nothing; the host's families."""
from __future__ import annotations

import libvirt
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from appliance.virt.host import REASONS, STATES

# A family the collector adds samples to (both kinds have add_metric; Metric has not).
Family = GaugeMetricFamily | CounterMetricFamily
# (libvirt stats key, family name, help, scale to base units)
StatsTable = list[tuple[str, str, str, float]]

KIB = 1024
NS = 1e-9

# (stats key, family suffix, help, scale) -- a table, so coverage is easy to read.
VM_GAUGES: StatsTable = [
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
VM_COUNTERS: StatsTable = [
    ("cpu.time", "cpu_seconds", "CPU time the VM used.", NS),
    ("cpu.user", "cpu_user_seconds", "User CPU time of the VM's process.", NS),
    ("cpu.system", "cpu_system_seconds", "System CPU time of the VM's process.", NS),
    ("balloon.swap_in", "memory_swap_in_bytes", "Memory the guest swapped in.", KIB),
    ("balloon.swap_out", "memory_swap_out_bytes", "Memory the guest swapped out.", KIB),
    ("balloon.major_fault", "memory_major_faults", "Major page faults in the guest.", 1),
    ("balloon.minor_fault", "memory_minor_faults", "Minor page faults in the guest.", 1),
]
BLOCK_GAUGES: StatsTable = [
    ("capacity", "block_capacity_bytes", "Size of the disk as the guest sees it.", 1),
    ("allocation", "block_allocation_bytes", "Highest offset written in the disk's image.", 1),
    ("physical", "block_physical_bytes", "Size of the disk's image on the host.", 1),
]
BLOCK_COUNTERS: StatsTable = [
    ("rd.bytes", "block_read_bytes", "Bytes read from the disk.", 1),
    ("wr.bytes", "block_write_bytes", "Bytes written to the disk.", 1),
    ("rd.reqs", "block_read_requests", "Read requests to the disk.", 1),
    ("wr.reqs", "block_write_requests", "Write requests to the disk.", 1),
    ("fl.reqs", "block_flush_requests", "Flush requests to the disk.", 1),
    ("rd.times", "block_read_seconds", "Time spent reading the disk.", NS),
    ("wr.times", "block_write_seconds", "Time spent writing the disk.", NS),
    ("fl.times", "block_flush_seconds", "Time spent flushing the disk.", NS),
]
NET_COUNTERS: StatsTable = [
    ("rx.bytes", "network_receive_bytes", "Bytes received.", 1),
    ("rx.pkts", "network_receive_packets", "Packets received.", 1),
    ("rx.errs", "network_receive_errors", "Receive errors.", 1),
    ("rx.drop", "network_receive_drops", "Received packets dropped.", 1),
    ("tx.bytes", "network_transmit_bytes", "Bytes sent.", 1),
    ("tx.pkts", "network_transmit_packets", "Packets sent.", 1),
    ("tx.errs", "network_transmit_errors", "Transmit errors.", 1),
    ("tx.drop", "network_transmit_drops", "Sent packets dropped.", 1),
]
VCPU_COUNTERS: StatsTable = [
    ("time", "vcpu_seconds", "CPU time of one virtual CPU.", NS),
    ("wait", "vcpu_wait_seconds", "Time one virtual CPU waited for a host CPU.", NS),
]

VM_LABELS = ["vm", "host"]
# interface: net0, net1, ... in domain order; source: who counted, "host" (libvirt, the
# NIC's tap device) or "agent" (the guest's kernel, through its agent: agent_net.py).
# Both count "receive" as traffic into the guest.
NET_LABELS = ["interface", "source"]


class Families:
    """Every family made once per scrape, so that each appears once however many hosts."""

    def __init__(self) -> None:
        g, c = GaugeMetricFamily, CounterMetricFamily
        self.host_up = g(
            "vmappliance_host_up",
            "1 if the host's libvirt answered this scrape, else 0.",
            labels=["host"],
        )
        self.domain_errors = g(
            "vmappliance_exporter_domain_errors",
            "Domains left out of this scrape (bad stats or a name clash).",
            labels=["host"],
        )
        self.vm_info = g(
            "vmappliance_vm_info",
            "One per VM: its libvirt domain and whether the appliance manages it.",
            labels=["vm", "host", "domain", "managed"],
        )
        self.by_name: dict[str, Family] = {}
        self._define(
            g(
                "vmappliance_vm_state",
                "1 for the VM's current state and the reason libvirt gives.",
                labels=[*VM_LABELS, "state", "reason"],
            )
        )
        self._define(
            g(
                "vmappliance_vm_uptime_seconds",
                "Seconds since the appliance saw the VM start running (managed, running VMs only).",
                labels=VM_LABELS,
            )
        )
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
            self._define(c("vmappliance_vm_" + name, doc, labels=[*VM_LABELS, *NET_LABELS]))
        self._define(
            g(
                "vmappliance_vm_network_stats_available",
                "1 if the NIC's traffic counters are in this scrape, 0 if not (source=agent: the "
                "guest agent did not answer).",
                labels=[*VM_LABELS, *NET_LABELS],
            )
        )
        for name, doc in HOST_GAUGES:
            self._define(g("vmappliance_host_" + name, doc, labels=["host"]))

    def _define(self, family: Family) -> None:
        self.by_name[family.name] = family

    def get(self, name: str) -> Family:
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


def host_families(
    f: Families, host: str, info: list, free_memory: int, domains: list[tuple[str, str, dict]]
) -> None:
    _model, memory_mib, cpus, mhz, *_ = info
    active = [
        s
        for _, _, s in domains
        if s.get("state.state")
        not in (libvirt.VIR_DOMAIN_SHUTOFF, libvirt.VIR_DOMAIN_CRASHED, None)
    ]
    values = {
        "cpus": cpus, "cpu_mhz": mhz, "memory_total_bytes": memory_mib * 1024 * 1024,
        "memory_free_bytes": free_memory, "domains": len(domains), "running_domains": len(active),
        "vcpus_allocated": sum(s.get("vcpu.current", 0) for s in active),
        "memory_allocated_bytes": sum(s.get("balloon.current", 0) for s in active) * KIB,
    }
    for name, value in values.items():
        f.get("vmappliance_host_" + name).add_metric([host], value)


def _counter(name: str) -> str:
    # CounterMetricFamily adds _total itself; the family is named without it.
    return "vmappliance_vm_" + name


def domain_rows(stats: dict, uptime: float | None) -> list[tuple[str, list[str], float]]:
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
        labels = [f"net{index}", stats.get(prefix + "source", "host")]
        for key, name, _, scale in NET_COUNTERS:
            value = stats.get(prefix + key)
            if value is not None:
                rows.append((_counter(name), labels, float(value) * scale))
        available = 1 if prefix + "rx.bytes" in stats else 0
        rows.append(("vmappliance_vm_network_stats_available", labels, available))
    return rows

#!/usr/bin/env python3
"""Writes the Grafana dashboards of this folder (run it after editing; commit the JSON).

    python3 packaging/grafana/build_dashboards.py

Every panel queries the `${datasource}` Prometheus datasource variable, so the
JSON imports into a stock Grafana (Dashboards > Import) and asks for the
Prometheus that scrapes the appliance (job of packaging/prometheus/prometheus.yml).
"""
from __future__ import annotations

import json
from pathlib import Path

HERE = Path(__file__).resolve().parent
DS = {"type": "prometheus", "uid": "${datasource}"}


def datasource_var() -> dict:
    return {"name": "datasource", "label": "Prometheus", "type": "datasource", "query": "prometheus",
            "current": {}, "hide": 0, "refresh": 1, "options": [], "regex": ""}


def query_var(name: str, label: str, query: str, multi: bool = False, include_all: bool = False) -> dict:
    var = {"name": name, "label": label, "type": "query", "datasource": DS,
           "query": {"query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
           "definition": query, "refresh": 2, "sort": 1, "multi": multi, "includeAll": include_all,
           "current": {}, "hide": 0, "options": [], "regex": ""}
    if include_all:
        var["allValue"] = ".*"
    return var


class Board:
    def __init__(self, uid: str, title: str, variables: list[dict], description: str):
        self.uid, self.title, self.variables, self.description = uid, title, variables, description
        self.panels: list[dict] = []
        self.x = self.y = 0
        self.row_height = 0
        self.next_id = 1

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append({"id": self._id(), "type": "row", "title": title, "collapsed": False,
                            "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}, "panels": []})
        self.y += 1

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
            self.x = self.row_height = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1

    def panel(self, kind: str, title: str, targets: list[tuple[str, str]], unit: str = "short", w: int = 12,
              h: int = 8, description: str = "", instant: bool = False, **extra) -> None:
        if self.x + w > 24:
            self._newline()
        refs = "ABCDEFGH"
        panel = {
            "id": self._id(), "type": kind, "title": title, "description": description, "datasource": DS,
            "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                        "tooltip": {"mode": "multi", "sort": "desc"}},
            "targets": [{"refId": refs[i], "datasource": DS, "expr": expr, "legendFormat": legend,
                         "range": not instant, "instant": instant, **({"format": "table"} if kind == "table" else {})}
                        for i, (expr, legend) in enumerate(targets)],
        }
        if kind == "stat":
            panel["options"] = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                                "colorMode": "value", "graphMode": "area", "textMode": "auto"}
        panel.update(extra)
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def json(self) -> dict:
        return {
            "uid": self.uid, "title": self.title, "description": self.description,
            "tags": ["vm-appliance"], "timezone": "browser", "editable": True, "graphTooltip": 1,
            "schemaVersion": 38, "version": 1, "refresh": "30s", "time": {"from": "now-1h", "to": "now"},
            "templating": {"list": self.variables}, "annotations": {"list": []},
            "links": [{"type": "dashboards", "tags": ["vm-appliance"], "asDropdown": True, "title": "vm-appliance"}],
            "panels": self.panels,
            "__inputs": [{"name": "DS_PROMETHEUS", "label": "Prometheus", "type": "datasource",
                          "pluginId": "prometheus", "pluginName": "Prometheus"}],
            "__requires": [{"type": "grafana", "id": "grafana", "name": "Grafana", "version": "10.0.0"},
                           {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        }


RI = "$__rate_interval"
HV = 'host=~"$host"'
VMSEL = 'host=~"$host",vm=~"$vm"'


def overview() -> Board:
    b = Board("vmapp-vms-overview", "vm-appliance / VMs overview",
              [datasource_var(), query_var("host", "Host", "label_values(vmappliance_host_up, host)", True, True),
               query_var("vm", "VM", 'label_values(vmappliance_vm_info{host=~"$host"}, vm)', True, True)],
              "Every VM: states, CPU, memory, disk and network rates.")
    b.row("States")
    b.panel("stat", "VMs observed, by state", [("sum by (state) (vmappliance_vms_observed)", "{{state}}")], w=8,
            description="From the appliance's store (what the controller last saw).")
    b.panel("stat", "VMs desired, by state", [("sum by (state) (vmappliance_vms_desired)", "{{state}}")], w=8)
    b.panel("stat", "Domains on libvirt, by state",
            [(f"count by (state) (vmappliance_vm_state{{{VMSEL}}} == 1)", "{{state}}")], w=8)
    b.panel("timeseries", "Ready (running VMs)", [('vmappliance_vm_ready{vm=~"$vm"}', "{{vm}}")], w=24, h=6,
            description="1 if the VM's readiness probe passes (or it has none and runs); 0 while it is not ready.")
    b.panel("table", "VM states", [(f"vmappliance_vm_state{{{VMSEL}}} == 1", "")], w=24, instant=True,
            transformations=[{"id": "organize", "options": {"excludeByName": {"Time": True, "Value": True,
                                                                              "__name__": True}}}])
    b.row("CPU and memory")
    b.panel("timeseries", "CPU (cores busy)", [(f"rate(vmappliance_vm_cpu_seconds_total{{{VMSEL}}}[{RI}])",
                                               "{{vm}}")], unit="short")
    b.panel("timeseries", "Memory (balloon size)", [(f"vmappliance_vm_memory_current_bytes{{{VMSEL}}}", "{{vm}}")],
            unit="bytes")
    b.panel("timeseries", "QEMU resident memory", [(f"vmappliance_vm_memory_rss_bytes{{{VMSEL}}}", "{{vm}}")],
            unit="bytes")
    b.panel("timeseries", "Uptime", [(f"vmappliance_vm_uptime_seconds{{{VMSEL}}}", "{{vm}}")], unit="s")
    b.row("Disk and network")
    b.panel("timeseries", "Disk read", [(f"sum by (vm) (rate(vmappliance_vm_block_read_bytes_total{{{VMSEL}}}[{RI}]))",
                                         "{{vm}}")], unit="Bps")
    b.panel("timeseries", "Disk write",
            [(f"sum by (vm) (rate(vmappliance_vm_block_write_bytes_total{{{VMSEL}}}[{RI}]))", "{{vm}}")], unit="Bps")
    b.panel("timeseries", "Network receive",
            [(f"sum by (vm) (rate(vmappliance_vm_network_receive_bytes_total{{{VMSEL}}}[{RI}]))", "{{vm}}")],
            unit="Bps", description=NET_DESC)
    b.panel("timeseries", "Network transmit",
            [(f"sum by (vm) (rate(vmappliance_vm_network_transmit_bytes_total{{{VMSEL}}}[{RI}]))", "{{vm}}")],
            unit="Bps", description=NET_DESC)
    backups(b)
    return b


NET_DESC = ("Receive is into the guest. NICs with a host tap: libvirt's counters (source=host); "
            "user-mode NICs: the guest agent's (source=agent), none while the guest has no agent "
            "answering (vmappliance_vm_network_stats_available 0).")


def backups(b: Board) -> None:
    """Scheduled backups: the overdue alert's value, and each VM's last good backup."""
    vm = 'vm=~"$vm"'
    since = f"vmappliance_vm_backup_schedule_since_timestamp_seconds{{{vm}}}"
    counted_from = f"vmappliance_vm_backup_last_success_timestamp_seconds{{{vm}}} > {since} or {since}"
    b.row("Backups")
    b.panel("timeseries", "Backup age, in schedule intervals",
            [(f"(time() - ({counted_from})) / vmappliance_vm_backup_schedule_interval_seconds{{{vm}}}",
              "{{vm}}")], w=24,
            description="VMs with a scheduled backup policy: the age of the last good backup (or of the "
                        "schedule, if it started later) over the schedule's interval. Above 2 for 10 minutes: "
                        "VMApplianceBackupOverdue.")
    b.panel("timeseries", "Last good backup: size", [(f"vmappliance_vm_backup_last_size_bytes{{{vm}}}", "{{vm}}")],
            unit="bytes", description="Bytes on the target (an incremental holds only what changed).")
    b.panel("timeseries", "Last good backup: duration",
            [(f"vmappliance_vm_backup_last_duration_seconds{{{vm}}}", "{{vm}}")], unit="s")


def ratio(numerator: str, denominator: str, sel: str) -> str:
    return f"rate({numerator}{{{sel}}}[{RI}]) / rate({denominator}{{{sel}}}[{RI}])"


def rates_sum(a: str, b: str, sel: str) -> str:
    return f"rate({a}{{{sel}}}[{RI}]) + rate({b}{{{sel}}}[{RI}])"


def ratio_of_sums(a: str, b: str, by: str) -> str:
    return f"sum by ({by}) ({a}) / sum by ({by}) ({b})"


def vm_detail() -> Board:
    sel = 'vm="$vm"'
    b = Board("vmapp-vm-detail", "vm-appliance / VM detail",
              [datasource_var(), query_var("vm", "VM", "label_values(vmappliance_vm_info, vm)")],
              "One VM: state, CPU per vCPU, memory, each disk and interface.")
    b.row("State")
    b.panel("stat", "State", [(f"vmappliance_vm_state{{{sel}}} == 1", "{{state}} ({{reason}})")], w=6,
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "textMode": "name", "colorMode": "background"})
    b.panel("stat", "Ready", [(f"vmappliance_vm_ready{{{sel}}}", "")], w=3,
            description="Readiness probe passing (or none, and running). Running VMs only.")
    b.panel("stat", "Uptime", [(f"vmappliance_vm_uptime_seconds{{{sel}}}", "")], unit="s", w=3)
    b.panel("stat", "vCPUs", [(f"vmappliance_vm_vcpus{{{sel}}}", "current"),
                              (f"vmappliance_vm_vcpus_maximum{{{sel}}}", "maximum")], w=6)
    b.panel("stat", "Memory", [(f"vmappliance_vm_memory_maximum_bytes{{{sel}}}", "maximum")], unit="bytes", w=6)
    b.row("CPU")
    b.panel("timeseries", "CPU (cores busy)", [(f"rate(vmappliance_vm_cpu_seconds_total{{{sel}}}[{RI}])", "total"),
                                               (f"rate(vmappliance_vm_cpu_user_seconds_total{{{sel}}}[{RI}])", "user"),
                                               (f"rate(vmappliance_vm_cpu_system_seconds_total{{{sel}}}[{RI}])",
                                                "system")])
    b.panel("timeseries", "Per vCPU: running and waiting",
            [(f"rate(vmappliance_vm_vcpu_seconds_total{{{sel}}}[{RI}])", "vcpu {{vcpu}}"),
             (f"rate(vmappliance_vm_vcpu_wait_seconds_total{{{sel}}}[{RI}])", "vcpu {{vcpu}} wait")])
    b.row("Memory")
    b.panel("timeseries", "Memory", [(f"vmappliance_vm_memory_current_bytes{{{sel}}}", "balloon"),
                                     (f"vmappliance_vm_memory_maximum_bytes{{{sel}}}", "maximum"),
                                     (f"vmappliance_vm_memory_rss_bytes{{{sel}}}", "QEMU RSS")], unit="bytes", w=24)
    b.row("Disks")
    b.panel("timeseries", "Disk throughput",
            [(f"rate(vmappliance_vm_block_read_bytes_total{{{sel}}}[{RI}])", "{{disk}} read"),
             (f"rate(vmappliance_vm_block_write_bytes_total{{{sel}}}[{RI}])", "{{disk}} write")], unit="Bps")
    b.panel("timeseries", "Disk IOPS",
            [(f"rate(vmappliance_vm_block_read_requests_total{{{sel}}}[{RI}])", "{{disk}} read"),
             (f"rate(vmappliance_vm_block_write_requests_total{{{sel}}}[{RI}])", "{{disk}} write"),
             (f"rate(vmappliance_vm_block_flush_requests_total{{{sel}}}[{RI}])", "{{disk}} flush")], unit="iops")
    b.panel("timeseries", "Disk latency (time per request)",
            [(ratio("vmappliance_vm_block_read_seconds_total", "vmappliance_vm_block_read_requests_total", sel),
              "{{disk}} read"),
             (ratio("vmappliance_vm_block_write_seconds_total", "vmappliance_vm_block_write_requests_total", sel),
              "{{disk}} write")], unit="s")
    b.panel("timeseries", "Disk size", [(f"vmappliance_vm_block_capacity_bytes{{{sel}}}", "{{disk}} capacity"),
                                        (f"vmappliance_vm_block_allocation_bytes{{{sel}}}", "{{disk}} allocation"),
                                        (f"vmappliance_vm_block_physical_bytes{{{sel}}}", "{{disk}} physical")],
            unit="bytes", description="Block stats exist while the VM runs (libvirt would open every image "
                                      "of a shut-off VM).")
    b.row("Network")
    desc = NET_DESC
    b.panel("timeseries", "Network throughput",
            [(f"rate(vmappliance_vm_network_receive_bytes_total{{{sel}}}[{RI}])", "{{interface}} rx"),
             (f"rate(vmappliance_vm_network_transmit_bytes_total{{{sel}}}[{RI}])", "{{interface}} tx")],
            unit="Bps", description=desc)
    b.panel("timeseries", "Network errors and drops",
            [(rates_sum("vmappliance_vm_network_receive_errors_total", "vmappliance_vm_network_transmit_errors_total",
                        sel), "{{interface}} errors"),
             (rates_sum("vmappliance_vm_network_receive_drops_total", "vmappliance_vm_network_transmit_drops_total",
                        sel), "{{interface}} drops")],
            unit="pps", description=desc)
    return b


def hosts() -> Board:
    b = Board("vmapp-hosts", "vm-appliance / Hosts and capacity",
              [datasource_var(), query_var("host", "Host", "label_values(vmappliance_host_up, host)", True, True)],
              "libvirt hosts: reachability, CPU and memory capacity against what the VMs take; "
              "the cluster as the scheduler sees it.")
    b.row("Hosts")
    b.panel("stat", "libvirt reachable", [(f"vmappliance_host_up{{{HV}}}", "{{host}}")], w=8,
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "colorMode": "background", "textMode": "value_and_name"})
    b.panel("stat", "Domains (running / defined)", [(f"vmappliance_host_running_domains{{{HV}}}", "{{host}} running"),
                                                    (f"vmappliance_host_domains{{{HV}}}", "{{host}} defined")], w=8)
    b.panel("stat", "Domains left out of scrapes", [(f"vmappliance_exporter_domain_errors{{{HV}}}", "{{host}}")], w=8)
    b.row("Capacity")
    b.panel("timeseries", "vCPUs allocated / host CPUs",
            [(f"vmappliance_host_vcpus_allocated{{{HV}}} / vmappliance_host_cpus{{{HV}}}", "{{host}}")],
            unit="percentunit", description="Over 1: CPUs overcommitted.")
    b.panel("timeseries", "Memory allocated to VMs / host memory",
            [(f"vmappliance_host_memory_allocated_bytes{{{HV}}} / vmappliance_host_memory_total_bytes{{{HV}}}",
              "{{host}}")], unit="percentunit")
    b.panel("timeseries", "Host memory", [(f"vmappliance_host_memory_total_bytes{{{HV}}}", "{{host}} total"),
                                          (f"vmappliance_host_memory_free_bytes{{{HV}}}", "{{host}} free"),
                                          (f"vmappliance_host_memory_allocated_bytes{{{HV}}}", "{{host}} to VMs")],
            unit="bytes")
    b.panel("timeseries", "VM CPU use by host (cores busy)",
            [(f"sum by (host) (rate(vmappliance_vm_cpu_seconds_total{{{HV}}}[{RI}]))", "{{host}} used"),
             (f"vmappliance_host_cpus{{{HV}}}", "{{host}} CPUs")])
    b.panel("timeseries", "VM disk images on the host",
            [(f"sum by (host) (vmappliance_vm_block_physical_bytes{{{HV}}})", "{{host}} physical"),
             (f"sum by (host) (vmappliance_vm_block_capacity_bytes{{{HV}}})", "{{host}} capacity promised")],
            unit="bytes", description="Running VMs only.")
    b.panel("table", "Host CPUs", [(f"vmappliance_host_cpus{{{HV}}}", "{{host}}"),
                                   (f"vmappliance_host_cpu_mhz{{{HV}}}", "{{host}}")], instant=True)
    cluster(b)
    return b


def cluster(b: Board) -> None:
    """The scheduler's view: hosts' claims against what overcommit allows, and its decisions."""
    alloc, cap = "vmappliance_host_allocated", "vmappliance_host_capacity"
    sched = "vmappliance_scheduler_decision_seconds"
    b.row("Cluster")
    b.panel("stat", "Host state", [(f"vmappliance_host_state{{{HV}}} == 1", "{{host}} {{state}}")], w=8,
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "textMode": "name", "colorMode": "value"},
            description="Administrative state (enabled, disabled, maintenance); only enabled hosts take new VMs.")
    b.panel("stat", "Controller heartbeat", [(f"vmappliance_host_heartbeat_up{{{HV}}}", "{{host}}")], w=8,
            options={"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                     "colorMode": "background", "textMode": "value_and_name"},
            description="1 while the controller's heartbeat on the host is recent: the scheduler's view of up.")
    b.panel("stat", "VMs placed", [(f"vmappliance_host_vms{{{HV}}}", "{{host}}")], w=8,
            description="VMs whose claim the host holds, running or not.")
    b.panel("timeseries", "Allocated / capacity (after overcommit)",
            [(f"{alloc}{{{HV}}} / {cap}{{{HV}}}", "{{host}} {{resource}}")], unit="percentunit", w=24,
            description="What the placed VMs claim against what the overcommit ratios allow: at 1 the scheduler "
                        "places nothing more there. Alert at 0.9.")
    for resource, title, unit in (("vcpus", "vCPUs", "short"), ("memory_bytes", "Memory", "bytes"),
                                  ("disk_bytes", "Disk", "bytes")):
        sel = f'{HV},resource="{resource}"'
        b.panel("timeseries", f"{title}: allocated, capacity, physical",
                [(f"{alloc}{{{sel}}}", "{{host}} allocated"), (f"{cap}{{{sel}}}", "{{host}} capacity"),
                 (f"vmappliance_host_physical{{{sel}}}", "{{host}} physical")], unit=unit, w=8)
    b.panel("timeseries", "Scheduler decisions, by result",
            [(f"sum by (result) (rate({sched}_count[{RI}]))", "{{result}}")], unit="ops", w=8,
            description="no_valid_host: a VM that fits no host (the API answered 409, or an evacuation failed).")
    b.panel("timeseries", "Scheduler decision latency",
            [(f"histogram_quantile({q}, sum by (le) (rate({sched}_bucket[{RI}])))", f"p{int(q * 100)}")
             for q in (0.5, 0.99)], unit="s", w=8,
            description="One decision: reading hosts and claims from the store, filtering, weighing.")
    b.panel("timeseries", "Hosts rejected, by filter",
            [(f"sum by (filter) (rate(vmappliance_scheduler_rejections_total[{RI}]))", "{{filter}}")], unit="ops",
            w=8, description="Each rejected host counts once, under the first filter it failed.")


def appliance() -> Board:
    b = Board("vmapp-appliance", "vm-appliance / Appliance health and latency", [datasource_var()],
              "The appliance itself: API, operations, controller, exporter, events.")
    api = "vmappliance_api_request_duration_seconds"
    b.row("API")
    b.panel("timeseries", "Requests by route and status",
            [(f"sum by (route, method, status) (rate({api}_count[{RI}]))", "{{method}} {{route}} {{status}}")],
            unit="reqps")
    b.panel("timeseries", "Request latency percentiles",
            [(f"histogram_quantile({q}, sum by (le) (rate({api}_bucket[{RI}])))", f"p{int(q * 100)}")
             for q in (0.5, 0.9, 0.99)], unit="s")
    b.panel("timeseries", "p99 latency by route",
            [(f"histogram_quantile(0.99, sum by (le, route, method) (rate({api}_bucket[{RI}])))",
              "{{method}} {{route}}")], unit="s")
    b.panel("timeseries", "Error responses (5xx)",
            [(f'sum by (route) (rate({api}_count{{status=~"5.."}}[{RI}])) or sum(rate({api}_count[{RI}])) * 0',
              "{{route}}")], unit="reqps")
    b.row("Operations")
    b.panel("timeseries", "Operations finished, by kind and result",
            [(f"sum by (kind, status) (increase(vmappliance_operations_total[{RI}]))", "{{kind}} {{status}}")])
    b.panel("timeseries", "Operation duration p90 by kind",
            [(f"histogram_quantile(0.9, sum by (le, kind) (rate(vmappliance_operation_duration_seconds_bucket[{RI}])))",
              "{{kind}}")], unit="s")
    b.panel("stat", "Operations so far", [("sum by (status) (vmappliance_operations_total)", "{{status}}")], w=12)
    b.panel("stat", "Mean operation duration",
            [(ratio_of_sums("vmappliance_operation_duration_seconds_sum", "vmappliance_operation_duration_seconds_count",
                            "kind"), "{{kind}}")], unit="s", w=12)
    b.row("Controller and exporter")
    b.panel("timeseries", "Reconcile duration", [("vmappliance_controller_reconcile_seconds", "last resync")],
            unit="s", w=8)
    b.panel("stat", "Since last reconcile",
            [("time() - vmappliance_controller_last_reconcile_timestamp_seconds", "")], unit="s", w=4)
    b.panel("timeseries", "Exporter scrape duration",
            [("vmappliance_exporter_scrape_duration_seconds", "{{instance}} total"),
             ("vmappliance_exporter_libvirt_scrape_duration_seconds", "{{instance}} libvirt"),
             ("vmappliance_exporter_store_scrape_duration_seconds", "{{instance}} store"),
             ('scrape_duration_seconds{job="vm-appliance"}', "{{instance}} as Prometheus saw it")],
            unit="s", w=12)
    b.row("Events")
    b.panel("timeseries", "Events by kind", [(f"sum by (kind) (increase(vmappliance_events_total[{RI}]))",
                                              "{{kind}}")], w=24,
            description="liveness-failed, converging, forced-off, host-down ... rising: see `vmctl events`.")
    return b


def main() -> None:
    for name, board in [("vms-overview", overview()), ("vm-detail", vm_detail()), ("hosts", hosts()),
                        ("appliance", appliance())]:
        (HERE / f"{name}.json").write_text(json.dumps(board.json(), indent=2) + "\n")


if __name__ == "__main__":
    main()

"""The cluster's CPU model (issue 14, part F): every host's CPU is recorded
(hosts.cpu_xml) when the controller connects to it, and the baseline of all of
them (libvirt's baselineHypervisorCPU, migratable features only) is kept in
the store's meta "cluster_cpu", recomputed when a host joins or leaves. VMs
with cpu.mode "cluster" are defined with it, so that a live migration to any
host cannot fail on a missing CPU feature.

A host whose CPU lacks features of the model that running VMs were started
with (read from their domain XML) is warned about (an event, and the host's
cpu_warning says which features): those VMs cannot live-migrate there until
they restart on the new, lower baseline; new VMs get the new baseline at once.
The warnings are judged again when a host connects, when the baseline changes,
and when the running cluster VMs change (the loop's follow() after lifecycle
events and resyncs); a warning no running VM justifies is cleared."""
from __future__ import annotations

import json
import logging
from typing import Any

from appliance.controller.context import Context, HostLink
from appliance.model import VMState
from appliance.model.cpu import CpuMode, cpu_of
from appliance.virt.cpu_xml import model_parts, running_cpu
from appliance.virt.driver import DriverError

log = logging.getLogger("appliance.controller")
META_KEY = "cluster_cpu"
MAX_SHOWN_FEATURES = 12
MAX_JUDGED = 256  # libvirt's answers kept (hosts x distinct CPUs of running VMs)
ACTIVE = (VMState.RUNNING, VMState.PAUSED, VMState.MIGRATING, VMState.STARTING)


def current(store: Any) -> dict[str, Any] | None:
    """The stored cluster CPU model: {xml, model, vendor, features, hosts, computed}."""
    raw = store.get_meta(META_KEY)
    return json.loads(raw) if raw else None


def cluster_cpu_xml(store: Any) -> str | None:
    model = current(store)
    return model["xml"] if model else None


class ClusterCpu:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self._followed: tuple | None = None  # the running cluster VMs last judged (follow)
        # (host, host CPU, a VM's CPU) -> (the host runs it, features it lacks): libvirt's answers
        self._judged: dict[tuple[str, str, str], tuple[bool, frozenset[str]]] = {}

    def host_connected(self, link: HostLink) -> None:
        """Record the host's CPU; recompute; warn when it lacks what running VMs use."""
        try:
            cpu = link.driver.cpu_xml(self.ctx.domain_type)
        except DriverError as err:
            log.warning("host %s: its CPU could not be read: %s", link.name, err)
            return
        store = self.ctx.store
        with store.transaction():
            if not store.host_exists(link.name):
                return
            store.update_host(link.name, cpu_xml=cpu)
        if not self.recompute():
            self.judge()

    def _running_users(self, with_xml: bool = False) -> list[dict]:
        return [row for row in self.ctx.store.vms_in_states(ACTIVE, with_xml=with_xml)
                if cpu_of(row["spec"]).get("mode", CpuMode.CLUSTER) == CpuMode.CLUSTER]

    def follow(self) -> None:
        """After a resync or lifecycle events: judge every host's warning again
        when the running cluster VMs changed (one started, stopped, was deleted
        or moved). One store query when nothing changed."""
        users = tuple(sorted((row["id"], row["host"] or "", row["state_changed"] or 0)
                             for row in self._running_users()))
        if users != self._followed:
            self.judge()

    def judge(self) -> None:
        """Each connected host's cpu_warning: the running cluster VMs elsewhere
        whose CPU (the model they booted with, from their domain XML) it cannot
        run, and the features it lacks; cleared when there is none."""
        users = self._running_users(with_xml=True)
        self._followed = tuple(sorted((row["id"], row["host"] or "", row["state_changed"] or 0)
                                      for row in users))
        by_cpu: dict[str, list[dict]] = {}  # a CPU definition -> the running VMs that have it
        for row in users:
            cpu = running_cpu(row.get("domain_xml") or "")
            if cpu is not None:
                by_cpu.setdefault(cpu, []).append(row)
        if len(self._judged) > MAX_JUDGED:
            self._judged.clear()
        for link in self.ctx.links.all():
            if link.connected:
                self._judge_host(link, by_cpu)

    def _judge_host(self, link: HostLink, by_cpu: dict[str, list[dict]]) -> None:
        store = self.ctx.store
        if not store.host_exists(link.name):
            return
        host_cpu = store.get_host(link.name).get("cpu_xml")
        if not host_cpu:
            return
        missing: set[str] = set()
        models, count = set(), 0
        for cpu, rows in by_cpu.items():
            elsewhere = [row for row in rows if row["host"] != link.name]  # those here run here
            if not elsewhere:
                continue
            try:
                runs, lacking = self._runs(link, host_cpu, cpu)
            except DriverError as err:
                log.warning("host %s: CPU comparison failed: %s", link.name, err)
                return
            if lacking or not runs:
                missing |= lacking
                count += len(elsewhere)
                parts = model_parts(cpu)
                models.add(parts[0] if parts else "?")
        warning = None
        if count:
            shown = sorted(missing)
            listed = ", ".join(shown[:MAX_SHOWN_FEATURES]) + (
                f" and {len(shown) - MAX_SHOWN_FEATURES} more"
                if len(shown) > MAX_SHOWN_FEATURES else "")
            warning = (f"this host's CPU cannot run the cluster model {', '.join(sorted(models))} "
                       f"that {count} running VM(s) use"
                       + (f" (missing: {listed})" if shown else "")
                       + "; they cannot live-migrate here until restarted")
        with store.transaction():
            if not store.host_exists(link.name):
                return
            before = store.get_host(link.name).get("cpu_warning") or None
            if before == warning:
                return
            store.update_host(link.name, cpu_warning=warning)
            if warning:
                store.add_event("host-cpu-incompatible", f"host {link.name}: {warning}")
            else:
                store.add_event("host-cpu-compatible", f"host {link.name}: its CPU runs the "
                                "model of every running cluster VM again")

    def _runs(self, link: HostLink, host_cpu: str, cpu: str) -> tuple[bool, frozenset[str]]:
        """compareHypervisorCPU on the host itself, and the features it lacks by name."""
        key = (link.name, host_cpu, cpu)
        if key not in self._judged:
            virttype = self.ctx.domain_type
            runs = link.driver.runs_cpu(virttype, cpu)
            lacking = link.driver.cpu_features(virttype, cpu) \
                - link.driver.cpu_features(virttype, host_cpu)
            self._judged[key] = (runs, frozenset(lacking))
        return self._judged[key]

    def recompute(self) -> bool:
        """The baseline of every recorded host CPU, when the set of hosts changed;
        then every host's warning judged again. True when a new one was recorded."""
        store = self.ctx.store
        cpus = {h["name"]: h["cpu_xml"] for h in store.list_hosts() if h.get("cpu_xml")}
        model = current(store)
        if not cpus or (model and model["hosts"] == sorted(cpus)
                        and model.get("virttype") == self.ctx.domain_type):
            return False
        links = [link for link in self.ctx.links.all() if link.connected]
        if not links:
            return False
        virttype = self.ctx.domain_type
        try:
            xml = links[0].driver.baseline_cpu(virttype, [cpus[name] for name in sorted(cpus)])
            features = sorted(links[0].driver.cpu_features(virttype, xml))
        except DriverError as err:
            log.warning("the cluster CPU baseline failed: %s", err)
            store.add_event("cluster-cpu", f"the cluster CPU baseline failed: {err.reason}")
            return False
        parts = model_parts(xml)
        name, vendor = (parts[0], parts[1]) if parts else ("", None)
        record = {"xml": xml, "model": name, "vendor": vendor, "features": features,
                  "hosts": sorted(cpus), "virttype": virttype, "computed": self.ctx.clock()}
        with store.transaction():
            store.set_meta(META_KEY, json.dumps(record))
            store.add_event("cluster-cpu", f"cluster CPU model: {name} with {len(features)} "
                            f"features, the baseline of {', '.join(sorted(cpus))}")
        self.judge()
        return True

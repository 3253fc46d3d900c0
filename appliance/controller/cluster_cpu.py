"""The cluster's CPU model (issue 14, part F): every host's CPU is recorded
(hosts.cpu_xml) when the controller connects to it, and the baseline of all of
them (libvirt's baselineHypervisorCPU, migratable features only) is kept in
the store's meta "cluster_cpu", recomputed when a host joins or leaves. VMs
with cpu.mode "cluster" are defined with it, so that a live migration to any
host cannot fail on a missing CPU feature.

A host that joins with a CPU lacking features of the model that running VMs
were started with is warned about (an event, and the host's cpu_warning says
which features): those VMs cannot live-migrate there until they restart on the
new, lower baseline; new VMs get the new baseline at once."""
from __future__ import annotations

import json
import logging
from typing import Any

from appliance.controller.context import Context, HostLink
from appliance.model import VMState
from appliance.model.cpu import CpuMode, cpu_of
from appliance.virt.cpu_xml import model_parts
from appliance.virt.driver import DriverError

log = logging.getLogger("appliance.controller")
META_KEY = "cluster_cpu"
MAX_SHOWN_FEATURES = 12
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

    def host_connected(self, link: HostLink) -> None:
        """Record the host's CPU; warn when it lacks what running VMs use; recompute."""
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
        if cpu is not None:
            self._check_joining(link, cpu)
        self.recompute()

    def _running_users(self) -> list[dict]:
        return [row for row in self.ctx.store.vms_in_states(ACTIVE)
                if cpu_of(row["spec"]).get("mode", CpuMode.CLUSTER) == CpuMode.CLUSTER]

    def _check_joining(self, link: HostLink, cpu: str) -> None:
        """compareHypervisorCPU on the host itself, and the missing features by name."""
        model = current(self.ctx.store)
        store = self.ctx.store
        warning = None
        users = self._running_users() if model else []
        if model and users:
            try:
                runs = link.driver.runs_cpu(self.ctx.domain_type, model["xml"])
                missing = sorted(set(model["features"])
                                 - link.driver.cpu_features(self.ctx.domain_type, cpu))
            except DriverError as err:
                log.warning("host %s: CPU comparison failed: %s", link.name, err)
                return
            if missing or not runs:
                shown = ", ".join(missing[:MAX_SHOWN_FEATURES]) + (
                    f" and {len(missing) - MAX_SHOWN_FEATURES} more"
                    if len(missing) > MAX_SHOWN_FEATURES else "")
                warning = (f"this host's CPU cannot run the cluster model {model['model']} that "
                           f"{len(users)} running VM(s) use" + (f" (missing: {shown})" if missing
                                                                else "")
                           + "; they cannot live-migrate here until restarted")
        with store.transaction():
            host = store.get_host(link.name)
            if (host.get("cpu_warning") or None) != warning:
                store.update_host(link.name, cpu_warning=warning)
                if warning:
                    store.add_event("host-cpu-incompatible", f"host {link.name}: {warning}")

    def recompute(self) -> None:
        """The baseline of every recorded host CPU, when the set of hosts changed."""
        store = self.ctx.store
        cpus = {h["name"]: h["cpu_xml"] for h in store.list_hosts() if h.get("cpu_xml")}
        model = current(store)
        if not cpus or (model and model["hosts"] == sorted(cpus)
                        and model.get("virttype") == self.ctx.domain_type):
            return
        links = [link for link in self.ctx.links.all() if link.connected]
        if not links:
            return
        virttype = self.ctx.domain_type
        try:
            xml = links[0].driver.baseline_cpu(virttype, [cpus[name] for name in sorted(cpus)])
            features = sorted(links[0].driver.cpu_features(virttype, xml))
        except DriverError as err:
            log.warning("the cluster CPU baseline failed: %s", err)
            store.add_event("cluster-cpu", f"the cluster CPU baseline failed: {err.reason}")
            return
        parts = model_parts(xml)
        name, vendor = (parts[0], parts[1]) if parts else ("", None)
        record = {"xml": xml, "model": name, "vendor": vendor, "features": features,
                  "hosts": sorted(cpus), "virttype": virttype, "computed": self.ctx.clock()}
        with store.transaction():
            store.set_meta(META_KEY, json.dumps(record))
            store.add_event("cluster-cpu", f"cluster CPU model: {name} with {len(features)} "
                            f"features, the baseline of {', '.join(sorted(cpus))}")

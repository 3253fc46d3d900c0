"""Project families: each project's usage and quota, from the store at each
scrape (one aggregate query for the usage, one read of the projects).

resource is vms, vcpus, memory_bytes or disk_bytes (the host families' names
and units), counted as appliance/quotas.py counts them for the check. A
resource without a limit (unlimited, the default) has no quota series, so
usage / quota is empty for it and no alert can fire on it."""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily, Metric

from appliance.quotas import GIB, MIB
from appliance.store import Store

# (quota resource, metric resource, scale of the quota's unit to the metric's)
RESOURCES = (("vms", "vms", 1), ("cpus", "vcpus", 1), ("memory_mib", "memory_bytes", MIB),
             ("disk_gib", "disk_bytes", GIB))


def project_families(store: Store) -> list[Metric]:
    usage = GaugeMetricFamily(
        "vmappliance_project_usage",
        "What a project's VMs (running or not, not being deleted) hold, as its quota counts "
        "it (resource = vms, vcpus, memory_bytes, disk_bytes).",
        labels=["project", "resource"],
    )
    quota = GaugeMetricFamily(
        "vmappliance_project_quota",
        "A project's limit of a resource; absent when unlimited.",
        labels=["project", "resource"],
    )
    used = store.usage_by_project()
    for row in store.list_projects():
        name, limits = row["name"], row["quota"] or {}
        figures = dict(zip(("vms", "vcpus", "memory_bytes", "disk_bytes"),
                           used.get(name, (0, 0, 0, 0)), strict=True))
        figures["memory_bytes"] *= MIB  # the store sums MiB
        for key, resource, scale in RESOURCES:
            usage.add_metric([name, resource], figures[resource])
            if limits.get(key) is not None:
                quota.add_metric([name, resource], limits[key] * scale)
    return [usage, quota]

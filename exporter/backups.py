"""Backup families, from the store at each scrape (three queries): each VM's last
good backup (when it started, how long it took, its size on the target) and,
for each VM whose effective policy has a schedule, the schedule's interval and
since when the controller has run it.

The alert VMApplianceBackupOverdue (packaging/prometheus/alerts.yml) compares
the age of max(last good backup, schedule since) with twice the interval: a VM
with no good backup is overdue two intervals after its schedule was set, and a
schedule just set gets that grace too. `vm` is the VM's name as the other VM
families give it (PROJECT/NAME outside the default project); a deleted VM's
series end with it.
"""
from __future__ import annotations

from prometheus_client.core import GaugeMetricFamily, Metric

from appliance import backup_schedule
from appliance.access.principal import qualified_name
from appliance.errors import Invalid
from appliance.store import Store


def backup_families(store: Store) -> list[Metric]:
    g = GaugeMetricFamily
    last = g("vmappliance_vm_backup_last_success_timestamp_seconds",
             "When the VM's newest good backup started (Unix time).", labels=["vm"])
    duration = g("vmappliance_vm_backup_last_duration_seconds",
                 "How long the VM's newest good backup took.", labels=["vm"])
    size = g("vmappliance_vm_backup_last_size_bytes",
             "Bytes the VM's newest good backup holds on its target (an incremental: "
             "only what changed).", labels=["vm"])
    interval = g("vmappliance_vm_backup_schedule_interval_seconds",
                 "The backup schedule's interval, for each VM with a scheduled policy "
                 "(its own or its project's; monthly: 31 days).", labels=["vm"])
    since = g("vmappliance_vm_backup_schedule_since_timestamp_seconds",
              "Since when the controller has run the VM's current backup schedule (Unix time).",
              labels=["vm"])
    for row in store.last_good_backups():
        vm = [qualified_name(row["project"], row["vm_name"])]
        last.add_metric(vm, float(row["created"]))
        if row["finished"] is not None:
            duration.add_metric(vm, max(0.0, float(row["finished"]) - float(row["created"])))
        if row["size"] is not None:
            size.add_metric(vm, float(row["size"]))
    records = store.backup_schedules()
    for row in store.scheduled_vms():
        try:
            seconds = backup_schedule.interval_of(row["policy"]["schedule"])
        except Invalid:
            continue
        vm = [qualified_name(row["project"], row["name"])]
        interval.add_metric(vm, float(seconds))
        record = records.get(row["id"])
        # Only the schedule the controller runs: a record of an older one is not this one's.
        if record is not None and record["schedule"] == row["policy"]["schedule"]:
            since.add_metric(vm, float(record["since"]))
    return [last, duration, size, interval, since]

"""Backup families (exporter/backups.py) from the store: each VM's last good
backup, and the schedule of each scheduled VM."""
from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from appliance.config import Config
from appliance.store import Store
from exporter.appliance import ApplianceCollector
from tests.exporter.test_collector import promtool_check


@pytest.fixture
def store(tmp_path) -> Store:
    cfg = Config(home=tmp_path / "home", libvirt_uri="test:///default")
    cfg.prepare()
    return Store(cfg.db_path)


def add_vm(store: Store, vm_id: str, name: str, backup: dict | None = None,
           project: str = "default", desired: str = "running") -> None:
    store.insert_vm({"id": vm_id, "name": name, "project": project,
                     "spec": {"name": name, "backup": backup}, "desired_state": desired,
                     "observed_state": "running", "generation": 1, "created": 0.0})


def add_backup(store: Store, backup_id: str, vm_id: str, created: float, status: str = "good",
               finished: float | None = None, size: int | None = None) -> None:
    store.db.table("backups").insert({
        "id": backup_id, "vm_id": vm_id, "vm_name": "stale-name", "project": "default",
        "target": "nas", "kind": "full", "chain": backup_id, "status": status, "scheduled": 1,
        "created": created, "finished": finished, "size": size})


def collect(store: Store):
    registry = CollectorRegistry()
    registry.register(ApplianceCollector(store))
    return registry


def test_last_good_backup_per_vm_and_the_schedule_of_scheduled_vms(store):
    add_vm(store, "v1", "web1", {"schedule": "daily 02:00", "keep_daily": 7})
    add_vm(store, "v2", "db1")  # no policy of its own; the project's has none either
    add_vm(store, "v3", "gone", {"schedule": "hourly", "keep_last": 1}, desired="deleted")
    add_backup(store, "b1", "v1", 1000.0, finished=1100.0, size=5 << 20)
    add_backup(store, "b2", "v1", 2000.0, finished=2030.0, size=1 << 20)
    add_backup(store, "b3", "v1", 3000.0, status="failed", finished=3001.0)  # not a success
    add_backup(store, "b4", "v1", 4000.0, status="running")
    add_backup(store, "b5", "v2", 1500.0, finished=1600.0, size=7)
    add_backup(store, "b6", "deleted-vm", 1700.0, finished=1800.0, size=7)
    store.set_backup_schedule("v1", "daily 02:00", 500.0)
    value = collect(store).get_sample_value
    # By the VM's current name, not the name kept in the backup row.
    assert value("vmappliance_vm_backup_last_success_timestamp_seconds", {"vm": "web1"}) == 2000.0
    assert value("vmappliance_vm_backup_last_duration_seconds", {"vm": "web1"}) == 30.0
    assert value("vmappliance_vm_backup_last_size_bytes", {"vm": "web1"}) == 1 << 20
    assert value("vmappliance_vm_backup_last_success_timestamp_seconds", {"vm": "db1"}) == 1500.0
    assert value("vmappliance_vm_backup_last_success_timestamp_seconds",
                 {"vm": "stale-name"}) is None  # a deleted VM's backups are not measured
    assert value("vmappliance_vm_backup_schedule_interval_seconds", {"vm": "web1"}) == 86400
    assert value("vmappliance_vm_backup_schedule_since_timestamp_seconds", {"vm": "web1"}) == 500.0
    assert value("vmappliance_vm_backup_schedule_interval_seconds", {"vm": "db1"}) is None
    assert value("vmappliance_vm_backup_schedule_interval_seconds", {"vm": "gone"}) is None


def test_a_projects_schedule_applies_to_its_vms_without_one(store):
    store.insert_project({"name": "web", "description": "", "quota": {}, "created": 0.0,
                          "backup": {"schedule": "weekly sun 03:00", "keep_weekly": 4}})
    add_vm(store, "v1", "a", project="web")
    add_vm(store, "v2", "b", {"keep_last": 3}, project="web")  # its own, without a schedule
    add_vm(store, "v3", "c", {"schedule": "hourly", "keep_last": 3}, project="web")
    store.set_backup_schedule("v1", "daily 01:00", 10.0)  # the record of a schedule since changed
    value = collect(store).get_sample_value
    assert value("vmappliance_vm_backup_schedule_interval_seconds", {"vm": "web/a"}) == 7 * 86400
    assert value("vmappliance_vm_backup_schedule_since_timestamp_seconds", {"vm": "web/a"}) is None
    assert value("vmappliance_vm_backup_schedule_interval_seconds", {"vm": "web/b"}) is None
    assert value("vmappliance_vm_backup_schedule_interval_seconds", {"vm": "web/c"}) == 3600


def test_the_families_are_declared_even_without_backups_and_promtool_accepts_them(store):
    text = generate_latest(collect(store)).decode()
    for name in ("last_success_timestamp_seconds", "last_duration_seconds", "last_size_bytes",
                 "schedule_interval_seconds", "schedule_since_timestamp_seconds"):
        assert f"# TYPE vmappliance_vm_backup_{name} gauge" in text
    add_vm(store, "v1", "web1", {"schedule": "hourly", "keep_last": 1})
    add_backup(store, "b1", "v1", 1000.0, finished=1100.0, size=10)
    store.set_backup_schedule("v1", "hourly", 500.0)
    promtool_check(generate_latest(collect(store)))

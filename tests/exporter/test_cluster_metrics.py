"""Several hosts: the host families from the store (capacity after overcommit, claims, state,
heartbeat) and the scheduler's decision histogram and rejections, in one process and
shared between processes as under `vmctl serve`."""
from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
from falcon import testing
from prometheus_client import CollectorRegistry, generate_latest

from appliance import metrics_scheduler, placement
from appliance.api.app import create_app
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store
from exporter.appliance import ApplianceCollector
from tests.appliance_process import ROOT
from tests.exporter.test_collector import promtool_check

MIB = 1024 * 1024
GIB = 1024 ** 3
NOW = 1_000_000.0


@pytest.fixture
def config(tmp_path) -> Config:
    cfg = Config(home=tmp_path / "home", libvirt_uri="test:///default", heartbeat_age=3600)
    cfg.prepare()
    return cfg


@pytest.fixture
def store(config) -> Store:
    return Store(config.db_path)


def add_host(store, name, *, state="enabled", up=1, last_seen=NOW - 5, cpus=4, memory_mib=8192, disk_gib=100,
             cpu_ratio=4.0, ram_ratio=1.5, disk_ratio=1.0, reserved_memory_mib=512):
    info = {"arch": "x86_64", "cpus": cpus, "memory_mib": memory_mib, "disk_bytes": disk_gib * GIB,
            "disk_free_bytes": disk_gib * GIB // 4}
    store.upsert_host({"name": name, "uri": "test:///default", "state": state, "up": up, "last_seen": last_seen,
                       "info": info, "cpu_ratio": cpu_ratio, "ram_ratio": ram_ratio, "disk_ratio": disk_ratio,
                       "reserved_memory_mib": reserved_memory_mib, "labels": {}, "storage": "shared"})


def spec(name, cpus, memory, disk_mib=0):
    return {"name": name, "cpus": cpus, "memory": memory, "image": "demo",
            "disks": [{"size": disk_mib}] if disk_mib else []}


def add_vm(store, vm_id, host, cpus, memory, disk_mib=0):
    store.insert_vm({"id": vm_id, "name": vm_id, "spec": spec(vm_id, cpus, memory, disk_mib),
                     "desired_state": "running", "observed_state": "running", "generation": 1, "created": 0.0,
                     "host": host})


def host_registry(store, heartbeat_age=60.0) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ApplianceCollector(store, heartbeat_age=heartbeat_age, clock=lambda: NOW))
    return registry


def test_host_families_are_what_the_scheduler_compares(store):
    store.insert_image({"name": "demo", "path": "/x", "format": "qcow2", "virtual_size": 2 * GIB})
    add_host(store, "h1")
    add_host(store, "h2", state="maintenance", cpus=8, memory_mib=16384, cpu_ratio=2.0, ram_ratio=1.0,
             reserved_memory_mib=0)
    add_host(store, "h3", state="disabled", up=0, last_seen=NOW - 300)
    add_vm(store, "a", "h1", 2, 1024, disk_mib=1024)
    add_vm(store, "b", "h1", 4, 2048)
    add_vm(store, "c", "h2", 1, 512)
    # c is migrating to h1: h1 holds its claim too (as placement counts it)
    store.add_operation("op1", {"id": "c", "name": "c"}, "migrate", {"target": "h1"})
    registry = host_registry(store)
    value = registry.get_sample_value

    def res(host, resource):
        return {"host": host, "resource": resource}

    # physical (inventory), ratios, capacity = physical x ratio (memory: minus reserved)
    assert value("vmappliance_host_physical", res("h1", "vcpus")) == 4
    assert value("vmappliance_host_physical", res("h1", "memory_bytes")) == 8192 * MIB
    assert value("vmappliance_host_physical", res("h1", "disk_bytes")) == 100 * GIB
    assert value("vmappliance_host_overcommit_ratio", res("h1", "vcpus")) == 4.0
    assert value("vmappliance_host_overcommit_ratio", res("h1", "memory_bytes")) == 1.5
    assert value("vmappliance_host_reserved_memory_bytes", {"host": "h1"}) == 512 * MIB
    assert value("vmappliance_host_capacity", res("h1", "vcpus")) == 16
    assert value("vmappliance_host_capacity", res("h1", "memory_bytes")) == (8192 * 1.5 - 512) * MIB
    assert value("vmappliance_host_capacity", res("h1", "disk_bytes")) == 100 * GIB
    assert value("vmappliance_host_capacity", res("h2", "vcpus")) == 16
    assert value("vmappliance_host_capacity", res("h2", "memory_bytes")) == 16384 * MIB
    # allocated: a + b + c (moving in); disks: the image's virtual size + the extra disk
    assert value("vmappliance_host_allocated", res("h1", "vcpus")) == 2 + 4 + 1
    assert value("vmappliance_host_allocated", res("h1", "memory_bytes")) == (1024 + 2048 + 512) * MIB
    assert value("vmappliance_host_allocated", res("h1", "disk_bytes")) == 3 * 2 * GIB + 1024 * MIB
    assert value("vmappliance_host_allocated", res("h2", "vcpus")) == 1
    assert value("vmappliance_host_allocated", res("h3", "vcpus")) == 0
    assert value("vmappliance_host_vms", {"host": "h1"}) == 2
    assert value("vmappliance_host_vms", {"host": "h2"}) == 1
    assert value("vmappliance_host_vms", {"host": "h3"}) == 0
    assert value("vmappliance_host_storage_free_bytes", {"host": "h1"}) == 25 * GIB  # a quarter of 100 GiB free
    # the same numbers the scheduler sees
    seen = {h.name: h for h in placement.host_states(store, NOW, 60.0)}
    for name, h in seen.items():
        assert value("vmappliance_host_allocated", res(name, "vcpus")) == h.allocated_cpus
        assert value("vmappliance_host_allocated", res(name, "memory_bytes")) == h.allocated_memory_mib * MIB
        assert value("vmappliance_host_capacity", res(name, "vcpus")) == h.capacity_cpus
        assert value("vmappliance_host_capacity", res(name, "memory_bytes")) == h.capacity_memory_mib * MIB
        assert value("vmappliance_host_capacity", res(name, "disk_bytes")) == pytest.approx(h.capacity_disk_gib * GIB)
        assert value("vmappliance_host_heartbeat_up", {"host": name}) == float(h.up)
    # administrative state, one-hot
    for host, current in (("h1", "enabled"), ("h2", "maintenance"), ("h3", "disabled")):
        for state in ("enabled", "disabled", "maintenance"):
            assert value("vmappliance_host_state", {"host": host, "state": state}) == (1.0 if state == current else 0.0)
    # heartbeat: h3 is down and stale
    assert value("vmappliance_host_heartbeat_up", {"host": "h1"}) == 1
    assert value("vmappliance_host_heartbeat_up", {"host": "h3"}) == 0
    assert value("vmappliance_host_last_heartbeat_timestamp_seconds", {"host": "h3"}) == NOW - 300
    promtool_check(generate_latest(registry))


def test_a_stale_heartbeat_is_down_even_if_the_row_says_up(store):
    add_host(store, "h1", up=1, last_seen=NOW - 30)
    assert host_registry(store, heartbeat_age=60).get_sample_value("vmappliance_host_heartbeat_up", {"host": "h1"}) == 1
    assert host_registry(store, heartbeat_age=10).get_sample_value("vmappliance_host_heartbeat_up", {"host": "h1"}) == 0


def test_unknown_inventory_has_no_capacity_so_no_ratio_can_fire(store):
    store.upsert_host({"name": "new", "uri": "test:///default", "state": "enabled", "up": 0, "last_seen": None,
                       "info": {}, "cpu_ratio": None, "ram_ratio": None, "disk_ratio": None,
                       "reserved_memory_mib": None, "labels": {}, "storage": ""})
    add_vm(store, "a", "new", 2, 1024)
    value = host_registry(store).get_sample_value
    assert value("vmappliance_host_allocated", {"host": "new", "resource": "vcpus"}) == 2
    assert value("vmappliance_host_capacity", {"host": "new", "resource": "vcpus"}) is None
    assert value("vmappliance_host_physical", {"host": "new", "resource": "memory_bytes"}) is None
    # placement's defaults when a ratio is not set
    assert value("vmappliance_host_overcommit_ratio", {"host": "new", "resource": "vcpus"}) == 16.0
    assert value("vmappliance_host_overcommit_ratio", {"host": "new", "resource": "memory_bytes"}) == 1.5
    assert value("vmappliance_host_last_heartbeat_timestamp_seconds", {"host": "new"}) is None
    assert value("vmappliance_host_heartbeat_up", {"host": "new"}) == 0


def scheduler_registry() -> CollectorRegistry:
    registry = CollectorRegistry()
    for collector in metrics_scheduler.collectors():
        registry.register(collector)
    return registry


def snapshot() -> dict[tuple, float]:
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for metric in scheduler_registry().collect() for s in metric.samples if not s.name.endswith("_created")}


def delta(before, after, name, **labels) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_observe_decision_fills_the_histogram_and_the_rejections():
    before = snapshot()
    metrics_scheduler.observe_decision(0.003, "placed", {"RamFilter": 2, "CoreFilter": 1})
    metrics_scheduler.observe_decision(0.2, "no_valid_host", {"RamFilter": 3})
    metrics_scheduler.observe_decision(0.1, "bogus-result")  # logged, never raised
    after = snapshot()
    hist = "vmappliance_scheduler_decision_seconds"
    assert delta(before, after, hist + "_count", result="placed") == 1
    assert delta(before, after, hist + "_sum", result="placed") == pytest.approx(0.003)
    assert delta(before, after, hist + "_bucket", result="placed", le="0.0025") == 0
    assert delta(before, after, hist + "_bucket", result="placed", le="0.005") == 1
    assert delta(before, after, hist + "_count", result="no_valid_host") == 1
    assert delta(before, after, hist + "_bucket", result="no_valid_host", le="0.1") == 0
    assert delta(before, after, hist + "_bucket", result="no_valid_host", le="0.25") == 1
    rej = "vmappliance_scheduler_rejections_total"
    assert delta(before, after, rej, filter="RamFilter") == 5
    assert delta(before, after, rej, filter="CoreFilter") == 1
    # every filter and both results exist before any decision uses them
    assert ("vmappliance_scheduler_rejections_total", (("filter", "ServerGroupAntiAffinityFilter"),)) in after
    promtool_check(generate_latest(scheduler_registry()))


def test_timed_placement_records_real_decisions(store, config):
    store.insert_image({"name": "demo", "path": "/x", "format": "qcow2", "virtual_size": GIB})
    add_host(store, "big", cpus=8, memory_mib=16384, cpu_ratio=1.0, ram_ratio=1.0, reserved_memory_mib=0)
    add_host(store, "small", cpus=1, memory_mib=1024, cpu_ratio=1.0, ram_ratio=1.0, reserved_memory_mib=0)
    add_host(store, "off", state="disabled")
    place = placement.place  # decorated with metrics_scheduler.timed_placement where it is defined
    before = snapshot()
    fits = place(store, config, spec("a", 2, 2048), None, NOW)
    too_big = place(store, config, spec("b", 64, 1024), None, NOW)
    after = snapshot()
    assert fits.host == "big" and too_big.host is None
    hist = "vmappliance_scheduler_decision_seconds"
    assert delta(before, after, hist + "_count", result="placed") == 1
    assert delta(before, after, hist + "_count", result="no_valid_host") == 1
    assert delta(before, after, hist + "_sum", result="placed") > 0
    rej = "vmappliance_scheduler_rejections_total"
    # a: small fails CoreFilter, off fails ComputeFilter; b: big and small CoreFilter, off ComputeFilter
    assert delta(before, after, rej, filter="CoreFilter") == 3
    assert delta(before, after, rej, filter="ComputeFilter") == 2
    assert delta(before, after, rej, filter="RamFilter") == 0


def test_metrics_route_serves_host_and_scheduler_families(store, config):
    add_host(store, "local", last_seen=time.time())
    client = testing.TestClient(create_app(Service(store, config), "sekret"))
    text = client.simulate_get("/metrics", headers={"Authorization": "Bearer sekret"}).text
    assert 'vmappliance_host_capacity{host="local",resource="vcpus"} 16.0' in text
    assert 'vmappliance_host_state{host="local",state="enabled"} 1.0' in text
    assert 'vmappliance_host_heartbeat_up{host="local"} 1.0' in text
    assert 'vmappliance_scheduler_decision_seconds_count{result="no_valid_host"}' in text
    assert 'vmappliance_scheduler_rejections_total{filter="RamFilter"}' in text


# The serve process as `vmctl serve` runs it, up to the point where appliance.serve
# takes over: a stand-in for that module records what the controller would.
# Its worker and a scrape run while it lives (its metrics directory goes when it stops).
SERVE = """
import subprocess, sys, types
stand_in = types.ModuleType("appliance.serve")
def serve(config, demo_image=None):
    from appliance import metrics_scheduler
    metrics_scheduler.observe_decision(0.5, "placed", {"RamFilter": 1})
    metrics_scheduler.observe_decision(1.5, "no_valid_host", {"RamFilter": 2})
    subprocess.run([sys.executable, "-c", sys.argv[2]], check=True)
    subprocess.run([sys.executable, "-c", sys.argv[3]], check=True)
    return 0
stand_in.serve = serve
sys.modules["appliance.serve"] = stand_in
from appliance.cli import main
sys.exit(main(["--home", sys.argv[1], "serve", "--no-mount"]))
"""
WORKER = """
from appliance import metrics_scheduler
metrics_scheduler.observe_decision(0.25, "placed", {"CoreFilter": 4})
"""
SCRAPER = """
from prometheus_client import generate_latest
from exporter.registry import build_registry
print(generate_latest(build_registry("test:///default")).decode())
"""


def test_the_serve_process_and_the_workers_share_the_scheduler_metrics(tmp_path):
    """The serve process (the controller places evacuated VMs) and a worker (started
    with serve's environment) both count in what any worker's /metrics reports."""
    home = tmp_path / "home"
    shared = home / "run" / "metrics"
    shared.mkdir(parents=True)
    (shared / "counter_999.db").write_bytes(b"left by an earlier run")
    plain = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    out = subprocess.run([sys.executable, "-c", SERVE, str(home), WORKER, SCRAPER], env=plain, cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    assert not (shared / "counter_999.db").exists()
    assert 'vmappliance_scheduler_decision_seconds_count{result="placed"} 2.0' in out
    assert 'vmappliance_scheduler_decision_seconds_sum{result="placed"} 0.75' in out
    assert 'vmappliance_scheduler_decision_seconds_bucket{le="0.25",result="placed"} 1.0' in out
    assert 'vmappliance_scheduler_decision_seconds_count{result="no_valid_host"} 1.0' in out
    assert 'vmappliance_scheduler_rejections_total{filter="RamFilter"} 3.0' in out
    assert 'vmappliance_scheduler_rejections_total{filter="CoreFilter"} 4.0' in out
    assert 'vmappliance_scheduler_rejections_total{filter="DiskFilter"} 0.0' in out
    promtool_check(out.encode())


def test_the_multiprocess_dir_is_refused_once_prometheus_client_is_imported(tmp_path):
    """Set later, prometheus_client would keep this process's metrics in memory, where
    no worker's scrape sees them: entering then is an error, not a silent loss."""
    from exporter import shared_metrics

    with pytest.raises(RuntimeError, match="before prometheus_client is imported"):
        shared_metrics.enter(tmp_path / "metrics")
    assert "PROMETHEUS_MULTIPROC_DIR" not in os.environ
    assert not (tmp_path / "metrics").exists()

"""A real `vmctl serve` with real TCG guests, scraped by a real Prometheus (Debian's /usr/bin/prometheus).

Two running VMs, one stopped, one paused; Prometheus scrapes /metrics on
127.0.0.1 every second; its HTTP API must return the key series with real
values. Prometheus and the appliance are stopped by pid, always, and the
domains (unique prefix) removed.
"""
from __future__ import annotations

import pytest
import requests

from tests.appliance_process import DEMO_IMAGE, Appliance
from tests.exporter.test_collector import promtool_check
from tests.prometheus_process import query, running_prometheus, wait_query

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    if not DEMO_IMAGE.exists():
        pytest.fail(f"{DEMO_IMAGE} is missing: run `make image`")
    app = Appliance(tmp_path_factory.mktemp("exp-home"), extra_args=["--no-mount"])
    try:
        app.start()
        app.create_vm("r1")
        app.create_vm("r2")
        app.create_vm("s1", state="stopped")
        app.create_vm("p1")
        resp = app.api("PUT", "/v1/vms/p1/state", json={"state": "paused"})
        assert resp.status_code == 200, resp.text
        yield app
    finally:
        app.cleanup()


@pytest.fixture(scope="module")
def prometheus(appliance, tmp_path_factory):
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), f"""
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: appliance
    metrics_path: /metrics
    authorization: {{type: Bearer, credentials_file: {appliance.home / "token"}}}
    static_configs:
      - targets: ["127.0.0.1:{appliance.port}"]
""") as url:
        yield url


def value(result: list[dict]) -> float:
    return float(result[0]["value"][1])


def test_prometheus_scrapes_vm_host_and_appliance_series(appliance, prometheus):
    up = wait_query(prometheus, 'up{job="appliance"} == 1')
    assert value(up) == 1
    for name, state, reasons in [("r1", "running", {"booted", "unknown"}), ("r2", "running", {"booted", "unknown"}),
                                 ("s1", "stopped", {"unknown"}), ("p1", "paused", {"user"})]:
        result = wait_query(prometheus, f'vmappliance_vm_state{{vm="{name}"}}')
        assert len(result) == 1, result
        assert result[0]["metric"]["state"] == state and result[0]["metric"]["reason"] in reasons, result
        assert result[0]["metric"]["host"] == "local" and value(result) == 1
        info = query(prometheus, f'vmappliance_vm_info{{vm="{name}"}}')
        assert info[0]["metric"]["managed"] == "true"
        assert info[0]["metric"]["domain"] == appliance.prefix + name
    assert value(wait_query(prometheus, 'vmappliance_host_up{host="local"}')) == 1
    assert value(query(prometheus, 'vmappliance_host_cpus{host="local"}')) >= 1
    assert value(query(prometheus, 'vmappliance_host_memory_total_bytes{host="local"}')) > 2**30
    for name in ("r1", "r2", "p1"):  # guests that ran have used CPU and have memory
        assert value(query(prometheus, f'vmappliance_vm_cpu_seconds_total{{vm="{name}"}}')) > 0
        assert value(query(prometheus, f'vmappliance_vm_memory_current_bytes{{vm="{name}"}}')) >= 64 * 2**20
        # p1 may have been paused before its firmware read the disk: the series is there all the same
        assert query(prometheus, f'vmappliance_vm_block_read_requests_total{{vm="{name}",disk="vda"}}')
    for name in ("r1", "r2"):  # running guests read their disk as they boot
        wait_query(prometheus, f'vmappliance_vm_block_read_bytes_total{{vm="{name}",disk="vda"}}',
                   check=lambda r: value(r) > 0, timeout=60)
    assert value(query(prometheus, 'vmappliance_vm_vcpus{vm="r1"}')) >= 1
    # the running domains' two calls (exporter/running_stats.py): what libvirt reads
    # under the domain's job (rss, with the balloon's monitor query) and what not
    assert value(query(prometheus, 'vmappliance_vm_memory_rss_bytes{vm="r1"}')) > 0
    assert query(prometheus, 'vmappliance_vm_vcpu_wait_seconds_total{vm="r1",vcpu="0"}')
    assert value(query(prometheus, 'vmappliance_vm_block_capacity_bytes{vm="r1",disk="vda"}')) > 0
    # a stopped VM: state, vCPUs and memory (no block stats: see exporter/collector.py)
    assert value(query(prometheus, 'vmappliance_vm_vcpus{vm="s1"}')) >= 1
    assert value(query(prometheus, 'vmappliance_vm_memory_maximum_bytes{vm="s1"}')) >= 64 * 2**20
    # the CPU counter moves: a rate over real scrapes
    assert value(wait_query(prometheus, 'rate(vmappliance_vm_cpu_seconds_total{vm="r1"}[5s])')) > 0
    assert value(wait_query(prometheus, 'vmappliance_vm_uptime_seconds{vm="r1"}')) > 0
    # appliance families
    assert value(query(prometheus, 'vmappliance_vms_observed{state="running"}')) == 2
    assert value(query(prometheus, 'vmappliance_vms_desired{state="paused"}')) == 1
    assert value(query(prometheus, 'sum(vmappliance_operations_total{kind="create",status="succeeded"})')) == 4
    assert value(query(prometheus, 'vmappliance_operation_duration_seconds_count{kind="create",'
                                   'status="succeeded"}')) == 4
    assert value(query(prometheus, 'sum(vmappliance_events_total)')) > 4
    assert value(wait_query(prometheus, "vmappliance_controller_reconcile_seconds")) > 0
    assert value(query(prometheus, "vmappliance_exporter_scrape_duration_seconds")) < 5
    assert value(query(prometheus, 'scrape_duration_seconds{job="appliance"}')) < 1


def test_api_histogram_sums_both_gunicorn_workers(appliance, prometheus):
    for _ in range(20):
        # a fresh connection each time, so that both workers take some
        assert requests.get(appliance.url + "/v1/hosts", timeout=10,
                            headers={"Authorization": f"Bearer {appliance.token}"}).status_code == 200
    labels = 'route="/v1/hosts",method="GET",status="200"'
    result = wait_query(prometheus, f"vmappliance_api_request_duration_seconds_count{{{labels}}}",
                        check=lambda r: value(r) == 20)
    assert len(result) == 1
    assert value(query(prometheus, f'vmappliance_api_request_duration_seconds_bucket{{{labels},le="+Inf"}}')) == 20
    assert value(query(prometheus, 'sum(vmappliance_api_request_duration_seconds_count{route="/v1/vms",'
                                   'method="POST",status="201"})')) == 4
    worker_files = list((appliance.home / "run" / "metrics").glob("histogram_*.db"))
    assert worker_files, "no multiprocess files: the workers are not in multiprocess mode"


def test_promtool_accepts_the_scraped_text(appliance, prometheus):
    resp = appliance.api("GET", "/metrics", timeout=10)
    assert resp.status_code == 200
    promtool_check(resp.content)

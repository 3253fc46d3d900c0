"""Every PromQL expression the shipped dashboards and alert rules hold, asked of
a real Prometheus (Debian's /usr/bin/prometheus) that scrapes a real appliance.

The appliance runs r1 (running), l1 (running, with a liveness probe that always
fails, so it is forced off and started again: liveness-failed and converging
events, CPU counter resets) and s1 (stopped). Prometheus runs the shipped
prometheus.yml (scrape interval cut to 1 s, target moved to the test's port)
with the shipped alerts.yml, then:

- every dashboard target and variable query, template variables substituted
  as Grafana would for one choice ($vm = r1, $host = local, $__rate_interval =
  30s), must be valid and return data (the network panels too: the demo
  VMs' user-mode NICs are counted by their guest agent, exporter/agent_net.py);
- every alert expression must be valid, and its value before the threshold
  (the expression with its trailing comparison stripped) must return data, so
  each rule names only series that exist. r1 has a backup schedule (monthly, so
  that no backup is due while the test runs) and so the schedule's series, and
  no backup: the panels of the last good backup's size and duration are empty
  by design here. One rule watches a series that
  exists only after a failure: VMApplianceOperationFailures selects
  status="failed"; it is asked with status=~".+" (the same family, kind and
  status labels) — see DATA_VARIANTS;
- Prometheus reports every loaded rule healthy;
- no expression names a metric that /metrics does not declare (Prometheus's
  own `up` and `scrape_duration_seconds` aside).

Prometheus and the appliance are stopped by pid, always; the domains are removed.
"""
from __future__ import annotations

import re
import time

import pytest
import requests
import yaml

from tests.appliance_process import DEMO_IMAGE, Appliance
from tests.monitoring.monitoring import (
    ALERTS,
    SCRAPE_CONFIG,
    SYNTHETIC,
    alert_rules,
    dashboard_exprs,
    label_values_query,
    metric_names,
    strip_comparison,
    substitute,
)
from tests.prometheus_process import query, running_prometheus, wait_query

pytestmark = pytest.mark.integration

TEMPLATE_VALUES = {"vm": "r1", "host": "local", "datasource": "prometheus"}
# user-mode NICs: libvirt has no stats for them; no VM here has a good backup (no backup target)
NO_DATA_BY_DESIGN = re.compile(r"^vmappliance_vm_backup_last_(size|duration)")
DATA_VARIANTS = {
    # alert -> (text in the stripped expr, replacement): a series that only exists after a failure
    "VMApplianceOperationFailures": ('status="failed"', 'status=~".+"'),
}
LIVENESS = {"console": {"contains": "a line this guest never prints"}, "initial_delay_seconds": 3,
            "period_seconds": 1, "failure_threshold": 2}


@pytest.fixture(scope="module")
def appliance(tmp_path_factory):
    if not DEMO_IMAGE.exists():
        pytest.fail(f"{DEMO_IMAGE} is missing: run `make image`")
    app = Appliance(tmp_path_factory.mktemp("mon-home"), extra_args=["--no-mount"])
    try:
        app.start()
        app.create_vm("r1")
        app.create_vm("l1", liveness_probe=LIVENESS)
        app.create_vm("s1", state="stopped")
        # A limit, so that the project quota rule has a quota series to divide by.
        quota = app.api("PATCH", "/v1/projects/default", json={"quota": {"vms": 100}}, timeout=10)
        assert quota.status_code == 200, quota.text
        # A backup schedule, for the schedule's series (the overdue rule and its panel).
        policy = {"backup": {"schedule": "monthly 1 00:00", "keep_monthly": 3}}
        scheduled = app.api("PATCH", "/v1/vms/r1", json=policy, timeout=10)
        assert scheduled.status_code == 200, scheduled.text
        yield app
    finally:
        app.cleanup()


@pytest.fixture(scope="module")
def prometheus(appliance, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prometheus")
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    # 2 s, not 1: a scrape that outlasts its timeout (three TCG guests booting on two busy
    # cores) makes Prometheus mark every series stale, and an instant query then finds none
    # (31 "queries without data" once in CI, while the next scrape had them all).
    config["global"].update(scrape_interval="2s", scrape_timeout="2s", evaluation_interval="1s")
    config["rule_files"] = [str(ALERTS)]
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "vm-appliance"]
    assert len(jobs) == 1
    jobs[0]["static_configs"] = [{"targets": [f"127.0.0.1:{appliance.port}"]}]
    # The shipped job sends the token from a file (/metrics wants it by default): point it at this home's.
    assert jobs[0]["authorization"]["type"] == "Bearer", jobs[0]
    jobs[0]["authorization"]["credentials_file"] = str(appliance.home / "token")
    config["scrape_configs"] = jobs
    with running_prometheus(tmp, yaml.safe_dump(config)) as url:
        yield url


@pytest.fixture(scope="module")
def scraped(appliance, prometheus):
    """A few scrapes in, with GET traffic on the API and l1's liveness probe failed at least once."""
    wait_query(prometheus, 'up{job="vm-appliance"} == 1', timeout=30)
    for _ in range(10):
        assert appliance.api("GET", "/v1/hosts", timeout=10).status_code == 200
    wait_query(prometheus, 'vmappliance_events_total{kind="liveness-failed"}', timeout=60)
    wait_query(prometheus, 'vmappliance_vm_block_read_bytes_total{vm="r1"}', timeout=30)
    # r1's NIC is counted once its guest agent (started after the guest's ready line) answers,
    # and a rate wants two samples of it.
    wait_query(prometheus, 'count_over_time(vmappliance_vm_network_receive_bytes_total{vm="r1"}[30s]) >= 2',
               timeout=240)
    wait_query(prometheus, 'count_over_time(vmappliance_vm_cpu_seconds_total{vm="r1"}[30s]) >= 5', timeout=30)
    # The controller records the schedule on its next backup pass (every 30 s).
    wait_query(prometheus, 'vmappliance_vm_backup_schedule_since_timestamp_seconds{vm="r1"}', timeout=60)
    return prometheus


def test_every_dashboard_query_returns_data(scraped):
    empty, checked = [], 0
    for where, expr in dashboard_exprs():
        if expr.startswith("label_values("):
            expr = label_values_query(expr)
        expr = substitute(expr, TEMPLATE_VALUES)
        checked += 1
        if not query(scraped, expr):
            empty.append((where, expr))
    assert checked >= 60
    unexpected = [(where, expr) for where, expr in empty if not NO_DATA_BY_DESIGN.search(expr)]
    assert unexpected == [], "queries without data"
    # the exemption covers only what it says: the last backup's panels, and each of them is empty here
    no_backup = [e for _, e in dashboard_exprs() if NO_DATA_BY_DESIGN.search(e)]
    assert len(empty) == len(no_backup) > 0


def test_every_alert_names_series_that_exist(scraped):
    rules = alert_rules()
    assert len(rules) >= 9
    for rule in rules:
        expr = rule["expr"]
        query(scraped, expr)  # valid as written (firing or not)
        value = strip_comparison(expr)
        if rule["alert"] in DATA_VARIANTS:
            old, new = DATA_VARIANTS[rule["alert"]]
            assert old in value, rule["alert"]
            value = value.replace(old, new)
        assert query(scraped, value), f"{rule['alert']}: no data for {value}"


def test_liveness_rule_sees_the_failing_probe(scraped):
    """The one rule this appliance really trips: its comparison holds (the alert may still be pending)."""
    rule = next(r for r in alert_rules() if r["alert"] == "VMApplianceLivenessFailing")
    assert wait_query(scraped, rule["expr"], timeout=30)


def test_prometheus_loaded_every_rule_healthy(scraped):
    time.sleep(2)  # an evaluation or two at 1 s
    body = requests.get(scraped + "/api/v1/rules", timeout=5).json()
    assert body["status"] == "success"
    loaded = {r["name"]: r for g in body["data"]["groups"] for r in g["rules"]}
    assert set(loaded) == {r["alert"] for r in alert_rules()}
    for name, rule in loaded.items():
        assert rule["health"] == "ok", (name, rule.get("lastError"))


def exported_names(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(maxsplit=3)
            names.add(name)
            if kind in ("histogram", "summary"):
                names |= {name + "_bucket", name + "_count", name + "_sum"}
        elif line and not line.startswith("#"):
            names.add(re.split(r"[{\s]", line, maxsplit=1)[0])
    return names


def test_no_dashboard_or_rule_names_an_unexported_metric(appliance, scraped):
    resp = appliance.api("GET", "/metrics", timeout=10)
    assert resp.status_code == 200
    exported = exported_names(resp.text) | SYNTHETIC
    used: dict[str, str] = {}
    for where, expr in dashboard_exprs():
        for name in metric_names(label_values_query(expr) if expr.startswith("label_values(") else expr):
            used.setdefault(name, where)
    for rule in alert_rules():
        for name in metric_names(rule["expr"]):
            used.setdefault(name, "alerts.yml: " + rule["alert"])
    assert len(used) > 40  # the parser finds names at all
    assert {n: w for n, w in used.items() if n not in exported} == {}


def test_cluster_families_agree_with_the_hosts_api(appliance, scraped):
    """What Prometheus holds for the local host is what GET /v1/hosts/local says
    (the service's host view), and the scheduler counted the three creates."""
    from appliance import placement

    host = appliance.api("GET", "/v1/hosts/local", timeout=10).json()

    def value(expr: str) -> float:
        result = wait_query(scraped, expr, timeout=30)
        assert len(result) == 1, (expr, result)
        return float(result[0]["value"][1])

    sel = 'host="local",resource="{}"'
    assert value(f"vmappliance_host_allocated{{{sel.format('vcpus')}}}") == host["allocated"]["cpus"] > 0
    assert value(f"vmappliance_host_allocated{{{sel.format('memory_bytes')}}}") == \
        host["allocated"]["memory_mib"] * 1024 * 1024
    assert int(value(f"vmappliance_host_capacity{{{sel.format('vcpus')}}}")) == host["capacity"]["cpus"]
    assert int(value(f"vmappliance_host_capacity{{{sel.format('memory_bytes')}}}") // (1024 * 1024)) == \
        host["capacity"]["memory_mib"]
    assert value('vmappliance_host_vms{host="local"}') == host["allocated"]["vms"] == 3
    assert value(f'vmappliance_host_state{{host="local",state="{host["state"]}"}}') == 1
    assert value('vmappliance_host_heartbeat_up{host="local"}') == 1
    # physical x ratio (minus reserved memory) = capacity, by PromQL vector matching
    assert value(f"vmappliance_host_physical{{{sel.format('vcpus')}}} * "
                 f"vmappliance_host_overcommit_ratio{{{sel.format('vcpus')}}}") == host["capacity"]["cpus"]
    placed = value('sum(vmappliance_scheduler_decision_seconds_count{result="placed"})')
    value('sum(vmappliance_scheduler_rejections_total)')  # declared, every filter at 0 or more
    if hasattr(placement.place, "__wrapped__"):  # placement.place is @metrics_scheduler.timed_placement
        assert placed >= 3

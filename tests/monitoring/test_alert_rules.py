"""The shipped alert rules, scrape config and dashboards, checked offline:
promtool's own checks and unit tests, and the conventions every rule and panel follows."""
from __future__ import annotations

import json
import os
import subprocess

import yaml

from tests.monitoring.monitoring import (
    ALERTS,
    ALERTS_TEST,
    GRAFANA,
    PROMETHEUS_DIR,
    PROMTOOL,
    SCRAPE_CONFIG,
    alert_rules,
    dashboards,
    metric_names,
    panels,
    strip_comparison,
    substitute,
)


def promtool(*args: str) -> subprocess.CompletedProcess:
    assert os.access(PROMTOOL, os.X_OK), f"{PROMTOOL} is missing: apt-get install prometheus"
    return subprocess.run([PROMTOOL, *args], cwd=PROMETHEUS_DIR, capture_output=True, text=True, timeout=60, check=False)


def test_promtool_check_rules_is_clean():
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_config_accepts_the_example(tmp_path):
    """As shipped, the job reads the token from the home of `make run`, which a
    fresh clone has not made yet: promtool checks the syntax of the file as it
    is, then everything (the token file included) of a copy whose
    credentials_file names a token that exists, as a user's would."""
    result = promtool("check", "config", "--syntax-only", str(SCRAPE_CONFIG))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(SCRAPE_CONFIG.read_text())
    job = next(job for job in config["scrape_configs"] if job["job_name"] == "vm-appliance")
    assert job["authorization"] == {"type": "Bearer", "credentials_file": "../../.appliance/token"}
    token = tmp_path / "token"
    token.write_text("t0ken\n")
    job["authorization"]["credentials_file"] = str(token)
    config["rule_files"] = [str(ALERTS)]
    copy = tmp_path / "prometheus.yml"
    copy.write_text(yaml.safe_dump(config))
    result = promtool("check", "config", str(copy))
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass():
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_rule_has_for_severity_and_annotations():
    rules = alert_rules()
    assert len(rules) >= 9
    for rule in rules:
        assert "alert" in rule, rule
        assert rule.get("for"), f"{rule['alert']}: no for:"
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"].get("summary") and rule["annotations"].get("description"), rule["alert"]


def test_every_rule_is_unit_tested_firing_and_not_firing():
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert tests["rule_files"] == ["alerts.yml"]
    firing, quiet = set(), set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "rules never tested firing"
    assert names - quiet == set(), "rules never tested not firing"


def test_dashboards_are_importable_grafana_json():
    boards = dashboards()
    assert {"vms-overview.json", "vm-detail.json", "hosts.json", "appliance.json"} <= set(boards)
    uids = set()
    for name, board in boards.items():
        assert board["schemaVersion"] >= 38, name
        assert board["uid"] not in uids and len(board["uid"]) <= 40, name
        uids.add(board["uid"])
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in panels(board)]
        assert len(ids) == len(set(ids)), name
        for panel in panels(board):
            if panel["type"] == "row":
                continue
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, (name, panel["title"])
            assert panel["targets"], (name, panel["title"])
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
                assert target["expr"].strip()
        for var in variables.values():
            if var["type"] == "query":
                assert var["datasource"]["uid"] == "${datasource}"


def test_dashboards_match_their_generator():
    """The JSON is what build_dashboards.py writes: edit the generator, then run it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    built = {"vms-overview.json": module.overview(), "vm-detail.json": module.vm_detail(),
             "hosts.json": module.hosts(), "appliance.json": module.appliance()}
    for name, board in built.items():
        assert json.loads((GRAFANA / name).read_text()) == board.json(), f"{name} is stale: run build_dashboards.py"


def test_metric_name_parser():
    assert metric_names('sum by (le, route) (rate(a_bucket{method="GET",x=~"b.+"}[5m])) / on(vm) b > 1e3') == \
        {"a_bucket", "b"}
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(c[30s]))) or vector(0) * d') == {"c", "d"}
    assert strip_comparison("a / b > 0.9") == "a / b"
    assert substitute('x{vm=~"$vm",host="${host}"}[$__rate_interval]', {"vm": "r1", "host": "local"}) == \
        'x{vm=~"r1",host="local"}[30s]'

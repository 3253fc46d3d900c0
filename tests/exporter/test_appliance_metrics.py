"""Appliance families from the store, /metrics on the REST app, multiprocess mode, vmctl exporter."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import pytest
import requests
from falcon import testing
from prometheus_client import CollectorRegistry, generate_latest

from appliance.api.app import create_app
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store
from exporter.appliance import RECONCILE_KEY, ApplianceCollector, publish_reconcile
from tests.appliance_process import ROOT, free_port
from tests.exporter.test_collector import promtool_check


@pytest.fixture
def config(tmp_path) -> Config:
    cfg = Config(home=tmp_path / "home", libvirt_uri="test:///default")
    cfg.prepare()
    return cfg


@pytest.fixture
def store(config) -> Store:
    return Store(config.db_path)


def add_vm(store, vm_id, name, desired, observed):
    store.insert_vm({"id": vm_id, "name": name, "spec": {}, "desired_state": desired, "observed_state": observed,
                     "generation": 1, "created": 0.0, "state_changed": time.time() - 30})


def add_op(store, op_id, kind, status, started, finished):
    store.insert_operation({"id": op_id, "vm_id": "v1", "vm_name": "a", "kind": kind, "status": status,
                            "progress": 40 if status == "running" else 100, "created": started,
                            "started": started, "finished": finished})


def test_vms_operations_events_and_reconcile_from_the_store(store):
    add_vm(store, "v1", "a", "running", "running")
    add_vm(store, "v2", "b", "running", "stopped")
    add_vm(store, "v3", "c", "stopped", "stopped")
    add_op(store, "o1", "create", "succeeded", 100.0, 100.3)
    add_op(store, "o2", "create", "succeeded", 100.0, 104.0)
    add_op(store, "o3", "start", "failed", 100.0, 100.05)
    add_op(store, "o4", "migrate", "running", 100.0, None)
    add_op(store, "o5", "stop", "pending", 100.0, None)
    store.add_event("created", "x")
    store.add_event("created", "y")
    store.add_event("state-changed", "z")
    store.set_meta(RECONCILE_KEY, "0.125")
    registry = CollectorRegistry()
    registry.register(ApplianceCollector(store))
    value = registry.get_sample_value
    assert value("vmappliance_vms_desired", {"state": "running"}) == 2
    assert value("vmappliance_vms_observed", {"state": "stopped"}) == 2
    assert value("vmappliance_vm_ready", {"vm": "a"}) == 1  # running, no readiness probe
    assert value("vmappliance_vm_ready", {"vm": "b"}) is None  # not running: no series
    assert value("vmappliance_operations_total", {"kind": "create", "status": "succeeded"}) == 2
    assert value("vmappliance_operations_total", {"kind": "start", "status": "failed"}) == 1
    assert value("vmappliance_operations_total", {"kind": "migrate", "status": "running"}) is None
    assert value("vmappliance_operations_open", {"kind": "stop", "status": "pending"}) == 1
    assert value("vmappliance_operation_progress_ratio", {"vm": "a", "kind": "migrate"}) == 0.4
    create = {"kind": "create", "status": "succeeded"}
    assert value("vmappliance_operation_duration_seconds_bucket", {**create, "le": "0.5"}) == 1
    assert value("vmappliance_operation_duration_seconds_bucket", {**create, "le": "5.0"}) == 2
    assert value("vmappliance_operation_duration_seconds_bucket", {**create, "le": "+Inf"}) == 2
    assert value("vmappliance_operation_duration_seconds_count", create) == 2
    assert value("vmappliance_operation_duration_seconds_sum", create) == pytest.approx(4.3)
    assert value("vmappliance_events_total", {"kind": "created"}) == 2
    assert value("vmappliance_controller_reconcile_seconds") == 0.125
    promtool_check(generate_latest(registry))


def test_events_alerts_name_a_vm_for_are_counted_per_existing_vm(store):
    add_vm(store, "v1", "a", "running", "running")
    add_vm(store, "v2", "b", "running", "running")
    a, b = store.get_vm_by_id("v1"), store.get_vm_by_id("v2")
    for _ in range(2):
        store.add_event("liveness-failed", "probe", a)
    store.add_event("liveness-failed", "probe", b)
    store.add_event("state-changed", "not a counted kind", a)
    store.add_event("liveness-failed", "of a VM since deleted", {"id": "gone", "name": "old"})
    registry = CollectorRegistry()
    registry.register(ApplianceCollector(store))
    value = registry.get_sample_value
    assert value("vmappliance_vm_events_total", {"vm": "a", "kind": "liveness-failed"}) == 2
    assert value("vmappliance_vm_events_total", {"vm": "b", "kind": "liveness-failed"}) == 1
    assert value("vmappliance_vm_events_total", {"vm": "a", "kind": "state-changed"}) is None
    assert value("vmappliance_vm_events_total", {"vm": "old", "kind": "liveness-failed"}) is None
    assert value("vmappliance_events_total", {"kind": "liveness-failed"}) == 4


def test_a_failing_store_section_costs_only_its_series(store, monkeypatch):
    add_vm(store, "v1", "a", "running", "running")
    store.add_event("created", "x")
    collector = ApplianceCollector(store)

    def broken():
        raise RuntimeError("operations table unreadable")

    monkeypatch.setattr(collector, "_operations", broken)
    registry = CollectorRegistry()
    registry.register(collector)
    assert registry.get_sample_value("vmappliance_vms_desired", {"state": "running"}) == 1
    assert registry.get_sample_value("vmappliance_events_total", {"kind": "created"}) == 1
    assert registry.get_sample_value("vmappliance_operations_total", {"kind": "x", "status": "y"}) is None


def test_publish_reconcile_copies_the_controllers_duration(store):
    class Controller:
        reconcile_seconds = 0.0

    controller, stopping = Controller(), threading.Event()
    thread = publish_reconcile(controller, store, stopping, period=0.02)
    controller.reconcile_seconds = 0.031
    deadline = time.monotonic() + 5
    while store.get_meta(RECONCILE_KEY) != "0.031" and time.monotonic() < deadline:
        time.sleep(0.02)
    stopping.set()
    thread.join(2)
    assert store.get_meta(RECONCILE_KEY) == "0.031"


def test_metrics_route_and_request_histogram_by_route_template(store, config):
    client = testing.TestClient(create_app(Service(store, config), "sekret"))
    assert client.simulate_get("/v1/vms").status_code == 401
    auth = {"Authorization": "Bearer sekret"}
    assert client.simulate_get("/v1/vms", headers=auth).status_code == 200
    assert client.simulate_get("/v1/vms/nope", headers=auth).status_code == 404
    resp = client.simulate_get("/metrics", headers=auth)
    assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'vmappliance_api_request_duration_seconds_count{method="GET",route="/v1/vms",status="401"}' in text
    assert 'vmappliance_api_request_duration_seconds_count{method="GET",route="/v1/vms",status="200"}' in text
    # the route template, never the raw path
    assert 'route="/v1/vms/{name}",status="404"' in text and "nope" not in text
    assert 'vmappliance_host_up{host="local"} 1.0' in text
    assert "vmappliance_exporter_scrape_duration_seconds " in text
    promtool_check(resp.content)


def test_metrics_want_the_token_by_default(store, config):
    """Issue 9, finding 13: /metrics was public by default."""
    assert Config(home=config.home).metrics_public is False
    client = testing.TestClient(create_app(Service(store, config), "sekret"))
    for spelling in ("/metrics", "//metrics", "/metrics/", "/%2Fmetrics"):
        assert client.simulate_get(spelling).status_code == 401, spelling
    resp = client.simulate_get("/metrics", headers={"Authorization": "Bearer sekret"})
    assert resp.status_code == 200 and "vmappliance_host_up" in resp.text


def test_metrics_public_when_the_admin_says_so(store, config):
    config.metrics_public = True
    client = testing.TestClient(create_app(Service(store, config), "sekret"))
    resp = client.simulate_get("/metrics")
    assert resp.status_code == 200 and "vmappliance_host_up" in resp.text
    assert client.simulate_get("/v1/vms").status_code == 401  # the rest still wants the token


def test_an_old_homes_metrics_public_default_is_dropped(tmp_path):
    """A config.json written before config_version 2 saved metrics_public: true as
    the default of its day: the upgraded appliance asks for the token."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"home": str(home), "metrics_public": True, "workers": 3}))
    loaded = Config.load(home)
    assert loaded.metrics_public is False and loaded.workers == 3
    loaded.metrics_public = True
    loaded.save()
    assert Config.load(home).metrics_public is True  # a choice made after the upgrade stays


WORKER = """
import sys
from exporter.registry import REQUEST_DURATION
REQUEST_DURATION.labels("/v1/vms", "GET", "200").observe(float(sys.argv[1]))
"""
SCRAPER = """
from prometheus_client import generate_latest
from exporter.registry import build_registry
print(generate_latest(build_registry("test:///default")).decode())
"""


def test_multiprocess_mode_sums_every_worker(tmp_path):
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for seconds in ("0.5", "1.5"):  # two "workers", each gone before the scrape
        subprocess.run([sys.executable, "-c", WORKER, seconds], env=env, cwd=ROOT, check=True)
    out = subprocess.run([sys.executable, "-c", SCRAPER], env=env, cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    labels = '{method="GET",route="/v1/vms",status="200"}'
    assert f"vmappliance_api_request_duration_seconds_count{labels} 2.0" in out
    assert f"vmappliance_api_request_duration_seconds_sum{labels} 2.0" in out
    promtool_check(out.encode())


def _start_exporter(home, port: int, *options: str) -> subprocess.Popen:
    args = [sys.executable, "-m", "appliance.cli", "--home", str(home), "exporter",
            "--listen", f"127.0.0.1:{port}", "--libvirt-uri", "test:///default",
            "--host-name", "h1", *options]
    return subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL,  # noqa: S603 - our own CLI
                            stderr=subprocess.DEVNULL)


def _first_answer(proc: subprocess.Popen, url: str, **kwargs) -> requests.Response:
    deadline = time.monotonic() + 20
    while True:
        try:
            return requests.get(url, timeout=2, **kwargs)
        except requests.ConnectionError:
            assert time.monotonic() < deadline and proc.poll() is None
            time.sleep(0.1)


def test_vmctl_exporter_standalone_wants_the_token(tmp_path, store, config):
    """`vmctl exporter` used to answer anyone who could connect (a guest reaches the
    host's loopback through slirp). It now takes the API's check: the token of
    HOME/token, made at first start; without it, the API's very 401."""
    home, port = tmp_path / "exporter-home", free_port()
    proc = _start_exporter(home, port, "--any-appliance")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        refused = _first_answer(proc, url)
        token = (home / "token").read_text().strip()
        assert (home / "token").stat().st_mode & 0o077 == 0
        api_app = create_app(Service(store, config), "sekret")
        api = testing.TestClient(api_app).simulate_get("/metrics")
        assert (refused.status_code, refused.json()) == (401, api.json)
        assert refused.headers["WWW-Authenticate"] == api.headers["WWW-Authenticate"] == "Bearer"
        for wrong in ("Bearer wrong", f"Bearer {token}x", token, f"Basic {token}"):
            resp = requests.get(url, headers={"Authorization": wrong}, timeout=5)
            assert resp.status_code == 401 and "vmappliance" not in resp.text, wrong
        assert requests.get(f"http://127.0.0.1:{port}/other", timeout=5).status_code == 401
        resp = requests.get(url, headers={"Authorization": f"Bearer {token}"}, timeout=10)
        assert resp.status_code == 200
        assert 'vmappliance_host_up{host="h1"} 1.0' in resp.text
        # only the appliance's domains by default: the test driver's "test" is another tenant's
        assert 'vm="test"' not in resp.text
        assert "vmappliance_api_request" not in resp.text
        promtool_check(resp.content)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_vmctl_exporter_public_serves_without_a_token(tmp_path):
    home, port = tmp_path / "exporter-home", free_port()
    proc = _start_exporter(home, port, "--public", "--any-appliance")
    try:
        resp = _first_answer(proc, f"http://127.0.0.1:{port}/metrics")
        assert resp.status_code == 200
        assert 'vmappliance_host_up{host="h1"} 1.0' in resp.text
        assert 'vm="test"' not in resp.text
        assert not (home / "token").exists()
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_vmctl_exporter_all_domains_shows_other_tenants_domains(tmp_path):
    """--all-domains: the test driver's "test" (no appliance <metadata>) is reported too."""
    home, port = tmp_path / "exporter-home", free_port()
    proc = _start_exporter(home, port, "--public", "--all-domains")
    try:
        resp = _first_answer(proc, f"http://127.0.0.1:{port}/metrics")
        assert resp.status_code == 200
        assert ('vmappliance_vm_state{host="h1",reason="unknown",state="running",vm="test"} 1.0'
                in resp.text)
        assert "vmappliance_api_request" not in resp.text
        promtool_check(resp.content)
    finally:
        proc.terminate()
        assert proc.wait(10) == 0


def test_metrics_leave_out_domains_the_appliance_does_not_manage(store, config):
    """Issue 9, finding 13: /metrics listed every domain on the libvirtd, other
    tenants' included. libvirt's test driver holds one such domain, "test"."""
    auth = {"Authorization": "Bearer sekret"}
    text = testing.TestClient(create_app(Service(store, config), "sekret")).simulate_get("/metrics", headers=auth).text
    assert 'vmappliance_host_up{host="local"} 1.0' in text
    assert 'managed="false"' not in text and 'domain="test"' not in text
    config.metrics_all_domains = True
    text = testing.TestClient(create_app(Service(store, config), "sekret")).simulate_get("/metrics", headers=auth).text
    assert 'vmappliance_vm_info{domain="test",host="local",managed="false",vm="test"} 1.0' in text


def test_metrics_of_two_appliances_on_one_libvirtd_show_each_its_own(store, config, test_conn, tmp_path):
    """Issue 10: two appliances (two homes) define domains on one libvirtd. The API's
    /metrics reports the VMs of its own store only (the VM id is the domain UUID),
    and `vmctl exporter` with the home of either reports that appliance's domains
    only (the instance id of the home's store, which define writes into <metadata>)."""
    import argparse
    import uuid as uuidlib

    from appliance.cli.local import exporter_appliance
    from appliance.serve import instance_id
    from appliance.virt.domain import METADATA_NS
    from exporter.registry import build_registry
    from tests.exporter.test_collector import APPLIANCE_DOMAIN_XML

    other_config = Config(home=tmp_path / "other-home", libvirt_uri="test:///default")
    other_config.prepare()
    other_store = Store(other_config.db_path)
    made = []
    try:
        for name, owner in (("two-mine", store), ("two-other", other_store)):
            vm_id = str(uuidlib.uuid4())
            made.append(test_conn.defineXML(APPLIANCE_DOMAIN_XML.format(
                name=name, uuid=vm_id, ns=METADATA_NS, appliance=instance_id(owner))))
            made[-1].create()
            add_vm(owner, vm_id, name.removeprefix("two-"), "running", "running")
        auth = {"Authorization": "Bearer sekret"}
        text = testing.TestClient(create_app(Service(store, config), "sekret")).simulate_get(
            "/metrics", headers=auth).text
        assert 'vmappliance_vm_info{domain="two-mine",host="local",managed="true",vm="mine"} 1.0' in text
        assert "two-other" not in text and 'vm="other"' not in text

        def exporter_text(home_config, *flags):
            args = argparse.Namespace(appliance=None, any_appliance="--any-appliance" in flags,
                                      all_domains=False)
            registry = build_registry("test:///default", api_metrics=False,
                                      appliance=exporter_appliance(args, home_config))
            return generate_latest(registry).decode()

        assert exporter_appliance(argparse.Namespace(
            appliance=None, any_appliance=False, all_domains=False), config) == instance_id(store)
        mine, theirs = exporter_text(config), exporter_text(other_config)
        assert 'domain="two-mine"' in mine and "two-other" not in mine
        assert 'domain="two-other"' in theirs and "two-mine" not in theirs
        both = exporter_text(config, "--any-appliance")
        assert 'domain="two-mine"' in both and 'domain="two-other"' in both
    finally:
        for dom in made:
            dom.destroy()
            dom.undefine()


def test_vmctl_exporter_refuses_a_home_that_names_no_appliance(tmp_path):
    """A home without an appliance's store names no appliance: the exporter says how
    to name one instead of reporting every appliance's domains."""
    result = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "--home", str(tmp_path / "fresh"), "exporter",
         "--listen", f"127.0.0.1:{free_port()}", "--libvirt-uri", "test:///default", "--public"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2 and "--appliance ID" in result.stderr, result.stderr
    assert not (tmp_path / "fresh" / "appliance.db").exists()  # nothing made in a home it only reads


def test_an_old_homes_thread_count_default_is_raised(tmp_path):
    """Config version 3: threads went from 8 to 32 (the API front caps long waits at 3/4 of them)."""
    home = tmp_path / "home"
    home.mkdir()
    (home / "config.json").write_text(json.dumps({"home": str(home), "threads": 8, "config_version": 2}))
    assert Config.load(home).threads == 32
    (home / "config.json").write_text(json.dumps({"home": str(home), "threads": 12, "config_version": 2}))
    assert Config.load(home).threads == 12  # a choice is kept


# -- review of issue 9's fixes: labels an unauthenticated caller chooses --------------------------
HTTP_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}


def _request_series(text: str) -> dict[tuple[str, str, str], float]:
    """(route, method, status) -> count of each vmappliance_api_request_duration_seconds series."""
    import re

    series = {}
    pattern = r'vmappliance_api_request_duration_seconds_count\{method="([^"]*)",route="([^"]*)",status="([^"]*)"\} (\S+)'
    for method, route, status, count in re.findall(pattern, text):
        series[(route, method, status)] = float(count)
    return series


@pytest.mark.integration
def test_methods_a_caller_makes_up_add_no_series(tmp_path):
    """The request histogram was labelled with req.method as the HTTP server passed it on:
    gunicorn's gthread worker passes any method token (`XMETHOD7 /v1/vms`), uvicorn's
    httptools the ~40 methods llhttp knows (PROPFIND, MKCOL, PURGE...). Each one, sent
    without the token (by anyone who can connect, a default guest too), added a series to
    every worker's multiprocess file and to every scrape, for good. Methods the API does
    not serve count as OTHER; the label takes eight values whatever the front."""
    from tests.appliance_process import DEMO_IMAGE, Appliance

    if not DEMO_IMAGE.exists():
        pytest.fail(f"{DEMO_IMAGE} is missing: run `make image`")
    app = Appliance(tmp_path / "home", extra_args=["--no-mount"])
    try:
        app.start()
        odd = [f"XMETHOD{i}" for i in range(40)] + ["PROPFIND", "MKCOL", "PURGE", "REPORT", "LOCK", "SEARCH"]
        reached = 0  # answered by the app (401/405), not refused by the HTTP parser (400)
        for method in odd:
            resp = requests.request(method, app.url + ("/v1/vms" if len(method) % 2 else "/nowhere"), timeout=10)
            assert resp.status_code in (400, 401, 405), (method, resp.status_code)
            reached += resp.status_code != 400
        assert reached >= 6, reached  # the WebDAV methods reach the app with either front
        resp = app.api("GET", "/metrics")
        assert resp.status_code == 200, resp.text
        series = _request_series(resp.text)
        assert {method for _, method, _ in series} <= HTTP_METHODS | {"OTHER"}, sorted(series)
        assert not any(f'method="{name}"' in resp.text for name in odd)
        assert sum(count for (_, method, _), count in series.items() if method == "OTHER") >= reached
    finally:
        app.cleanup()


def test_restart_required_gauge_per_running_vm(store):
    add_vm(store, "v1", "a", "running", "running")
    add_vm(store, "v2", "b", "running", "running")
    add_vm(store, "v3", "c", "stopped", "stopped")
    store.update_vm("v2", bump=False, restart_required=1)
    store.update_vm("v3", bump=False, restart_required=1)
    registry = CollectorRegistry()
    registry.register(ApplianceCollector(store))
    value = registry.get_sample_value
    assert value("vmappliance_vm_restart_required", {"vm": "a"}) == 0
    assert value("vmappliance_vm_restart_required", {"vm": "b"}) == 1
    assert value("vmappliance_vm_restart_required", {"vm": "c"}) is None  # stopped: no series

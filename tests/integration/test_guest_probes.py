"""Probes on real TCG guests: readiness through a forwarded port, liveness on the console."""
import time

import pytest

from tests.appliance_process import BOOT_LINE, READY_LINE, free_port

pytestmark = pytest.mark.integration


def events(appliance, name):
    return appliance.api("GET", f"/v1/vms/{name}/events").json()["items"]


def test_tcp_readiness_through_a_forwarded_port(appliance):
    port = free_port()
    appliance.create_vm("ready1", network={"type": "user", "port_forwards": [{"host_port": port, "guest_port": 8000}]},
                        readiness_probe={"tcp_socket": {"port": 8000}, "period_seconds": 1})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not appliance.api("GET", "/v1/vms/ready1").json()["ready"]:
        time.sleep(0.3)
    assert appliance.api("GET", "/v1/vms/ready1").json()["ready"] is True
    assert READY_LINE in appliance.console("ready1")  # the guest's service is up: its port answered
    status = appliance.api("GET", "/v1/vms/ready1/status.json").json()
    assert {"type": "Ready", "status": True} in status["conditions"]
    assert "ready" in [e["kind"] for e in events(appliance, "ready1")]
    appliance.api("DELETE", "/v1/vms/ready1", params={"force": "true"})


def test_failing_liveness_restarts_the_guest(appliance):
    # The initial delay leaves the guest time to print its boot line even when
    # TCG runs slowly on a loaded machine (at 3 s a loaded host killed each
    # boot before its first line, over and over).
    probe = {"console": {"contains": "a line this guest never prints"}, "initial_delay_seconds": 12,
             "period_seconds": 1, "failure_threshold": 2}
    appliance.create_vm("live1", liveness_probe=probe)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and appliance.console("live1").count(BOOT_LINE) < 2:
        time.sleep(0.3)
    assert appliance.console("live1").count(BOOT_LINE) >= 2
    failed = [e for e in events(appliance, "live1") if e["kind"] == "liveness-failed"]
    assert failed and "never prints" in failed[0]["message"] and "run strategy Always" in failed[0]["message"]
    appliance.api("DELETE", "/v1/vms/live1", params={"force": "true"})

"""Issue 9, findings 11 and 16, on a real `vmctl serve`, real libvirtd and TCG demo guests.

A guest on a user-mode NIC reaches the host's loopback as 10.0.2.2 (QEMU's
slirp), so the probes below run inside real guests: the demo guest runs a
user-data script after DHCP and prints what it got on the serial console.
All traffic stays on 127.0.0.1 (10.0.2.2 is the host's loopback).
"""
from __future__ import annotations

import json
import re
import socket
import time

import libvirt
import pytest

from tests.appliance_process import Appliance, free_port

pytestmark = pytest.mark.integration

USER_DATA_DONE = "vm-appliance demo guest: user-data done"


@pytest.fixture(scope="module")
def guarded(tmp_path_factory):
    """An appliance whose /metrics needs the token (metrics_public false), as
    the main branch makes it by default."""
    home = tmp_path_factory.mktemp("net-home")
    (home / "config.json").write_text(json.dumps({"metrics_public": False}))
    app = Appliance(home)
    try:
        yield app.start()
    finally:
        app.cleanup()


def probe_script(port: int, paths: list[str], seconds: int) -> str:
    """User-data for the demo guest: fetch each path from the host's loopback
    (10.0.2.2) and print the answer between markers. busybox `wget -T` crashes,
    so `timeout` bounds each try."""
    lines = ["#!/bin/sh"]
    for path in paths:
        lines += [f"echo 'probe {path} begin'",
                  f"timeout {seconds} wget -q -O - 'http://10.0.2.2:{port}{path}' 2>&1",
                  f"echo \"probe {path} rc=$?\""]
    return "\n".join(lines) + "\n"


def probe_result(console: str, path: str) -> tuple[str, int]:
    """What the guest printed for one probe, and wget's exit status."""
    match = re.search(rf"probe {re.escape(path)} begin\r?\n(.*?)probe {re.escape(path)} rc=(\d+)", console, re.S)
    assert match, f"no probe of {path} on the console:\n{console[-3000:]}"
    return match.group(1), int(match.group(2))


def domain_active(app: Appliance, name: str) -> bool:
    conn = libvirt.open(app.libvirt_uri)
    try:
        return bool(conn.lookupByName(app.prefix + name).isActive())
    finally:
        conn.close()


def guest_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
            conn.settimeout(5)
            return conn.recv(16).startswith(b"ok")
    except OSError:
        return False


# -- finding 11 ----------------------------------------------------------------------------------
def test_a_forward_to_a_port_in_use_fails_the_start_cleanly(guarded):
    app = guarded
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        resp = app.api("POST", "/v1/vms", json={"name": "busy1", "network": {
            "type": "user", "port_forwards": [{"host_port": port, "guest_port": 8000}]}})
        assert resp.status_code == 500, resp.text
        assert not domain_active(app, "busy1")  # was: running, without its forward
        assert f"127.0.0.1:{port}" in resp.json()["reason"] and "in use" in resp.json()["reason"]
        ops = app.api("GET", "/v1/operations", params={"vm": "busy1"}).json()["items"]
        create = [op for op in ops if op["kind"] == "create"]
        assert create[0]["status"] == "failed" and f"127.0.0.1:{port}" in create[0]["error"]
        events = app.api("GET", "/v1/vms/busy1/events").json()["items"]
        assert any(e["kind"] == "operation-failed" and f"127.0.0.1:{port}" in e["message"] for e in events)
        vm = app.api("GET", "/v1/vms/busy1").json()
        assert vm["state"] == "stopped", vm
        # The run strategy (Always) tries again; while the port is taken the
        # guest never runs, and each try fails with the same reason.
        deadline = time.monotonic() + 8
        while time.monotonic() < deadline:
            assert not domain_active(app, "busy1")
            time.sleep(0.2)
        ops = app.api("GET", "/v1/operations", params={"vm": "busy1"}).json()["items"]
        assert all(op["status"] == "failed" for op in ops), ops
    # Once the port is free, a later try (back-off: 5 s, doubling) starts it with its forward.
    app.wait_state("busy1", "running", 60)
    deadline = time.monotonic() + 30
    while not guest_answers(port) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert guest_answers(port)
    assert app.api("DELETE", "/v1/vms/busy1", params={"force": "true"}).status_code == 204


# -- finding 16 ----------------------------------------------------------------------------------
def test_a_guest_gets_nothing_from_the_appliance_and_a_restricted_one_reaches_no_host(guarded):
    app = guarded
    api_port = app.port
    forward = free_port()
    paths = ["/healthz", "/v1/vms", "/metrics"]
    app.create_vm("open1", cloud_init={"user_data": probe_script(api_port, paths, 10)})
    app.create_vm("closed1", network={"type": "user", "outbound": "none",
                                      "port_forwards": [{"host_port": forward, "guest_port": 8000}]},
                  cloud_init={"user_data": probe_script(api_port, ["/healthz"], 5)})

    # A guest on the default user-mode NIC reaches the host's loopback (the
    # health check answers), but the API and /metrics give it nothing without the token.
    console = app.wait_console("open1", USER_DATA_DONE, 120)
    body, rc = probe_result(console, "/healthz")
    assert rc == 0 and body.strip(), console[-2000:]
    for path in ("/v1/vms", "/metrics"):
        body, rc = probe_result(console, path)
        assert rc != 0 and "401" in body, (path, body)
        assert "open1" not in body and "closed1" not in body and "items" not in body and "# HELP" not in body

    # outbound "none": the guest has its address (DHCP works) but reaches
    # nothing on the host, while its port forward still reaches it.
    console = app.wait_console("closed1", USER_DATA_DONE, 120)
    assert "eth0 10.0.2.15/24" in console
    body, rc = probe_result(console, "/healthz")
    assert rc != 0 and "ok" not in body and "status" not in body, body
    assert guest_answers(forward)
    xml = app.api("GET", "/v1/vms/closed1/domain.xml").text
    assert "restrict" in xml

    for name in ("open1", "closed1"):
        assert app.api("DELETE", f"/v1/vms/{name}", params={"force": "true"}).status_code == 204
    assert app.domain_names() == []

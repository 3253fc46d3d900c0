"""POST /v1/hosts waits (issue 16), bounded like other writes, until the
controller's first connection attempt to the new host has finished, and answers
with the host up, or down with the reason: `vmctl host add … && vmctl create …`
works in a script.

A real controller thread runs here (its own instance id, so that it never takes
another test's domains for its own), against a real unreachable URI (TCP port 1
of this machine, where nothing listens) and this machine's real libvirtd."""
from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.cli.hosts import _added
from appliance.controller import Controller

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
UNREACHABLE = "qemu+tcp://127.0.0.1:1/system"
SYSTEM_SOCKET = Path("/var/run/libvirt/libvirt-sock")
LOCAL = f"qemu+unix:///system?socket={SYSTEM_SOCKET}"


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


@pytest.fixture
def controller(store, config, service):
    ctl = Controller(store, config, f"host-wait-{uuid.uuid4().hex[:8]}", "qemu")
    service.notify = ctl._nudge
    ctl.start()
    yield ctl
    ctl.stop()


def test_an_unreachable_host_answers_down_with_the_reason(client, controller, config) -> None:
    started = time.monotonic()
    resp = client.simulate_post("/v1/hosts", json={"name": "far", "uri": UNREACHABLE})
    took = time.monotonic() - started
    assert resp.status_code == 201, resp.text
    host = resp.json
    assert host["connecting"] is False and host["last_attempt"] is not None
    assert host["up"] is False and host["observed_state"] == "down"
    assert "127.0.0.1" in host["reason"] or "onnect" in host["reason"], host["reason"]
    assert took < config.wait_timeout
    assert _added(host).startswith(f"far: added ({UNREACHABLE}), down: ")
    # The same reason stays readable afterwards.
    assert client.simulate_get("/v1/hosts/far").json["reason"] == host["reason"]


@pytest.mark.skipif(not SYSTEM_SOCKET.is_socket(), reason="no libvirtd on this machine")
def test_a_reachable_host_answers_up_and_is_placeable_at_once(client, controller, service) -> None:
    resp = client.simulate_post("/v1/hosts", json={"name": "sys", "uri": LOCAL})
    assert resp.status_code == 201, resp.text
    host = resp.json
    assert host["up"] is True and host["observed_state"] == "enabled", host
    assert host["reason"] is None and host["connecting"] is False
    assert host["inventory"]["cpus"] >= 1 and host["capacity"]["memory_mib"] > 0
    assert _added(host) == f"sys: added ({LOCAL}), enabled"


def test_wait_false_answers_at_once_while_connecting(client, controller) -> None:
    resp = client.simulate_post("/v1/hosts", json={"name": "far", "uri": UNREACHABLE},
                                params={"wait": "false"})
    assert resp.status_code == 201, resp.text
    assert resp.json["connecting"] is True and resp.json["reason"] == "not connected yet"
    # The attempt finishes by itself; a GET shows it.
    deadline = time.monotonic() + 20
    while client.simulate_get("/v1/hosts/far").json["connecting"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert client.simulate_get("/v1/hosts/far").json["connecting"] is False


def test_without_a_controller_the_answer_does_not_wait(client, config) -> None:
    started = time.monotonic()
    resp = client.simulate_post("/v1/hosts", json={"name": "far", "uri": UNREACHABLE})
    assert resp.status_code == 201, resp.text
    assert resp.json["connecting"] is True
    assert time.monotonic() - started < 2  # not config.wait_timeout: nothing would try


def test_the_heartbeat_is_no_attempt_and_a_new_uri_is_connecting_again(
        client, controller, service, store) -> None:
    """A link the heartbeat records before its first connect (down, last_seen set)
    must not end the wait; a changed URI makes the host `connecting` again."""
    controller.stop()  # the controller's parts, driven by hand
    service.add_host({"name": "far", "uri": UNREACHABLE})
    controller.hosts.sync_links()
    controller.hosts.heartbeat()
    row = store.get_host("far")
    assert row["last_seen"] is not None and row["last_attempt"] is None
    link = controller.ctx.links.get("far")
    assert controller.hosts.reconnect(link) is False
    row = store.get_host("far")
    assert row["last_attempt"] is not None and row["connect_error"]
    service.update_host("far", {"uri": "qemu+tcp://127.0.0.1:2/system"})
    assert service.get_host("far")["connecting"] is True

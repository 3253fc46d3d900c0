"""Issue 9, finding 3: host files must not leak into events.

`test:///etc/shadow` as a host URI put the file's first line into `events`
(libvirt's parse error quotes it), and `test:///HOME/token` leaked the API
token. The allowlist (test_host_uri.py) refuses such URIs now; these tests
cover what is left: a store that holds one from before the allowlist (an
upgraded home), and libvirt's messages, which never reach an API user whole.
"""
from __future__ import annotations

import time

import libvirt
from falcon import testing

from appliance.api.app import create_app
from appliance.virt import reasons

SECRET = "root:$y$j9T$not-a-real-hash:20228:0:99999:7:::"


def _secret_file(tmp_path):
    path = tmp_path / "shadow"
    path.write_text(SECRET + "\n")
    return path


def _event(service, kind: str, host: str) -> dict:
    for event in service.list_events():
        if event["kind"] == kind and f"host {host} " in event["message"]:
            return event
    raise AssertionError(f"no {kind} event for {host}: {service.list_events()}")


def test_a_stored_file_uri_is_never_opened_and_nothing_leaks(service, store, stepped_controller, tmp_path):
    secret = _secret_file(tmp_path)
    token_file = service.config.token(create=True)
    store.upsert_host({"name": "old", "uri": f"test://{secret}", "state": "enabled", "up": 0, "last_seen": None,
                       "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0, "reserved_memory_mib": 0,
                       "labels": {}, "storage": "shared", "created": time.time()})
    store.upsert_host({"name": "old2", "uri": f"test://{service.config.token_path}", "state": "enabled", "up": 0,
                       "last_seen": None, "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                       "reserved_memory_mib": 0, "labels": {}, "storage": "shared", "created": time.time()})
    stepped_controller.tick()  # links the new hosts and tries each once
    event = _event(service, "host-down", "old")
    _event(service, "host-down", "old2")
    assert "not allowed" in event["message"]
    client = testing.TestClient(create_app(service, token_file), headers={"Authorization": f"Bearer {token_file}"})
    seen = " ".join([client.simulate_get("/v1/events").text, client.simulate_get("/v1/hosts").text,
                     client.simulate_get("/v1/hosts/old/status.json").text, client.simulate_get("/metrics").text])
    assert "not-a-real-hash" not in seen and "root:" not in seen
    assert token_file not in seen


def test_a_connection_error_keeps_libvirts_text_out(tmp_path):
    secret = _secret_file(tmp_path)
    try:
        libvirt.open(f"test://{secret}")
    except libvirt.libvirtError as err:
        assert "not-a-real-hash" in err.get_error_message()  # what libvirt says, and what leaked before
        reason = reasons.connect_reason(err)
    else:
        raise AssertionError("libvirt opened a shadow file as a test driver")
    assert "not-a-real-hash" not in reason and "root" not in reason and str(secret) not in reason


def test_an_operation_error_quoting_a_file_is_replaced_and_long_ones_are_cut(tmp_path):
    secret = _secret_file(tmp_path)
    try:
        libvirt.open(f"test://{secret}")
    except libvirt.libvirtError as err:
        assert "not-a-real-hash" not in reasons.operation_reason(err)
    long = reasons.operation_reason(RuntimeError("x" * 5000 + "\nsecond line"))
    assert len(long) <= reasons.MAX_REASON and "\n" not in long


def test_a_stored_command_uri_runs_neither_in_the_controller_nor_in_metrics(service, store, stepped_controller,
                                                                             tmp_path):
    """A home upgraded from before the allowlist may hold a planted qemu+ext host."""
    marker = tmp_path / "ran-as-root"
    script = tmp_path / "script"
    script.write_text(f"#!/bin/sh\ntouch {marker}\n")
    script.chmod(0o755)
    store.upsert_host({"name": "planted", "uri": f"qemu+ext:///system?command={script}", "state": "enabled",
                       "up": 0, "last_seen": None, "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                       "reserved_memory_mib": 0, "labels": {}, "storage": "shared", "created": time.time()})
    stepped_controller.tick()  # links the planted host and tries it once
    _event(service, "host-down", "planted")
    client = testing.TestClient(create_app(service, "t"), headers={"Authorization": "Bearer t"})
    assert 'vmappliance_host_up{host="local"} 1.0' in client.simulate_get("/metrics").text
    time.sleep(0.3)  # the controller's and the collector's tries returned: this is for a child that outlived one
    assert not marker.exists()

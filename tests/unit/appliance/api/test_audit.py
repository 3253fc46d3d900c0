"""The audit trail over REST: every write of an authenticated caller leaves one event
naming who, from where, what and how it ended; reads and 401s leave none; the
service's own events carry the caller too; `?user=` and `vmctl events --user` filter."""
from __future__ import annotations

import json

import pytest
from falcon import testing

from appliance.api.app import create_app
from appliance.api.openapi import DOCUMENT
from appliance.cli import main
from appliance.errors import Failed
from appliance.files import events_text
from tests.unit.appliance.teams import add_user

HOME_TOKEN = "home-token-secret"


@pytest.fixture
def api(service):
    client = testing.TestClient(create_app(service, HOME_TOKEN))
    client.alice = add_user(service.store, "alice", "operator")
    client.vic = add_user(service.store, "vic", "viewer")
    return client


def _events(service, **filters):
    return service.store.list_events(**filters)


def _audit(service) -> list[dict]:
    return [e for e in _events(service) if e["result"] is not None]


def test_a_write_records_who_from_where_what_and_ok(api, service):
    resp = api.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped"},
                             params={"wait": "false"}, headers=api.alice)
    assert resp.status_code == 202, resp.text
    [event] = _audit(service)
    assert (event["kind"], event["message"], event["result"]) == ("write", "POST /v1/vms", "ok")
    assert event["vm_id"] == service.get_vm("web1")["id"]  # in the new VM's own log
    assert (event["actor"], event["source"], event["credential"]) == ("alice", "127.0.0.1",
                                                                      "token alice-t")
    # The service's own events of that request carry the caller as well.
    created = [e for e in _events(service) if e["kind"] == "created"]
    assert [(e["actor"], e["source"], e["result"]) for e in created] == [("alice", "127.0.0.1", None)]


def test_a_write_to_a_vm_is_that_vms_event_and_shows_in_its_events_file(api, service):
    service.create_vm({"name": "web1", "state": "stopped"})
    resp = api.simulate_put("/v1/vms/web1/state", body="running", params={"wait": "false"},
                            headers={**api.alice, "Content-Type": "text/plain"})
    assert resp.status_code == 202, resp.text
    vm_id = service.get_vm("web1")["id"]
    audit = [e for e in _events(service, vm_id=vm_id) if e["result"]]
    assert [(e["kind"], e["message"], e["result"]) for e in audit] == [
        ("write", "PUT /v1/vms/web1/state", "ok")]
    text = api.simulate_get("/v1/vms/web1/events", params={"format": "text"},
                            headers=api.alice).text
    assert "state-requested: running requested (was provisioning) by alice (api 127.0.0.1, " \
        "token alice-t)" in text
    assert "write: PUT /v1/vms/web1/state by alice (api 127.0.0.1, token alice-t): ok" in text


@pytest.mark.parametrize("who, method, path, body, status, error", [
    ("vic", "PUT", "/v1/vms/web1/state", "running", 403, "Forbidden"),  # the policy: a viewer
    ("alice", "PUT", "/v1/vms/web1/state", "flying", 422, "Invalid"),  # bad input
    ("alice", "PUT", "/v1/vms/web1/state", "pause", 409, "Conflict"),  # a stopped VM
    ("alice", "DELETE", "/v1/hosts/local", None, 403, "Forbidden"),  # hosts are the admin's
    ("alice", "PUT", "/v1/vms/nope/state", "running", 404, "NotFound"),
])
def test_a_refused_write_records_the_refusal_and_its_reason(api, service, who, method, path, body,
                                                            status, error):
    service.create_vm({"name": "web1", "state": "stopped"})
    before = service.get_vm("web1")
    resp = api.simulate_request(method, path, body=body, params={"wait": "false"},
                                headers={**getattr(api, who), "Content-Type": "text/plain"})
    assert resp.status_code == status, resp.text
    [event] = _audit(service)
    assert event["kind"] == "refused"
    assert event["message"] == f"{method} {path}"
    assert event["result"] == f"{status} {error}: {resp.json['reason']}"
    assert event["actor"] == who
    if "web1" in path:  # the VM's own log shows who tried
        assert event["vm_id"] == before["id"]
    assert service.get_vm("web1")["generation"] == before["generation"]


def test_a_failure_records_the_error_class_and_reason(api, service, monkeypatch):
    service.create_vm({"name": "web1", "state": "stopped"})

    def broken(*args, **kwargs):
        raise Failed("libvirt said no")

    monkeypatch.setattr(service, "set_state", broken)
    resp = api.simulate_put("/v1/vms/web1/state", json={"state": "running"}, headers=api.alice)
    assert resp.status_code == 500
    [event] = _audit(service)
    assert (event["kind"], event["result"]) == ("failed", "500 Failed: libvirt said no")


def test_an_unexpected_exception_is_recorded_as_failed(api, service, monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError("bug")

    monkeypatch.setattr(service, "create_group", crash)
    resp = api.simulate_post("/v1/groups", json={"name": "g", "policy": "affinity"},
                             headers=api.alice)
    assert resp.status_code == 500
    [event] = _audit(service)
    assert event["kind"] == "failed" and event["result"].startswith("500")


def test_no_token_and_reads_record_nothing(api, service):
    """A 401 has no user (and an event per anonymous request would let anyone grow the log);
    reads stay free of writes (the benchmark's hot path)."""
    service.create_vm({"name": "web1", "state": "stopped"})
    count = len(_events(service))
    for method in ("POST", "PUT", "PATCH", "DELETE"):
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            resp = api.simulate_request(method, "/v1/vms/web1/state", body="running",
                                        headers=headers)
            assert resp.status_code == 401
    for template, item in DOCUMENT["paths"].items():
        if "get" in item:
            path = template.replace("{name}", "web1").replace("{file}", "state").replace(
                "{op_id}", "0" * 32)
            api.simulate_get(path, headers=api.alice)
            api.simulate_head(path, headers=api.alice)
    assert len(_events(service)) == count


def test_names_in_the_path_are_quoted_and_cut(api, service):
    resp = api.simulate_put("/v1/vms/a%20b%3Fc/state", body="running", headers=api.alice)
    assert resp.status_code == 404
    long = "x" * 500
    api.simulate_delete(f"/v1/vms/{long}", headers=api.alice)
    first, second = _audit(service)
    assert first["message"] == "PUT /v1/vms/a%20b%3Fc/state"
    assert len(second["message"]) < 100 and second["message"].startswith("DELETE /v1/vms/xxx")
    assert len(second["result"]) <= 300


def test_events_filter_by_user(api, service):
    service.create_vm({"name": "web1", "state": "stopped"})  # by system
    # wait=false: no controller runs here, and a waiting write would wait out wait_timeout
    api.simulate_put("/v1/vms/web1/cpus", body="2", params={"wait": "false"},
                     headers={**api.alice, "Content-Type": "text/plain"})
    api.simulate_put("/v1/vms/web1/cpus", body="3", params={"wait": "false"},
                     headers={**api.vic, "Content-Type": "text/plain"})
    by_alice = api.simulate_get("/v1/events", params={"user": "alice"}, headers=api.vic).json
    kinds = [(e["kind"], e["actor"]) for e in by_alice["items"]]
    assert ("updated", "alice") in kinds and ("write", "alice") in kinds
    assert {e["actor"] for e in by_alice["items"]} == {"alice"}
    by_vic = api.simulate_get("/v1/events", params={"user": "vic", "format": "text"},
                              headers=api.vic).text
    assert by_vic.count("\n") == 1 and "refused: PUT /v1/vms/web1/cpus by vic" in by_vic
    assert api.simulate_get("/v1/events", params={"user": "nobody"},
                            headers=api.vic).json["items"] == []
    for event in by_alice["items"]:  # JSON events carry who, from where, and the result
        assert {"actor", "source", "credential", "result"} <= set(event)


class _ThroughTestClient:
    """vmctl's Client, answered by the app in this process."""

    def __init__(self, client, headers):
        self.client, self.headers = client, headers

    def request(self, method, path, body=None, query=None, **kwargs):
        params = {k: v for k, v in (query or {}).items() if v is not None}
        resp = self.client.simulate_request(method, path, json=body, params=params,
                                            headers=self.headers)
        assert resp.status_code < 400, resp.text
        return resp.json if resp.content else None

    def get(self, path, **query):
        return self.request("GET", path, query=query)


def test_vmctl_events_user_shows_who_did_what(api, service, monkeypatch, capsys):
    import appliance.cli as cli

    from appliance.cli.target import Target

    # vmctl's client (appliance/cli/target.py), here one through the test client
    monkeypatch.setattr(cli, "client_for", lambda args: (
        _ThroughTestClient(api, api.alice), Target("http://test", "the test", None, "")))
    service.create_vm({"name": "web1", "state": "stopped"})
    assert main(["lock", "web1", "--reason", "exam running"]) == 0
    capsys.readouterr()
    assert main(["events", "--user", "alice"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2, out
    assert "locked: exam running by alice (api 127.0.0.1, token alice-t)" in out[0]
    assert "PUT /v1/vms/web1/lock by alice (api 127.0.0.1, token alice-t): ok" in out[1]
    assert main(["--json", "events", "--user", "system"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events and {e["actor"] for e in events} == {"system"}


def test_events_text_without_an_actor_is_as_before():
    """Events from before the audit trail (no actor) read as they did."""
    old = {"time": 0.0, "vm_name": "web1", "kind": "created", "message": "VM created"}
    assert events_text([old]) == "1970-01-01T00:00:00Z web1 created: VM created\n"


def test_a_body_over_the_limit_is_recorded_as_refused(api, service):
    resp = api.simulate_post("/v1/vms", body="x" * (2 << 20), headers={
        **api.alice, "Content-Type": "application/json"})
    assert resp.status_code == 413
    [event] = _audit(service)
    assert (event["kind"], event["message"], event["actor"]) == ("refused", "POST /v1/vms", "alice")
    assert event["result"].startswith("413 ")


def test_an_audit_event_of_no_vm_is_seen_in_the_callers_project_alone(api, service):
    """Who tried what outside a VM (a group, a host) is not shown to other projects."""
    service.store.insert_project({"name": "web", "description": "", "created": 0.0})
    webop = add_user(service.store, "webop", "operator", projects=("web",))
    resp = api.simulate_post("/v1/groups", json={"name": "g1", "policy": "bogus"}, headers=webop)
    assert resp.status_code == 422
    seen_in_web = api.simulate_get("/v1/events", params={"user": "webop"}, headers=webop).json
    assert [(e["kind"], e["project"]) for e in seen_in_web["items"]] == [("refused", "web")]
    seen_in_default = api.simulate_get("/v1/events", params={"user": "webop"}, headers=api.alice)
    assert seen_in_default.json["items"] == []

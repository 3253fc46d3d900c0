"""Issue 13's REST routes (appliance/api/snapshots.py, backups.py) over a real service and
store, the controller on libvirt's test driver: each route is one service call, waits
for its operation unless wait=false, and a refused request answers 4xx with its field
and changes nothing."""
from __future__ import annotations

import time

import pytest
from falcon import testing

from appliance import backup_chain
from appliance.api.app import create_app

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


@pytest.fixture
def web1(client, controller):
    resp = client.simulate_post("/v1/vms", json={"name": "web1"})
    assert resp.status_code == 201, resp.text
    return resp.json


def ops_of(service, vm: str) -> list[str]:
    return [op["id"] for op in service.list_operations(vm=vm)]


# -- snapshots -------------------------------------------------------------------------------------
def test_take_list_show_revert_and_delete_a_snapshot(client, service, web1):
    resp = client.simulate_post("/v1/vms/web1/snapshots",
                                json={"name": "before", "description": "first"})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/vms/web1/snapshots/before"
    assert resp.json["operation"]["status"] == "succeeded"
    assert resp.json["operation"]["kind"] == "snapshot"
    assert resp.json["snapshot"] == service.get_snapshot("web1", "before")
    assert resp.json["snapshot"]["state"] == "ready" and resp.json["snapshot"]["memory"] is False
    listed = client.simulate_get("/v1/vms/web1/snapshots").json["items"]
    assert [s["name"] for s in listed] == ["before"]
    assert client.simulate_get("/v1/vms/web1/snapshots/before").json == listed[0]
    # The directory's files, as in the mount: info.json is the snapshot.
    info = client.simulate_get("/v1/vms/web1/snapshots/before/info.json")
    assert info.status_code == 200 and info.json == listed[0]
    assert client.simulate_get("/v1/vms/web1/snapshots/before/action").json == {"action": None}
    reverted = client.simulate_put("/v1/vms/web1/snapshots/before/action",
                                   json={"action": "revert"})
    assert reverted.status_code == 200, reverted.text
    assert reverted.json["operation"]["kind"] == "revert"
    assert reverted.json["operation"]["status"] == "succeeded"
    again = client.simulate_post("/v1/vms/web1/snapshots/before/revert")
    assert again.status_code == 200 and again.json["operation"]["kind"] == "revert"
    gone = client.simulate_delete("/v1/vms/web1/snapshots/before")
    assert gone.status_code == 200, gone.text
    assert gone.json["operation"]["kind"] == "snapshot-delete"
    missing = client.simulate_get("/v1/vms/web1/snapshots/before")
    assert missing.status_code == 404 and missing.json["field"] == "snapshot"


def test_wait_false_answers_202_with_the_operation(client, service, web1):
    resp = client.simulate_post("/v1/vms/web1/snapshots", json={"name": "quick"},
                                params={"wait": "false"})
    assert resp.status_code == 202, resp.text
    op = resp.json["operation"]
    assert resp.headers["location"] == f"/v1/operations/{op['id']}"
    assert op["kind"] == "snapshot" and op["params"]["name"] == "quick"
    assert service.wait_operation(op["id"], 10)["status"] == "succeeded"


@pytest.mark.parametrize("body, status, field", [
    ({"name": "Bad_Name"}, 422, "name"),
    ({"name": "x" * 64}, 422, "name"),
    ({"name": "s1", "memory": "yes"}, 422, "memory"),
    ({"name": "s1", "disks": ["vda"]}, 422, "disks"),
    ({"name": "taken"}, 409, "name"),  # EEXIST in the mount
])
def test_a_refused_snapshot_changes_nothing(client, service, web1, body, status, field):
    assert client.simulate_post("/v1/vms/web1/snapshots", json={"name": "taken"}).status_code == 201
    before, ops = service.list_snapshots("web1"), ops_of(service, "web1")
    resp = client.simulate_post("/v1/vms/web1/snapshots", json=body)
    assert resp.status_code == status and resp.json["field"] == field, resp.text
    assert service.list_snapshots("web1") == before and ops_of(service, "web1") == ops


@pytest.mark.parametrize("body, headers, field", [
    ({"action": "explode"}, None, "action"),
    ({"action": "revert\nrevert"}, None, "action"),
    ({"nothing": 1}, None, "action"),
])
def test_a_refused_action_changes_nothing(client, service, web1, body, headers, field):
    client.simulate_post("/v1/vms/web1/snapshots", json={"name": "s1"})
    before, ops = service.list_snapshots("web1"), ops_of(service, "web1")
    resp = client.simulate_put("/v1/vms/web1/snapshots/s1/action", json=body)
    assert resp.status_code == 422 and resp.json["field"] == field, resp.text
    text = client.simulate_put("/v1/vms/web1/snapshots/s1/action", body="rm -rf /",
                               headers={"Content-Type": "text/plain"})
    assert text.status_code == 422 and text.json["field"] == "action"
    assert service.list_snapshots("web1") == before and ops_of(service, "web1") == ops


def test_read_only_and_unknown_snapshot_files(client, web1):
    client.simulate_post("/v1/vms/web1/snapshots", json={"name": "s1"})
    resp = client.simulate_put("/v1/vms/web1/snapshots/s1/info.json", json={"info.json": "x"})
    assert resp.status_code == 403 and resp.json["field"] == "info.json"
    assert client.simulate_get("/v1/vms/web1/snapshots/s1/passwd").status_code == 404
    assert client.simulate_get("/v1/vms/web1/snapshots/s9/info.json").status_code == 404
    assert client.simulate_get("/v1/vms/nope/snapshots").status_code == 404


def test_a_body_past_the_limit_is_refused_before_the_service(client, service, web1):
    big = {"name": "s1", "description": "x" * (2 << 20)}
    resp = client.simulate_post("/v1/vms/web1/snapshots", json=big)
    assert resp.status_code == 413
    assert service.list_snapshots("web1") == []


# -- backup targets, backups ------------------------------------------------------------------------
def test_backup_targets_are_added_listed_and_removed(client, tmp_path):
    (tmp_path / "nas").mkdir()
    resp = client.simulate_post("/v1/backup-targets", json={"name": "nas",
                                                            "path": str(tmp_path / "nas")})
    assert resp.status_code == 201, resp.text
    assert resp.headers["location"] == "/v1/backup-targets/nas"
    assert resp.json["path"] == str(tmp_path / "nas") and resp.json["backups"] == 0
    assert [t["name"] for t in client.simulate_get("/v1/backup-targets").json["items"]] == ["nas"]
    assert client.simulate_get("/v1/backup-targets/nas").json["name"] == "nas"
    assert client.simulate_delete("/v1/backup-targets/nas").status_code == 204
    assert client.simulate_get("/v1/backup-targets/nas").status_code == 404


@pytest.mark.parametrize("path", ["/etc", "/", "relative/dir", "/nonexistent-e13", "/tmp/../etc"])
def test_a_target_path_that_is_not_a_safe_directory_is_refused(client, service, path):
    resp = client.simulate_post("/v1/backup-targets", json={"name": "bad", "path": path})
    assert resp.status_code == 422 and resp.json["field"] == "path", resp.text
    assert service.list_backup_targets() == []


def _backup_row(service, vm: dict, target: str) -> str:
    """A good full backup's record, as the controller leaves it (its files are not made)."""
    backup_id = backup_chain.new_backup_id(time.time())
    service.store.insert_backup({
        "id": backup_id, "vm_id": vm["id"], "vm_name": vm["name"], "project": "default",
        "target": target, "kind": "full", "parent": None, "chain": backup_id,
        "checkpoint": None, "status": "good", "disks": [], "size": 4096,
        "created": time.time(), "finished": time.time()})
    return backup_id


def test_backups_are_started_listed_shown_and_deleted(client, service, web1, tmp_path):
    (tmp_path / "nas").mkdir()
    client.simulate_post("/v1/backup-targets", json={"name": "nas", "path": str(tmp_path / "nas")})
    resp = client.simulate_post("/v1/vms/web1/backups", json={"full": True},
                                params={"wait": "false"})
    assert resp.status_code == 202, resp.text
    assert resp.json["operation"]["kind"] == "backup"
    assert resp.json["operation"]["params"]["target"] == "nas"  # the only target
    service.wait_operation(resp.json["operation"]["id"], 10)  # the test driver has no backup job
    backup_id = _backup_row(service, web1, "nas")
    mine = client.simulate_get("/v1/vms/web1/backups").json["items"]  # the handler's too
    assert backup_id in [b["id"] for b in mine]
    assert mine == service.list_backups(vm="web1")
    assert client.simulate_get("/v1/backups", params={"vm": "web1"}).json["items"] == mine
    shown = client.simulate_get(f"/v1/backups/{backup_id}").json
    assert shown["kind"] == "full" and shown["depends_on"] == []
    assert shown["path"].startswith(str(tmp_path / "nas"))
    refused = client.simulate_delete("/v1/backup-targets/nas")
    assert refused.status_code == 409  # a backup in it is listed
    assert client.simulate_delete(f"/v1/backups/{backup_id}").status_code == 204
    assert client.simulate_get(f"/v1/backups/{backup_id}").status_code == 404


@pytest.mark.parametrize("backup_id", ["../../etc", "x" * 300, "20260101T000000Z-zzzzzz"])
def test_a_backup_id_that_names_nothing_is_404(client, backup_id):
    assert client.simulate_get(f"/v1/backups/{backup_id}").status_code == 404
    assert client.simulate_post(f"/v1/backups/{backup_id}/restore",
                                json={"name": "r1"}).status_code == 404


def test_a_restore_of_a_broken_chain_is_refused_and_makes_no_vm(client, service, web1, tmp_path):
    (tmp_path / "nas").mkdir()
    client.simulate_post("/v1/backup-targets", json={"name": "nas", "path": str(tmp_path / "nas")})
    backup_id = _backup_row(service, web1, "nas")  # listed good, but no files on the target
    vms = [vm["name"] for vm in service.list_vms()]
    resp = client.simulate_post(f"/v1/backups/{backup_id}/restore", json={"name": "web1-r"})
    assert 400 <= resp.status_code < 500 and resp.json["reason"], resp.text
    assert [vm["name"] for vm in service.list_vms()] == vms


# -- clone ------------------------------------------------------------------------------------------
def test_a_clone_answers_the_new_vm_and_its_operation(client, service, web1):
    resp = client.simulate_post("/v1/vms/web1/clone", json={"name": "web2"},
                                params={"wait": "false"})
    assert resp.status_code == 202, resp.text
    assert resp.headers["location"] == f"/v1/operations/{resp.json['operation']['id']}"
    assert resp.json["vm"]["name"] == "web2" and resp.json["vm"]["id"] != web1["id"]
    assert resp.json["operation"]["kind"] == "create"


@pytest.mark.parametrize("body, field", [({"name": "Bad Name"}, "name"), ({}, "name"),
                                         ({"name": "web2", "extra": 1}, "extra"),
                                         ({"name": "web1"}, "name")])
def test_a_refused_clone_makes_nothing(client, service, web1, body, field):
    vms = [vm["name"] for vm in service.list_vms()]
    resp = client.simulate_post("/v1/vms/web1/clone", json=body)
    assert 400 <= resp.status_code < 500 and resp.json.get("field") == field, resp.text
    assert [vm["name"] for vm in service.list_vms()] == vms


def test_a_vm_backups_path_is_404_for_a_name_that_is_no_vm_of_the_caller(client, service,
                                                                         monkeypatch):
    calls = []
    real = service.list_backups
    monkeypatch.setattr(service, "list_backups", lambda *a, **k: calls.append(k) or real(*a, **k))
    resp = client.simulate_get("/v1/vms/ghost/backups")
    assert resp.status_code == 404 and resp.json["field"] == "name"
    assert calls == [{"vm": "ghost", "vm_must_exist": True}]  # one service call decides
    assert client.simulate_get("/v1/backups", params={"vm": "ghost"}).json["items"] == []

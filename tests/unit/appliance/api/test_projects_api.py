"""Projects over REST, and the quota under concurrency: 20 creates at once
against a quota of 5 VMs make exactly 5, whether they come through one
process's threads (several Store connections on one SQLite file, as the API
workers have) or through separate processes, each with its own app and store."""
from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
from falcon import testing

from appliance.access import tokens
from appliance.api.app import create_app
from appliance.config import Config
from appliance.service import Service
from appliance.store import Store
from appliance.store.changes import IDLE_STOP

TOKEN = "projects-admin"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
CREATES = 20
QUOTA = 5


def add_user(store: Store, name: str, role: str, projects: list[str]) -> dict:
    """A user and a token of theirs; the headers that send it."""
    store.insert_user({"name": name, "role": role, "projects": projects, "created": 0, "disabled": 0})
    token_id, token = tokens.new_token()
    store.insert_token({"id": token_id, "user": name, "hash": tokens.token_hash(token),
                        "prefix": tokens.shown_prefix(token), "description": "", "created": 0,
                        "expires": None, "last_used": None, "revoked": None})
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=ADMIN)


def test_crud(client):
    made = client.simulate_post("/v1/projects", json={"name": "web", "description": "the web team",
                                                      "quota": {"vms": 5, "disk_gib": "200G"}})
    assert made.status_code == 201, made.text
    assert made.headers["location"] == "/v1/projects/web"
    assert made.json["quota"] == {"vms": 5, "cpus": None, "memory_mib": None, "disk_gib": 200}
    assert client.simulate_get("/v1/projects/web").json == made.json
    names = [p["name"] for p in client.simulate_get("/v1/projects").json["items"]]
    assert names == ["default", "web"]
    patched = client.simulate_patch("/v1/projects/web", json={"quota": {"memory_mib": "16G",
                                                                        "vms": None}})
    assert patched.status_code == 200
    assert patched.json["quota"] == {"vms": None, "cpus": None, "memory_mib": 16384, "disk_gib": 200}
    taken = client.simulate_post("/v1/projects", json={"name": "web"})
    assert taken.status_code == 409 and taken.json["field"] == "name"
    refused = client.simulate_patch("/v1/projects/web", json={"quota": {"vms": -1}})
    assert refused.status_code == 422 and refused.json["field"] == "quota.vms"
    assert client.simulate_delete("/v1/projects/web").status_code == 204
    assert client.simulate_get("/v1/projects/web").status_code == 404
    default = client.simulate_delete("/v1/projects/default")
    assert default.status_code == 409 and "cannot be deleted" in default.json["reason"]


def test_other_users_see_their_projects_only_and_change_none(client, store):
    for name in ("web", "db"):
        assert client.simulate_post("/v1/projects", json={"name": name}).status_code == 201
    operator = add_user(store, "alice", "operator", ["web"])
    mine = client.simulate_get("/v1/projects", headers=operator)
    assert [p["name"] for p in mine.json["items"]] == ["web"]
    assert client.simulate_get("/v1/projects/web", headers=operator).status_code == 200
    hidden = client.simulate_get("/v1/projects/db", headers=operator)
    missing = client.simulate_get("/v1/projects/nope", headers=operator)
    assert hidden.status_code == missing.status_code == 404
    assert hidden.json["reason"] == "no project named 'db'"
    for method, path, body in (("POST", "/v1/projects", {"name": "x"}),
                               ("PATCH", "/v1/projects/web", {"quota": {"vms": 99}}),
                               ("DELETE", "/v1/projects/web", None)):
        resp = client.simulate_request(method, path, json=body, headers=operator)
        assert resp.status_code == 403, (method, path, resp.text)
    assert client.simulate_get("/v1/projects/web").json["quota"]["vms"] is None


def test_an_operator_meets_the_quota_of_their_project(client, store):
    client.simulate_post("/v1/projects", json={"name": "web", "quota": {"vms": 1}})
    operator = add_user(store, "alice", "operator", ["web"])
    body = {"name": "w1", "state": "stopped"}
    first = client.simulate_post("/v1/vms", json=body, headers=operator, params={"wait": "false"})
    assert first.status_code == 202, first.text
    second = client.simulate_post("/v1/vms", json={**body, "name": "w2"}, headers=operator,
                                  params={"wait": "false"})
    assert second.status_code == 409
    assert second.json["field"] == "quota"
    assert second.json["reason"].startswith("quota exceeded in project web: VMs used 1, limit 1")
    usage = client.simulate_get("/v1/projects/web", headers=operator).json["usage"]
    assert usage["vms"] == 1


# -- concurrency -------------------------------------------------------------------------
def _create(app_client: testing.TestClient, name: str) -> tuple[int, str | None, str]:
    resp = app_client.simulate_post("/v1/vms", json={"name": name, "state": "stopped"},
                                    params={"wait": "false", "project": "web"}, headers=ADMIN)
    body = resp.json or {}
    return resp.status_code, body.get("field"), body.get("reason", "")


def _apps(config: Config, count: int) -> list[testing.TestClient]:
    """`count` apps, each with its own Store on the one file (as gunicorn's workers)."""
    return [testing.TestClient(create_app(Service(Store(config.db_path), config), TOKEN))
            for _ in range(count)]


def _assert_exactly_the_quota(results: list[tuple[int, str | None, str]]) -> None:
    made = [r for r in results if r[0] == 202]
    refused = [r for r in results if r[0] != 202]
    assert len(made) == QUOTA, results
    assert len(refused) == CREATES - QUOTA
    for status, field, reason in refused:
        assert (status, field) == (409, "quota"), (status, field, reason)
        assert reason.startswith(f"quota exceeded in project web: VMs used {QUOTA}, limit {QUOTA}")


def _web_vms(client: testing.TestClient) -> list[str]:
    return [vm["name"] for vm in
            client.simulate_get("/v1/vms", params={"project": "web"}).json["items"]]


def _after_a_delete_one_more_fits(client: testing.TestClient) -> None:
    victim = _web_vms(client)[0]
    gone = client.simulate_delete(f"/v1/vms/{victim}", params={"project": "web", "wait": "false"})
    assert gone.status_code == 202, gone.text
    assert client.simulate_get("/v1/projects/web").json["usage"]["vms"] == QUOTA - 1
    assert _create(client, "after-delete")[0] == 202
    status, field, _ = _create(client, "one-too-many")
    assert (status, field) == (409, "quota")


def test_twenty_concurrent_creates_through_several_connections_make_exactly_five(client, config):
    client.simulate_post("/v1/projects", json={"name": "web", "quota": {"vms": QUOTA}})
    apps = _apps(config, 4)
    start = threading.Barrier(CREATES)
    results: list[tuple[int, str | None, str]] = []

    def one(i: int) -> None:
        start.wait()
        results.append(_create(apps[i % len(apps)], f"c{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(CREATES)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    _assert_exactly_the_quota(results)
    assert len(_web_vms(client)) == QUOTA
    _after_a_delete_one_more_fits(client)


def _process(config: Config, first: int, count: int, start, results) -> None:
    """One API worker's worth: its own app and store, `count` creates from threads."""
    app = _apps(config, 1)[0]

    def one(i: int) -> None:
        start.wait()
        results.put(_create(app, f"p{i}"))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(first, first + count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)


def _wait_for_no_store_watchers(timeout: float = IDLE_STOP + 10) -> None:
    deadline = time.monotonic() + timeout
    while any(t.name == "store-changes" for t in threading.enumerate()):
        assert time.monotonic() < deadline, "a store-changes watcher does not stop"
        time.sleep(0.05)


def test_twenty_concurrent_creates_from_four_processes_make_exactly_five(client, config):
    client.simulate_post("/v1/projects", json={"name": "web", "quota": {"vms": QUOTA}})
    # fork: 0.5 s where spawn's fresh interpreters took 17. Each child makes its own
    # Store (connections of its own) and never touches the parent's, and leaves
    # by os._exit (multiprocessing's), so no inherited connection is closed there.
    # A fork copies SQLite's mutexes as they are: a store-changes watcher of an earlier
    # test (appliance/store/changes.py, a thread in SQLite 100 times a second) could
    # hold one and leave a child blocked forever on its first connection. Watchers
    # stop by themselves once nobody waits (IDLE_STOP); fork after they have.
    _wait_for_no_store_watchers()
    forked = multiprocessing.get_context("fork")
    start, results = forked.Barrier(CREATES, timeout=120), forked.Queue()
    per_process = CREATES // 4
    workers = [forked.Process(target=_process, args=(config, i * per_process, per_process, start,
                                                    results)) for i in range(4)]
    for worker in workers:
        worker.start()
    collected = []
    deadline = time.monotonic() + 120
    while len(collected) < CREATES and time.monotonic() < deadline:
        collected.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
    for worker in workers:
        worker.join(30)
        assert worker.exitcode == 0
    _assert_exactly_the_quota(collected)
    assert len(_web_vms(client)) == QUOTA
    _after_a_delete_one_more_fits(client)

"""The REST view over a real service and store (controller on the test driver)."""
import pytest
from falcon import testing

from appliance.api.app import create_app

TOKEN = "sekrit"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


def test_token_required(service):
    bare = testing.TestClient(create_app(service, TOKEN))
    assert bare.simulate_get("/v1/vms").status_code == 401
    assert bare.simulate_get("/v1/vms", headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert bare.simulate_get("/healthz").status_code == 200


def test_create_get_list(client, controller):
    resp = client.simulate_post("/v1/vms", json={"name": "web1", "memory": "256M"})
    assert resp.status_code == 201, resp.text
    assert resp.json["state"] == "running" and resp.headers["location"] == "/v1/vms/web1"
    got = client.simulate_get("/v1/vms/web1")
    assert got.json["spec"]["memory"] == 256
    assert got.headers["etag"] == f'"{got.json["generation"]}"'
    assert [vm["name"] for vm in client.simulate_get("/v1/vms", params={"state": "running"}).json["items"]] == ["web1"]
    assert client.simulate_get("/v1/vms", params={"state": "stopped"}).json["items"] == []


@pytest.mark.parametrize("body, field", [
    ({"name": "Bad Name"}, "name"), ({"name": "ok", "cpus": -1}, "cpus"), ({"name": "ok", "memory": "x"}, "memory"),
    ({"name": "ok", "image": "missing"}, "image"), ({"name": "ok", "state": "exploded"}, "state"), ([], None),
])
def test_bad_create_is_refused_with_the_field(client, body, field):
    resp = client.simulate_post("/v1/vms", json=body)
    assert resp.status_code in (404, 422), resp.text
    assert resp.json.get("field") == field
    assert client.simulate_get("/v1/vms").json["items"] == []


def test_malformed_json_is_400(client):
    resp = client.simulate_post("/v1/vms", body="{nope", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400


def test_state_put_json_and_text_and_async(client, controller):
    client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped"})
    resp = client.simulate_put("/v1/vms/web1/state", json={"state": "running"})
    assert resp.status_code == 200 and resp.json["state"] == "running"
    resp = client.simulate_put("/v1/vms/web1/state", body="paused\n", headers={"Content-Type": "text/plain"})
    assert resp.json["state"] == "paused"
    resp = client.simulate_put("/v1/vms/web1/state", json={"state": "running"}, params={"wait": "false"})
    assert resp.status_code == 202
    op = client.simulate_get(resp.headers["location"], params={"wait": "10"}).json
    assert op["status"] == "succeeded"
    assert client.simulate_get("/v1/vms/web1/state").json == {"state": "running"}
    assert client.simulate_get("/v1/vms/web1/state", params={"format": "text"}).text == "running\n"
    assert client.simulate_put("/v1/vms/web1/state", json={"state": "bogus"}).status_code == 422


def test_if_match_412(client):
    etag = client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped"},
                                params={"wait": "false"}).status_code
    assert etag == 202
    current = client.simulate_get("/v1/vms/web1").headers["etag"]
    assert client.simulate_patch("/v1/vms/web1", json={"cpus": 2}, headers={"If-Match": current},
                                 params={"wait": "false"}).status_code == 202
    resp = client.simulate_patch("/v1/vms/web1", json={"cpus": 3}, headers={"If-Match": current})
    assert resp.status_code == 412 and resp.json["field"] == "generation"


def test_delete_running_is_409_then_forced(client, controller):
    client.simulate_post("/v1/vms", json={"name": "web1"})
    assert client.simulate_delete("/v1/vms/web1").status_code == 409
    assert client.simulate_delete("/v1/vms/web1", params={"force": "true"}).status_code == 204
    assert client.simulate_get("/v1/vms/web1").status_code == 404


def test_files_read_only_and_unknown(client):
    client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped"}, params={"wait": "false"})
    assert client.simulate_put("/v1/vms/web1/status.json", body="{}").status_code == 403
    assert client.simulate_get("/v1/vms/web1/nothing").status_code == 404
    assert client.simulate_get("/v1/vms/web1/spec.json").json["name"] == "web1"


def test_image_upload_checks_content(client, tmp_path):
    assert client.simulate_put("/v1/images/junk", body=b"not a disk" * 100).status_code == 422
    disk = bytearray(1 << 16)
    disk[510:512] = b"\x55\xaa"
    resp = client.simulate_put("/v1/images/tiny", body=bytes(disk))
    assert resp.status_code == 201 and resp.json["format"] == "qcow2"  # stored converted
    assert {i["name"] for i in client.simulate_get("/v1/images").json["items"]} == {"demo", "tiny"}
    assert client.simulate_delete("/v1/images/tiny").status_code == 204


def test_openapi_document_lists_routes(client):
    doc = client.simulate_get("/v1/openapi.json").json
    assert doc["openapi"].startswith("3.")
    assert {"/v1/vms", "/v1/vms/{name}", "/v1/vms/{name}/state", "/v1/operations/{op_id}"} <= set(doc["paths"])


def test_a_polled_vm_is_read_again_only_after_a_commit(client, service, config):
    """The API keeps a VM's row per thread while nothing is committed (store/unchanged.py):
    polling reads it once, and a change by another connection (the controller's,
    another worker's) is in the very next answer."""
    from appliance.store import Store

    client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped"}, params={"wait": "false"})
    seen: list[str] = []
    service.store.db.conn.set_trace_callback(
        lambda sql: seen.append(sql) if sql.startswith("SELECT") and "FROM [vms]" in sql else None)
    first = client.simulate_get("/v1/vms/web1").json
    assert client.simulate_get("/v1/vms/web1").json == first
    assert len(seen) == 1
    other = Store(config.db_path)
    other.update_vm(first["id"], observed_state="paused")
    assert client.simulate_get("/v1/vms/web1").json["state"] == "paused"
    assert len(seen) == 2


def test_a_kept_vm_answer_is_the_view_as_written_and_follows_every_commit(client, service, config):
    """GET /v1/vms/NAME keeps its written answer while nothing is committed
    (Service.rendered_vm): the bytes are the view's JSON as resp.media writes it, with
    its ETag, and a change made through the API (this thread's connection) or by another
    connection is in the very next answer."""
    import pydantic_core

    from appliance.access.principal import SYSTEM, acting_as
    from appliance.store import Store

    client.simulate_post("/v1/vms", json={"name": "web1", "state": "stopped"}, params={"wait": "false"})
    first = client.simulate_get("/v1/vms/web1")
    with acting_as(SYSTEM):
        view = service.get_vm("web1")
    assert first.content == pydantic_core.to_json(view)
    assert first.headers["content-type"] == "application/json"
    assert first.headers["etag"] == f'"{view["generation"]}"'
    assert client.simulate_get("/v1/vms/web1").content == first.content
    changed = client.simulate_patch("/v1/vms/web1", json={"cpus": 2}, params={"wait": "false"},
                                    headers={**AUTH, "If-Match": first.headers["etag"]})
    assert changed.status_code in (200, 202), changed.text
    again = client.simulate_get("/v1/vms/web1")
    assert again.json["spec"]["cpus"] == 2 and again.json["generation"] == view["generation"] + 1
    assert again.headers["etag"] == f'"{view["generation"] + 1}"'
    Store(config.db_path).update_vm(view["id"], observed_state="paused")
    assert client.simulate_get("/v1/vms/web1").json["state"] == "paused"
    assert client.simulate_get("/v1/vms/nope").status_code == 404

"""/v1/me, /v1/users, /v1/tokens over REST, and the security regressions of users
and tokens: no answer carries a token's hash (or a token, after its POST); an
expired, revoked or disabled user's token is 401; a non-admin neither sees nor
revokes others' tokens (404) nor manages users (403); the last admin stays."""
from __future__ import annotations

import time

import pytest

from appliance.access.tokens import LEGACY_TOKEN_ID, token_hash
from appliance.api.app import create_app
from tests.unit.appliance.teams import bearer_client as client
from tests.unit.appliance.teams import user_over_rest

HOME_TOKEN = "home-token-of-the-appliance-0123456789abcdef"  # noqa: S105 - a test's


@pytest.fixture
def app(service):
    service.store.insert_project({"name": "web", "description": "", "quota": {}, "created": 0.0})
    return create_app(service, HOME_TOKEN)


@pytest.fixture
def admin(app):
    return client(app, HOME_TOKEN)


def add_user(admin, name: str, role: str, projects=("web",)) -> str:
    """The user, and a token of theirs."""
    return user_over_rest(admin, name, role, projects)[1]


def test_me_names_the_caller_and_the_project_of_the_request(app, admin):
    assert admin.simulate_get("/v1/me").json == {
        "user": "admin", "role": "admin", "projects": ["default"], "project": "default",
        "token_id": LEGACY_TOKEN_ID}
    alice = client(app, add_user(admin, "alice", "operator", ("web", "default")))
    me = alice.simulate_get("/v1/me").json
    assert (me["user"], me["role"], me["projects"], me["project"]) == ("alice", "operator", ["web", "default"], "web")
    assert alice.simulate_get("/v1/me", params={"project": "default"}).json["project"] == "default"


def test_users_crud_over_rest(admin):
    resp = admin.simulate_post("/v1/users", json={"name": "alice", "role": "operator", "projects": ["web"]})
    assert resp.status_code == 201 and resp.headers["location"] == "/v1/users/alice"
    assert admin.simulate_get("/v1/users/alice").json["projects"] == ["web"]
    assert [u["name"] for u in admin.simulate_get("/v1/users").json["items"]] == ["admin", "alice"]
    assert admin.simulate_patch("/v1/users/alice", json={"role": "viewer"}).json["role"] == "viewer"
    refused = admin.simulate_post("/v1/users", json={"name": "bob", "projects": ["nope"]})
    assert refused.status_code == 404 and refused.json["field"] == "projects[0]"
    refused = admin.simulate_post("/v1/users", json={"name": "bob", "role": "root"})
    assert refused.status_code == 422 and refused.json["field"] == "role"
    assert admin.simulate_delete("/v1/users/alice").status_code == 204
    assert admin.simulate_get("/v1/users/alice").status_code == 404


def test_the_last_admin_cannot_be_removed_demoted_or_disabled(admin):
    for method, body, field in (("PATCH", {"role": "operator"}, "role"), ("PATCH", {"disabled": True}, "disabled"),
                                ("DELETE", None, "name")):
        resp = admin.simulate_request(method, "/v1/users/admin", json=body)
        assert resp.status_code == 409, (method, body, resp.text)
        assert resp.json["field"] == field and "last admin" in resp.json["reason"]
    assert admin.simulate_get("/v1/me").json["role"] == "admin"


def test_no_answer_carries_a_hash_nor_a_token_after_its_creation(app, admin, service):
    alice_token = add_user(admin, "alice", "operator")
    made = admin.simulate_post("/v1/tokens", json={"expires": "12h", "description": "ci"})
    assert made.status_code == 201 and made.headers["location"] == f"/v1/tokens/{made.json['id']}"
    assert "no-store" in made.headers["cache-control"]
    secrets = {HOME_TOKEN, alice_token, made.json["token"]}
    hashes = {token_hash(t) for t in secrets}
    assert hashes == {row["hash"] for row in service.store._rows("tokens", "")}  # the store has them all
    alice = client(app, alice_token)
    answers = [admin.simulate_get(path) for path in (
        "/v1/tokens", f"/v1/tokens/{made.json['id']}", f"/v1/tokens/{LEGACY_TOKEN_ID}", "/v1/users", "/v1/me",
        "/v1/events", "/v1/users/alice")]
    answers += [alice.simulate_get("/v1/tokens"), alice.simulate_get("/v1/me")]
    answers.append(admin.simulate_get("/v1/tokens", params={"user": "alice"}))
    for answer in answers:
        assert answer.status_code == 200, answer.text
        for secret in secrets | hashes:
            assert secret not in answer.text
        assert '"hash"' not in answer.text
    listed = {t["id"]: t for t in admin.simulate_get("/v1/tokens").json["items"]}
    assert listed[LEGACY_TOKEN_ID]["prefix"] == HOME_TOKEN[:4]
    assert listed[made.json["id"]]["prefix"] == made.json["token"][:20]


@pytest.mark.parametrize("how", ["expired", "revoked", "disabled", "deleted"])
def test_an_expired_revoked_or_disabled_users_token_is_401(app, admin, service, how):
    alice_token = add_user(admin, "alice", "operator")
    alice = client(app, alice_token)
    assert alice.simulate_get("/v1/vms").status_code == 200
    token_id = alice.simulate_get("/v1/me").json["token_id"]
    if how == "expired":
        service.store.update_token(token_id, expires=time.time() - 1)
    elif how == "revoked":
        assert alice.simulate_delete(f"/v1/tokens/{token_id}").status_code == 204
    elif how == "disabled":
        assert admin.simulate_patch("/v1/users/alice", json={"disabled": True}).status_code == 200
    else:
        assert admin.simulate_delete("/v1/users/alice").status_code == 204
    for path in ("/v1/vms", "/v1/me", "/v1/tokens"):
        resp = alice.simulate_get(path)
        assert resp.status_code == 401, (how, path, resp.text)
        assert resp.headers.get("www-authenticate") == "Bearer"
    if how == "expired":
        assert admin.simulate_get(f"/v1/tokens/{token_id}").json["state"] == "expired"


def test_an_operator_cannot_see_or_revoke_others_tokens_nor_manage_users(app, admin):
    alice = client(app, add_user(admin, "alice", "operator"))
    bob_token = add_user(admin, "bob", "viewer")
    bobs_id = client(app, bob_token).simulate_get("/v1/me").json["token_id"]
    for method, path, params in (("GET", f"/v1/tokens/{bobs_id}", None), ("DELETE", f"/v1/tokens/{bobs_id}", None),
                                 ("GET", f"/v1/tokens/{LEGACY_TOKEN_ID}", None),
                                 ("DELETE", f"/v1/tokens/{LEGACY_TOKEN_ID}", None),
                                 ("GET", "/v1/tokens", {"user": "bob"}), ("GET", "/v1/tokens", {"user": "admin"}),
                                 ("GET", "/v1/tokens", {"user": "nobody"})):
        resp = alice.simulate_request(method, path, params=params)
        assert resp.status_code == 404, (method, path, params, resp.text)
    assert client(app, bob_token).simulate_get("/v1/me").status_code == 200  # still works
    assert {t["user"] for t in alice.simulate_get("/v1/tokens").json["items"]} == {"alice"}
    refused = alice.simulate_post("/v1/tokens", json={"user": "bob"})
    assert refused.status_code == 403 and refused.json["field"] == "user"
    for method, path, body in (("GET", "/v1/users", None), ("POST", "/v1/users", {"name": "mallory", "role": "admin"}),
                               ("GET", "/v1/users/alice", None), ("PATCH", "/v1/users/alice", {"role": "admin"}),
                               ("DELETE", "/v1/users/bob", None)):
        resp = alice.simulate_request(method, path, json=body)
        assert resp.status_code == 403, (method, path, resp.text)
    assert alice.simulate_get("/v1/me").json["role"] == "operator"
    assert [u["name"] for u in admin.simulate_get("/v1/users").json["items"]] == ["admin", "alice", "bob"]


def test_a_user_makes_lists_and_revokes_their_own_tokens(app, admin):
    alice = client(app, add_user(admin, "alice", "viewer"))
    made = alice.simulate_post("/v1/tokens", json={"expires": "90m", "description": "laptop"})
    assert made.status_code == 201 and made.json["user"] == "alice"
    assert made.json["expires"] - made.json["created"] == pytest.approx(90 * 60)
    assert alice.simulate_post("/v1/tokens").status_code == 201  # no body: one's own, never expires
    assert len(alice.simulate_get("/v1/tokens").json["items"]) == 3
    second = client(app, made.json["token"])
    assert second.simulate_get("/v1/me").json["token_id"] == made.json["id"]
    assert alice.simulate_delete(f"/v1/tokens/{made.json['id']}").status_code == 204
    assert second.simulate_get("/v1/me").status_code == 401
    assert alice.simulate_get(f"/v1/tokens/{made.json['id']}").json["state"] == "revoked"


def test_a_monitor_token_reaches_metrics_only(app, admin):
    monitor = client(app, add_user(admin, "prometheus", "monitor", ("default",)))
    assert monitor.simulate_get("/v1/me").status_code == 403
    assert monitor.simulate_get("/v1/tokens").status_code == 403


@pytest.mark.parametrize("body, field", [
    ({"expires": "3651d"}, "expires"), ({"expires": "soon"}, "expires"), ({"description": "x" * 201}, "description"),
    ({"description": "\x1b]0;pwned\x07"}, "description"), ({"user": "../etc"}, "user"), ({"nope": 1}, "nope"),
    ([], None)])
def test_token_bodies_are_bounded(admin, body, field):
    resp = admin.simulate_post("/v1/tokens", json=body)
    assert resp.status_code == 422, resp.text
    assert resp.json.get("field") == field
    assert [t["id"] for t in admin.simulate_get("/v1/tokens").json["items"]] == [LEGACY_TOKEN_ID]


def test_every_users_and_tokens_route_has_a_policy_and_is_documented_from_the_models():
    from appliance.access.policy import ROUTES
    from appliance.api.openapi import DOCUMENT
    from appliance.model.access import TokenCreate, UserCreate, UserUpdate

    ours = {(t, m) for t, m in ROUTES if t.startswith(("/v1/me", "/v1/users", "/v1/tokens"))}
    documented = {(t, m.upper()) for t, item in DOCUMENT["paths"].items() for m in item if m != "parameters"}
    assert len(ours) == 10 and ours <= documented
    assert {(t, m) for t, m in documented if t.startswith(("/v1/me", "/v1/users", "/v1/tokens"))} == ours
    schemas = DOCUMENT["components"]["schemas"]
    for model in (UserCreate, UserUpdate, TokenCreate):
        assert set(schemas[model.__name__]["properties"]) == set(model.model_fields)
    assert "hash" not in schemas["Token"]["properties"] and "token" not in schemas["Token"]["properties"]


def test_a_token_cannot_make_a_token_that_outlives_it(app, admin):
    """Security review (issue 11): the holder of a token that expires in an hour could make
    one that never expires, and revoking the first left the second. A token made with an
    expiring token now expires no later than it (422 on `expires` otherwise)."""
    alice = client(app, add_user(admin, "alice", "operator"))
    hourly = alice.simulate_post("/v1/tokens", json={"expires": "1h"})
    assert hourly.status_code == 201, hourly.text
    short = client(app, hourly.json["token"])
    for body in ({}, {"expires": "2h"}, {"expires": "30d"}):
        resp = short.simulate_post("/v1/tokens", json=body)
        assert resp.status_code == 422 and resp.json["field"] == "expires", (body, resp.text)
    assert short.simulate_post("/v1/tokens", json={"expires": "30m"}).status_code == 201
    # a token that does not expire (alice's first, HOME/token) makes any
    assert alice.simulate_post("/v1/tokens", json={}).status_code == 201
    assert len(admin.simulate_get("/v1/tokens", params={"user": "alice"}).json["items"]) == 4

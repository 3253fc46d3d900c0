"""The service's users and tokens (appliance/service/access.py): the rules,
whoever calls (REST and its policy: tests/unit/appliance/api/test_users_tokens.py)."""
from __future__ import annotations

import pytest

from appliance.access import Principal, Role, acting_as, mountmap
from appliance.access.tokens import resolver, token_hash
from appliance.errors import Conflict, Forbidden, Invalid, NotFound
from appliance.service.access import MAX_ACTIVE_TOKENS


@pytest.fixture
def svc(service):
    service.store.insert_project({"name": "web", "description": "", "quota": {}, "created": 0.0})
    service.add_user({"name": "root", "role": "admin"})
    return service


def as_user(name: str, role: str = "operator", projects=("web",)) -> Principal:
    return acting_as(Principal(user=name, role=Role(role), projects=tuple(projects), project=projects[0]))


def test_add_user_defaults_and_refusals(svc):
    assert svc.add_user({"name": "carol"}) == {
        "name": "carol", "role": "viewer", "projects": ["default"], "created": svc.get_user("carol")["created"],
        "disabled": False}
    alice = svc.add_user({"name": "alice", "role": "operator", "projects": ["web", "default"]})
    assert alice["role"] == "operator" and alice["projects"] == ["web", "default"]
    with pytest.raises(Conflict) as taken:
        svc.add_user({"name": "alice"})
    assert taken.value.field == "name"
    with pytest.raises(NotFound) as missing:
        svc.add_user({"name": "dave", "projects": ["default", "nope"]})
    assert missing.value.field == "projects[1]"
    with pytest.raises(Invalid) as bad:
        svc.add_user({"name": "Dave"})
    assert bad.value.field == "name"
    assert [u["name"] for u in svc.list_users()] == ["alice", "carol", "root"]
    events = [e["kind"] for e in svc.store.list_events()]
    assert events.count("user-added") == 3


def test_the_last_admin_stays_an_enabled_admin(svc):
    for change, field in (({"role": "operator"}, "role"), ({"disabled": True}, "disabled")):
        with pytest.raises(Conflict) as refused:
            svc.update_user("root", change)
        assert refused.value.field == field and "last admin" in refused.value.reason
    with pytest.raises(Conflict) as refused:
        svc.delete_user("root")
    assert "last admin" in refused.value.reason
    assert svc.get_user("root")["role"] == "admin" and not svc.get_user("root")["disabled"]
    # A disabled admin does not count; another enabled one does.
    svc.add_user({"name": "spare", "role": "admin"})
    svc.update_user("spare", {"disabled": True})
    with pytest.raises(Conflict):
        svc.delete_user("root")
    svc.update_user("spare", {"disabled": False})
    assert svc.update_user("root", {"role": "viewer"})["role"] == "viewer"
    with pytest.raises(Conflict):
        svc.delete_user("spare")


def test_update_user_merges_and_checks_projects(svc):
    svc.add_user({"name": "alice", "role": "operator", "projects": ["web"]})
    assert svc.update_user("alice", {"projects": ["default", "web"]})["projects"] == ["default", "web"]
    assert svc.update_user("alice", {})["role"] == "operator"
    with pytest.raises(NotFound):
        svc.update_user("alice", {"projects": ["gone"]})
    with pytest.raises(Invalid) as unknown:
        svc.update_user("alice", {"name": "bob"})
    assert unknown.value.field == "name"
    with pytest.raises(NotFound):
        svc.update_user("x" * 5000, {"role": "viewer"})


def test_disabling_a_user_makes_their_tokens_fail_and_enabling_brings_them_back(svc):
    svc.add_user({"name": "alice", "role": "operator", "projects": ["web"]})
    token = svc.create_token({"user": "alice"})["token"]
    resolve = resolver(svc.store)
    assert resolve(token).user == "alice"
    svc.update_user("alice", {"disabled": True})
    assert resolve(token) is None
    with pytest.raises(Conflict):
        svc.create_token({"user": "alice"})
    svc.update_user("alice", {"disabled": False})
    assert resolve(token).user == "alice"


def test_deleting_a_user_deletes_their_tokens(svc):
    svc.add_user({"name": "alice", "role": "operator", "projects": ["web"]})
    made = svc.create_token({"user": "alice"})
    svc.delete_user("alice")
    assert resolver(svc.store)(made["token"]) is None
    with pytest.raises(NotFound):
        svc.get_token(made["id"])


def test_deleting_a_user_takes_them_off_the_mounts_map(svc):
    """`vmctl user rm alice` left `mount-map user alice --as alice` behind: a user made
    later under the name alice would have been Unix alice's in the mount at once."""
    svc.add_user({"name": "alice", "role": "operator", "projects": ["web"]})
    mountmap.set_user(svc.store, "alice", "alice")
    mountmap.set_group(svc.store, "vmops", "operator", "web")
    svc.delete_user("alice")
    assert [(e["kind"], e["unix_name"]) for e in mountmap.entries(svc.store)] == [
        ("group", "vmops")]


def test_a_token_is_shown_once_and_its_hash_never(svc):
    made = svc.create_token({"user": "root", "expires": "30d", "description": "ci runner"})
    token, token_id = made["token"], made["id"]
    assert made["expires"] == pytest.approx(made["created"] + 30 * 86400)
    assert made["state"] == "active" and made["description"] == "ci runner"
    secret = token_hash(token)
    for answer in (svc.get_token(token_id), svc.list_tokens(), svc.list_tokens("root"),
                   svc.store.list_events()):
        assert token not in str(answer) and secret not in str(answer)
        assert "hash" not in str(answer)


def test_token_lifetimes_are_bounded(svc):
    assert svc.create_token({"user": "root", "expires": "3650d"})["expires"] is not None
    for expires in ("3651d", "0h", "12", "1y", 30, "-1d", "1e3d"):
        with pytest.raises(Invalid) as refused:
            svc.create_token({"user": "root", "expires": expires})
        assert refused.value.field == "expires", expires
    with pytest.raises(Invalid) as refused:
        svc.create_token({"user": "root", "description": "x" * 201})
    assert refused.value.field == "description"
    with pytest.raises(Invalid):
        svc.create_token({"user": "root", "description": "bell\x07"})


def test_a_user_has_a_bounded_number_of_active_tokens(svc):
    for _ in range(MAX_ACTIVE_TOKENS):
        last = svc.create_token({"user": "root"})
    with pytest.raises(Conflict) as refused:
        svc.create_token({"user": "root"})
    assert "revoke one" in refused.value.reason
    svc.revoke_token(last["id"])
    svc.create_token({"user": "root"})


def test_a_non_admin_sees_and_revokes_only_their_own_tokens(svc):
    svc.add_user({"name": "alice", "role": "operator", "projects": ["web"]})
    svc.add_user({"name": "bob", "role": "viewer", "projects": ["web"]})
    bobs = svc.create_token({"user": "bob"})
    with as_user("alice"):
        mine = svc.create_token({"description": "laptop"})
        assert mine["user"] == "alice"
        assert [t["id"] for t in svc.list_tokens()] == [mine["id"]]
        assert [t["id"] for t in svc.list_tokens("alice")] == [mine["id"]]
        for call in (lambda: svc.list_tokens("bob"), lambda: svc.list_tokens("nobody"),
                     lambda: svc.get_token(bobs["id"]), lambda: svc.revoke_token(bobs["id"])):
            with pytest.raises(NotFound):
                call()
        with pytest.raises(Forbidden) as refused:
            svc.create_token({"user": "bob"})
        assert refused.value.field == "user"
        svc.revoke_token(mine["id"])
        assert svc.get_token(mine["id"])["state"] == "revoked"
    assert svc.get_token(bobs["id"])["state"] == "active"
    assert {t["user"] for t in svc.list_tokens()} == {"alice", "bob"}  # the admin sees all


def test_revoking_is_idempotent_and_keeps_the_first_time(svc):
    made = svc.create_token({"user": "root"})
    svc.revoke_token(made["id"])
    first = svc.get_token(made["id"])["revoked"]
    svc.revoke_token(made["id"])
    assert svc.get_token(made["id"])["revoked"] == first
    assert resolver(svc.store)(made["token"]) is None


def test_whoami_is_the_caller(svc):
    with as_user("alice", "viewer", ("web", "default")):
        assert svc.whoami() == {"user": "alice", "role": "viewer", "projects": ["web", "default"],
                                "project": "web", "token_id": None}


def test_making_and_revoking_tokens_in_a_loop_keeps_a_bounded_number_of_records(svc, monkeypatch):
    monkeypatch.setattr("appliance.service.access.KEPT_INACTIVE_TOKENS", 3)
    made = []
    for _ in range(6):
        token = svc.create_token({"user": "root"})
        svc.revoke_token(token["id"])
        made.append(token)
    kept = [t["id"] for t in svc.list_tokens("root")]
    assert kept == [t["id"] for t in made[2:]]  # 3 inactive kept, and the newest one, revoked after
    for token in made:
        assert resolver(svc.store)(token["token"]) is None
    assert [e["kind"] for e in svc.store.list_events()].count("token-revoked") == 6

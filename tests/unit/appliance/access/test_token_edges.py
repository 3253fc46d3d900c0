"""appliance/access/tokens.py, the edges test_tokens.py leaves: what is refused
before the store is read, what a refusal does not write, bootstrap run again
and again, and no token (nor a part of one) anywhere in the database."""
from __future__ import annotations

import secrets

import pytest

from appliance.access import tokens
from appliance.access.principal import DEFAULT_PROJECT, Role

NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW):
        self.now = now

    def __call__(self) -> float:
        return self.now


def add_user(store, name="alice", role=Role.OPERATOR, projects=("web", DEFAULT_PROJECT),
             disabled=False, expires=None, revoked=None) -> tuple[str, str]:
    """A user (unless they exist) with one new token: (token id, token)."""
    if name not in {u["name"] for u in store.list_users()}:
        store.insert_user({"name": name, "role": role.value, "projects": list(projects),
                           "created": NOW, "disabled": int(disabled)})
    token_id, token = tokens.new_token()
    store.insert_token({"id": token_id, "user": name, "hash": tokens.token_hash(token),
                        "prefix": tokens.shown_prefix(token), "description": "", "created": NOW,
                        "expires": expires, "last_used": None, "revoked": revoked})
    return token_id, token


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def resolve(store, clock):
    return tokens.resolver(store, clock)


@pytest.mark.parametrize("presented", ["", "vma_nope_nope", "Bearer x"])
def test_unknown_tokens_name_nobody(store, resolve, presented):
    add_user(store)
    assert resolve(presented) is None


def test_a_disabled_user_s_tokens_name_nobody(store, resolve):
    _, token = add_user(store)
    assert resolve(token) is not None
    store.update_user("alice", disabled=1)
    assert resolve(token) is None
    store.update_user("alice", disabled=0)
    assert resolve(token) is not None


def test_a_user_without_projects_works_in_the_default_one(store, resolve):
    _, token = add_user(store, projects=())
    principal = resolve(token)
    assert principal.projects == (DEFAULT_PROJECT,) and principal.project == DEFAULT_PROJECT


def test_last_used_is_written_at_most_once_per_touch_every(store, resolve, clock, monkeypatch):
    token_id, token = add_user(store)
    writes = []
    real_touch = store.touch_token
    monkeypatch.setattr(store, "touch_token",
                        lambda tid, when: (writes.append(when), real_touch(tid, when)))
    resolve(token)
    assert writes == [NOW] and store.get_token(token_id)["last_used"] == NOW
    for step in range(1, 60):  # a request a second, for the next minute: no write
        clock.now = NOW + step * tokens.TOUCH_EVERY / 60
        assert resolve(token) is not None
    assert writes == [NOW]
    clock.now = NOW + tokens.TOUCH_EVERY
    resolve(token)
    assert writes == [NOW, NOW + tokens.TOUCH_EVERY]
    assert store.get_token(token_id)["last_used"] == NOW + tokens.TOUCH_EVERY


def test_a_refused_token_is_not_touched(store, resolve, monkeypatch):
    token_id, token = add_user(store, revoked=NOW)
    monkeypatch.setattr(store, "touch_token", lambda *a: pytest.fail("touched a revoked token"))
    assert resolve(token) is None
    assert store.get_token(token_id)["last_used"] is None


def test_an_overlong_token_is_refused_without_reading_the_store(store, resolve, monkeypatch):
    reads = []
    real_owner = store.token_owner
    monkeypatch.setattr(store, "token_owner", lambda h: (reads.append(h), real_owner(h))[1])
    assert resolve("x" * (tokens.MAX_TOKEN_CHARS + 1)) is None
    assert resolve("vma_" + "x" * 10_000) is None
    assert reads == []
    assert resolve("x" * tokens.MAX_TOKEN_CHARS) is None  # the longest allowed is looked up
    assert len(reads) == 1


def test_made_tokens_fit_the_limit_and_are_distinct():
    made = {tokens.new_token() for _ in range(50)}
    assert len({token for _, token in made}) == 50 and len({tid for tid, _ in made}) == 50
    for token_id, token in made:
        assert token.startswith(f"{tokens.TOKEN_PREFIX}{token_id}_")
        assert len(token) <= tokens.MAX_TOKEN_CHARS
        secret = token.split("_", 2)[2]
        assert tokens.shown_prefix(token) == f"{tokens.TOKEN_PREFIX}{token_id}_{secret[:3]}"


# -- bootstrap: the home's token becomes the first admin's -----------------------------------------
HOME_TOKEN = secrets.token_urlsafe(32)  # as Config.token(create=True) makes it


def test_bootstrap_is_idempotent(store):
    for _ in range(3):
        tokens.bootstrap(store, HOME_TOKEN, clock=Clock())
    assert [u["name"] for u in store.list_users()] == [tokens.FIRST_ADMIN]
    assert [t["id"] for t in store.list_tokens()] == [tokens.LEGACY_TOKEN_ID]


def test_bootstrap_does_not_resurrect_a_revoked_home_token(store, resolve):
    tokens.bootstrap(store, HOME_TOKEN, clock=Clock())
    store.update_token(tokens.LEGACY_TOKEN_ID, revoked=NOW)
    tokens.bootstrap(store, HOME_TOKEN, clock=Clock())  # the next start
    assert resolve(HOME_TOKEN) is None
    # Nor one deleted outright, nor its user.
    store.delete_user(tokens.FIRST_ADMIN)
    tokens.bootstrap(store, HOME_TOKEN, clock=Clock())
    assert resolve(HOME_TOKEN) is None and store.list_users() == []


@pytest.mark.parametrize("home_token", [
    pytest.param(HOME_TOKEN, id="as-config-makes-it"), pytest.param("sekrit", id="short"),
    pytest.param("Zq9Kx81wPp3-vv0Lr7Tt2yY", id="hand-written")])
def test_the_store_keeps_hashes_never_tokens(store, home_token):
    """A stolen database grants nothing: neither a token nor a part of one long
    enough to matter is in any table."""
    tokens.bootstrap(store, home_token, clock=Clock())
    _, token = add_user(store)
    dump = "\n".join(store.db.conn.iterdump())
    assert tokens.token_hash(home_token) in dump and tokens.token_hash(token) in dump
    made_secret = token.split("_", 2)[2]  # vma_<id>_<secret>: the id is public
    for secret_part in (home_token, made_secret):
        assert secret_part not in dump
        # A listing shows 3 characters of a made token's secret, nothing of the home's.
        for start in range(len(secret_part) - 5):
            assert secret_part[start:start + 5] not in dump, secret_part[start:start + 5]

"""Tokens: made here, stored hashed, turned back into a principal per request;
HOME/token becomes the first admin's once."""
from __future__ import annotations

from appliance.access import Role, tokens
from appliance.access.tokens import LEGACY_TOKEN_ID, bootstrap, new_token, resolver, shown_prefix, token_hash


class Clock:
    def __init__(self, now: float = 1_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def _user(store, name="alice", role="operator", projects=("web", "default"), disabled=0):
    store.insert_user({"name": name, "role": role, "projects": list(projects), "created": 0.0,
                       "disabled": disabled})


def _token(store, user="alice", **fields):
    token_id, token = new_token()
    store.insert_token({"id": token_id, "user": user, "hash": token_hash(token), "prefix": shown_prefix(token),
                        "description": "", "created": 0.0, "expires": None, "last_used": None,
                        "revoked": None, **fields})
    return token_id, token


def test_a_token_names_its_user_role_projects_and_default_project(store):
    _user(store)
    token_id, token = _token(store)
    me = resolver(store, Clock())(token)
    assert (me.user, me.role, me.projects, me.project, me.token_id) == (
        "alice", Role.OPERATOR, ("web", "default"), "web", token_id)


def test_expired_revoked_unknown_oversized_tokens_and_disabled_users_name_no_one(store):
    clock = Clock()
    _user(store)
    _user(store, "bob", disabled=1)
    _, expired = _token(store, expires=clock.now)
    _, later = _token(store, expires=clock.now + 1)
    _, revoked = _token(store, revoked=clock.now - 5)
    _, disabled = _token(store, user="bob")
    resolve = resolver(store, clock)
    assert resolve(expired) is None and resolve(revoked) is None and resolve(disabled) is None
    assert resolve(later) is not None
    assert resolve(later + "x") is None and resolve("") is None
    assert resolve("x" * (tokens.MAX_TOKEN_CHARS + 1)) is None


def test_last_used_is_written_at_most_once_a_minute(store):
    clock = Clock()
    _user(store)
    token_id, token = _token(store)
    resolve = resolver(store, clock)
    resolve(token)
    assert store.get_token(token_id)["last_used"] == clock.now
    first = clock.now
    clock.now += tokens.TOUCH_EVERY - 1
    resolve(token)
    assert store.get_token(token_id)["last_used"] == first
    clock.now += 1
    resolve(token)
    assert store.get_token(token_id)["last_used"] == clock.now


def test_a_token_is_stored_as_its_hash_only(store):
    _user(store)
    token_id, token = _token(store)
    stored = store.get_token(token_id)
    assert token not in str(stored) and stored["hash"] == token_hash(token)
    assert token.startswith(f"vma_{token_id}_") and len(token) == 4 + 12 + 1 + 43


def test_the_shown_prefix_gives_away_little_of_a_secret():
    _, token = new_token()
    assert shown_prefix(token) == token[:20]  # vma_, the id, 4 of 43 characters
    home = "k3Jq9-old-home-token-of-43-characters-xxxxx"
    assert shown_prefix(home) == home[:4]
    assert shown_prefix("short") == "s" and shown_prefix("abc") == ""
    assert shown_prefix("vma_notmade_here_at_all_but_it_looks_like_one") == "vma_"


def test_bootstrap_makes_home_token_the_first_admins_once(store):
    clock = Clock()
    bootstrap(store, "the-home-token-xxxxxxxx", clock)
    admin = store.get_user("admin")
    assert admin["role"] == "admin" and admin["projects"] == ["default"]
    me = resolver(store, clock)("the-home-token-xxxxxxxx")
    assert (me.user, me.role, me.token_id) == ("admin", Role.ADMIN, LEGACY_TOKEN_ID)
    store.update_token(LEGACY_TOKEN_ID, revoked=clock.now)
    bootstrap(store, "the-home-token-xxxxxxxx", clock)  # the next start
    assert resolver(store, clock)("the-home-token-xxxxxxxx") is None
    assert [t["id"] for t in store.list_tokens()] == [LEGACY_TOKEN_ID]


def test_bootstrap_without_a_home_token_makes_no_one(store):
    bootstrap(store, None)
    assert store.user_count() == 0 and not store.get_meta("users_bootstrapped")


def test_bootstrap_makes_the_admin_even_when_other_users_exist(store):
    """A store that holds users but no `admin` when bootstrap first runs: the home
    token's owner is made (it used to be skipped, and the token's foreign key failed
    the start)."""
    store.insert_user({"name": "bob", "role": "viewer", "projects": ["default"],
                       "created": 0.0, "disabled": 0})
    bootstrap(store, "home-secret")
    principal = resolver(store)("home-secret")
    assert principal is not None and principal.user == "admin" and principal.role == Role.ADMIN
    assert store.get_user("bob")["role"] == "viewer"

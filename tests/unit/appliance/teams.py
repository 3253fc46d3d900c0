"""Users and their tokens made straight in the store (the users REST is another part's),
and the headers a request of each sends; projects; the principal of a role in one."""
from __future__ import annotations

import time

from falcon import testing

from appliance.access import tokens
from appliance.access.principal import Principal, Role
from appliance.store import Store


def add_user(store: Store, name: str, role: str, projects: tuple[str, ...] = ("default",)) -> dict:
    """A user with one token (id `NAME-t`); the Authorization header that names them."""
    token = f"vma_{name}-t_secret-of-{name}"
    store.insert_user({"name": name, "role": role, "projects": list(projects), "created": 0.0,
                       "disabled": 0})
    store.insert_token({"id": f"{name}-t", "user": name, "hash": tokens.token_hash(token),
                        "prefix": token[:16], "description": "test", "created": 0.0,
                        "expires": None, "last_used": None, "revoked": None})
    return {"Authorization": f"Bearer {token}"}


def add_project(store: Store, name: str) -> None:
    store.insert_project({"name": name, "description": "", "quota": {}, "created": time.time()})


def person(role: Role, project: str = "web") -> Principal:
    """Someone of `role` who works in `project` only."""
    return Principal(user=f"{role}-of-{project}", role=role, projects=(project,), project=project)


def bearer_client(app, token: str) -> testing.TestClient:
    """A client of the app whose every request carries token."""
    return testing.TestClient(app, headers={"Authorization": f"Bearer {token}"})


def user_over_rest(admin: testing.TestClient, name: str, role: str,
                   projects: tuple[str, ...]) -> tuple[str, str]:
    """A user made by an admin over REST (POST /v1/users, /v1/tokens): (token id, token)."""
    made = admin.simulate_post("/v1/users", json={"name": name, "role": role,
                                                  "projects": list(projects)})
    assert made.status_code == 201, made.text
    token = admin.simulate_post("/v1/tokens", json={"user": name})
    assert token.status_code == 201, token.text
    return token.json["id"], token.json["token"]

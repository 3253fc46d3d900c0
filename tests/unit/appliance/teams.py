"""Users and their tokens made straight in the store (the users REST is another part's),
and the headers a request of each sends; projects; the principal of a role in one."""
from __future__ import annotations

import time

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

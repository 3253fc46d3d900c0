"""vmctl user / token / whoami against the real REST app served over HTTP in a
thread (the upgrade test runs `python -m appliance.cli` itself:
tests/unit/appliance/access/test_upgrade.py)."""
import json

import pytest

from appliance.access.tokens import LEGACY_TOKEN_ID
from tests.unit.appliance.conftest import CLI_TOKEN as TOKEN


@pytest.fixture
def projects(store):
    for name in ("web", "other"):
        store.insert_project({"name": name, "description": "", "quota": {}, "created": 0.0})


def test_user_add_list_set_rm(vmctl, projects):
    code, out, err = vmctl("user", "add", "alice", "--role", "operator", "--project", "web", "--project", "other")
    assert (code, out, err) == (0, "alice: added (operator in web,other, enabled)\n", "")
    assert vmctl("user", "add", "bob")[1] == "bob: added (viewer in default, enabled)\n"
    code, out, _ = vmctl("user", "list")
    header, *rows = out.splitlines()
    assert header.split() == ["NAME", "ROLE", "PROJECTS", "STATE", "CREATED"]
    assert [r.split()[:4] for r in rows] == [["admin", "admin", "default", "enabled"],
                                            ["alice", "operator", "web,other", "enabled"],
                                            ["bob", "viewer", "default", "enabled"]]
    assert vmctl("user", "set", "alice", "--role", "viewer")[1] == "alice: changed (viewer in web,other, enabled)\n"
    assert vmctl("user", "set", "bob", "--disable")[1] == "bob: changed (viewer in default, disabled)\n"
    assert vmctl("user", "set", "bob", "--enable", "--project", "web")[1] == "bob: changed (viewer in web, enabled)\n"
    assert vmctl("user", "rm", "bob")[:2] == (0, "bob: removed, and their tokens\n")
    code, _, err = vmctl("user", "add", "carol", "--project", "missing")
    assert code == 1 and "HTTP 404" in err and "(field: projects[0])" in err
    code, _, err = vmctl("user", "rm", "admin")
    assert code == 1 and "HTTP 409" in err and "last admin" in err
    assert [u["name"] for u in json.loads(vmctl("--json", "user", "list")[1])] == ["admin", "alice"]


def test_token_create_list_revoke_and_whoami(vmctl, projects, monkeypatch):
    vmctl("user", "add", "alice", "--role", "operator", "--project", "web")
    code, out, err = vmctl("token", "create", "alice", "--expires", "30d", "--description", "ci runner")
    assert code == 0 and "shown this once" in err
    shown = dict(line.split(None, 1) for line in out.splitlines())
    assert shown["user"] == "alice" and shown["expires"] != "never"
    token, token_id = shown["token"], shown["id"]
    assert token.startswith(f"vma_{token_id}_")
    code, out, _ = vmctl("token", "list", "--user", "alice")
    header, row = out.splitlines()
    assert header.split()[:4] == ["ID", "USER", "PREFIX", "STATE"]
    assert row.split()[:4] == [token_id, "alice", token[:20], "active"] and row.endswith("ci runner")
    assert token not in out
    assert {t["id"] for t in json.loads(vmctl("--json", "token", "list")[1])} == {LEGACY_TOKEN_ID, token_id}
    assert vmctl("whoami")[1].split() == ["user", "admin", "role", "admin", "projects", "default", "project",
                                           "default", "token", LEGACY_TOKEN_ID]
    monkeypatch.setenv("VMCTL_TOKEN", token)
    assert vmctl("whoami")[1].split() == ["user", "alice", "role", "operator", "projects", "web", "project", "web",
                                           "token", token_id]
    code, out, _ = vmctl("token", "list")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [token_id]
    code, _, err = vmctl("token", "revoke", LEGACY_TOKEN_ID)
    assert code == 1 and "HTTP 404" in err
    code, _, err = vmctl("user", "list")
    assert code == 1 and "HTTP 403" in err and "needs admin" in err
    assert vmctl("token", "revoke", token_id)[:2] == (0, f"{token_id}: revoked\n")
    code, _, err = vmctl("whoami")
    assert code == 1 and "HTTP 401" in err
    monkeypatch.setenv("VMCTL_TOKEN", TOKEN)
    assert json.loads(vmctl("--json", "token", "list", "--user", "alice")[1])[0]["state"] == "revoked"

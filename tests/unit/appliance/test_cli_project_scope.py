"""vmctl --project P (every request asks ?project=P) and list --all-projects,
against the real REST app over HTTP (test_cli_cluster's vmctl fixture)."""
import json



def test_project_option_and_all_projects(vmctl, store, monkeypatch):  # noqa: F811 - the fixture
    store.insert_project({"name": "dev", "description": "", "quota": {}, "created": 0.0})
    assert vmctl("create", "web1", "--stopped", "--no-wait")[0] == 0
    assert vmctl("--project", "dev", "create", "web1", "--stopped", "--no-wait", "--cpus", "2")[0] == 0
    assert vmctl("--project", "dev", "create", "db1", "--stopped", "--no-wait")[0] == 0

    code, out, _ = vmctl("--json", "--project", "dev", "list")
    assert code == 0 and [(vm["project"], vm["name"]) for vm in json.loads(out)] == \
        [("dev", "db1"), ("dev", "web1")]
    code, out, _ = vmctl("--json", "list")
    assert [(vm["project"], vm["name"]) for vm in json.loads(out)] == [("default", "web1")]
    code, out, _ = vmctl("--json", "--project", "dev", "get", "web1")
    assert json.loads(out)["spec"]["cpus"] == 2
    code, _, err = vmctl("get", "db1")
    assert code == 1 and "HTTP 404" in err

    code, out, _ = vmctl("list", "--all-projects")
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["PROJECT", "NAME", "STATE"]
    assert sorted(tuple(r.split()[:2]) for r in rows) == \
        [("default", "web1"), ("dev", "db1"), ("dev", "web1")]
    code, _, err = vmctl("--project", "nosuch", "list")
    assert code == 1 and "HTTP 404" in err and "project" in err

    monkeypatch.setenv("VMCTL_PROJECT", "dev")
    code, out, _ = vmctl("--json", "list")
    assert [vm["name"] for vm in json.loads(out)] == ["db1", "web1"]
    code, out, _ = vmctl("--json", "events", "--all-projects")
    assert code == 0 and {"default", "dev"} <= {json.loads(line)["project"] for line in out.splitlines()}


def test_the_global_project_and_a_users_projects_are_two_options(vmctl, store):  # noqa: F811 - the fixture
    """`vmctl --project P user add NAME --project Q`: P is where the request acts, Q the
    user's project; neither takes the other's value."""
    store.insert_project({"name": "dev", "description": "", "quota": {}, "created": 0.0})
    code, out, err = vmctl("--project", "dev", "user", "add", "carol", "--role", "viewer", "--project", "dev")
    assert code == 0, err
    assert store.get_user("carol")["projects"] == ["dev"]

"""vmctl template create / list / get / delete and vmctl create --template, against the
real REST app over HTTP (issue 14, part C)."""
from __future__ import annotations

import json

import pytest



def test_create_list_get_use_and_delete(vmctl, service):  # noqa: F811 - the fixture
    code, out, err = vmctl("template", "create", "small", "--cpus", "1", "--memory", "512M",
                           "--disk", "data=10G", "--description", "one CPU")
    assert (code, out) == (0, "small: created (revision 1)\n"), err
    assert service.get_template("small")["spec"] == {
        "cpus": 1, "memory": 512, "disks": [{"name": "data", "size": 10240}]}
    code, out, _ = vmctl("template", "list")
    rows = [line.split() for line in out.splitlines()]
    assert rows[0] == ["NAME", "OWNER", "REVISION", "CPUS", "MEMORY", "IMAGE", "DISKS",
                       "DESCRIPTION"]
    assert rows[1][:3] == ["default", "built", "in"]
    assert rows[2] == ["small", "default", "1", "1", "512M", "-", "data=10240M", "one", "CPU"]
    code, out, _ = vmctl("--json", "template", "get", "small")
    assert json.loads(out)["revision"] == 1

    code, out, err = vmctl("create", "web1", "--template", "small", "--cpus", "2", "--stopped",
                           "--no-wait")
    assert code == 0, err
    vm = service.get_vm("web1")
    assert vm["template"] == {"name": "small", "revision": 1}
    assert (vm["spec"]["cpus"], vm["spec"]["memory"]) == (2, 512)  # the option wins
    code, out, _ = vmctl("get", "web1")
    assert ["template", "small", "(revision", "1)"] in [line.split() for line in out.splitlines()]

    assert vmctl("template", "delete", "small")[:2] == (0, "small: deleted\n")
    assert service.get_vm("web1")["spec"]["memory"] == 512


def test_refusals_are_said_with_their_field(vmctl, service, capsys):  # noqa: F811 - the fixture
    code, _, err = vmctl("template", "create", "t", "--memory", "1")
    assert code == 1 and "spec.memory" in err
    for option, value, said in [("--memory", "lots", "is not a size"), ("--disk", "data", "NAME=SIZE")]:
        with pytest.raises(SystemExit) as exit_:  # argparse's usage error (appliance/cli/usage.py)
            vmctl("template", "create", "t", option, value)
        err = capsys.readouterr().err
        assert exit_.value.code == 2 and f"argument {option}: " in err and said in err
    code, _, err = vmctl("template", "delete", "default")
    assert code == 1 and "read-only" in err
    code, _, err = vmctl("create", "web1", "--template", "nope", "--no-wait")
    assert code == 1 and "no template named 'nope'" in err
    assert [t["name"] for t in service.list_templates()] == ["default"]

"""vmctl's parser: `vmctl create --help` shows the defaults a create gets."""
from __future__ import annotations

import re

import pytest

from appliance.cli import main
from appliance.model.spec import Spec


def _shown_defaults(capsys, command: str) -> dict[str, str]:
    """{option: the default its help names}, read from `vmctl COMMAND --help` as printed."""
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    options = " ".join(capsys.readouterr().out.split("options:", 1)[1].split())
    option_with_default = r"--([a-z-]+) \S+ (?:(?!--)[^()])*\(default ([^)]+)\)"
    found = re.findall(option_with_default, options)
    return {name.replace("-", "_"): value for name, value in found}


def test_create_help_shows_the_spec_and_template_defaults(service, capsys):
    shown = _shown_defaults(capsys, "create")
    assert set(shown) == {"image", "cpus", "memory", "network", "run_strategy"}
    for field in ("cpus", "memory", "run_strategy"):
        assert shown[field] == str(Spec.model_fields[field].default), field
    template = service.get_template("default")["spec"]
    assert shown["image"] == template["image"]
    assert shown["network"] == template["network"]["type"]



def test_create_takes_the_cpu_fields():
    """vmctl create --cpu-mode --topology --dedicated --hugepages (issue 14, part F)."""
    from appliance.cli.parser import build_parser
    from appliance.cli.vms import create_body
    from appliance.model.spec import validate

    args = build_parser().parse_args(["create", "web1", "--cpus", "2", "--cpu-mode", "host-model",
                                      "--topology", "1x2x1", "--dedicated", "--hugepages"])
    body = create_body(args)
    assert body["cpu"] == {"mode": "host-model", "sockets": 1, "cores": 2, "threads": 1,
                           "dedicated": True} and body["hugepages"] is True
    assert validate({**body, "image": "demo"})["cpu"]["cores"] == 2
    assert "cpu" not in create_body(build_parser().parse_args(["create", "web2"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["create", "web1", "--topology", "2x2"])

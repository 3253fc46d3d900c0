"""vmctl's global options before or after the subcommand, the VMAPPLIANCE_*
variables, --version, the defaults in --help, and errors that say which home or
URL they tried (issue 16)."""
from __future__ import annotations

import json
import os
from importlib import metadata

import pytest

from appliance.cli import main
from appliance.cli.parser import build_parser
from appliance.config import Config
from tests.appliance_process import free_port
from tests.unit.appliance.conftest import CLI_TOKEN
from tests.unit.appliance.test_cli_usage import LEAVES, required_words

ENV_NAMES = ("VMAPPLIANCE_HOME", "VMAPP_HOME", "VMAPPLIANCE_URL", "VMCTL_URL",
             "VMAPPLIANCE_TOKEN", "VMCTL_TOKEN")


@pytest.fixture
def clean_env(monkeypatch):
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("argv", [
    ["--json", "--home", "/h", "--url", "http://u:1", "--token", "t", "host", "list"],
    ["host", "list", "--json", "--home", "/h", "--url", "http://u:1", "--token", "t"],
    ["--json", "host", "--home", "/h", "list", "--url", "http://u:1", "--token", "t"],
    ["--home", "/elsewhere", "--url", "http://other:2", "host", "list", "--home", "/h",
     "--url", "http://u:1", "--json", "--token", "t"],  # after wins
])
def test_global_options_go_before_or_after_the_subcommand(clean_env, argv):
    args = build_parser().parse_args(argv)
    assert (args.json, args.home, args.url, args.token) == (True, "/h", "http://u:1", "t")


def test_not_given_after_the_subcommand_keeps_the_defaults(clean_env):
    args = build_parser().parse_args(["host", "list"])
    assert (args.json, args.home, args.url, args.token) == (False, "./.appliance", None, None)
    clean_env.setenv("VMAPPLIANCE_HOME", "/from/env")
    clean_env.setenv("VMAPP_HOME", "/old/name")
    assert build_parser().parse_args(["list"]).home == "/from/env"
    clean_env.delenv("VMAPPLIANCE_HOME")
    assert build_parser().parse_args(["list"]).home == "/old/name"


def test_a_subcommands_own_option_of_the_same_name_is_its_own():
    """user add --project is the user's projects, not a global option."""
    args = build_parser().parse_args(["user", "add", "ann", "--project", "web"])
    assert args.project == ["web"] and args.acting_project is None


def test_url_and_token_from_the_new_variables_win(vmctl, monkeypatch, service):
    dead = f"http://127.0.0.1:{free_port()}"
    url = os.environ["VMCTL_URL"]  # the served app's (the vmctl fixture)
    monkeypatch.setenv("VMAPPLIANCE_URL", url)
    monkeypatch.setenv("VMCTL_URL", dead)
    monkeypatch.setenv("VMAPPLIANCE_TOKEN", CLI_TOKEN)
    monkeypatch.setenv("VMCTL_TOKEN", "not-the-token")
    code, out, err = vmctl("--json", "host", "list")
    assert code == 0, err
    assert [h["name"] for h in json.loads(out)] == ["local"]
    # --url and --token after the subcommand, over the variables
    monkeypatch.setenv("VMAPPLIANCE_URL", dead)
    monkeypatch.setenv("VMAPPLIANCE_TOKEN", "not-the-token")
    code, out, err = vmctl("host", "list", "--json", "--url", url, "--token", CLI_TOKEN)
    assert code == 0 and json.loads(out)[0]["name"] == "local", err


def test_a_401_says_where_it_was_sent_and_whose_token(vmctl, monkeypatch, config):
    url = os.environ["VMCTL_URL"]
    code, _, err = vmctl("list", "--token", "wrong")
    assert code == 1 and err.count("\n") == 1
    assert "HTTP 401" in err and err.endswith(
        f"(sent to {url}, from $VMCTL_URL, with the token of --token)\n")
    monkeypatch.delenv("VMCTL_TOKEN")
    code, _, err = vmctl("list", "--url", url)
    assert code == 1 and err.endswith(f"(sent to {url}, from --url, with no token "
                                      f"(home {config.home} has no token file))\n")


def test_no_answer_names_the_home_it_tried(clean_env, tmp_path, capsys):
    port = free_port()
    (tmp_path / "home").mkdir()
    Config(home=tmp_path / "home", listen=f"127.0.0.1:{port}").save()
    assert main(["list", "--home", str(tmp_path / "home")]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"vmctl list: HTTP 0: cannot reach the appliance at http://127.0.0.1:{port}")
    assert err.endswith(f"(the listener of home {tmp_path / 'home'}; is `vmctl serve` running "
                        "there?)\n")
    assert main(["list", "--home", str(tmp_path / "nohome")]) == 1
    assert (f"the listener of home {tmp_path / 'nohome'} (no such directory: give --home or "
            "VMAPPLIANCE_HOME") in capsys.readouterr().err


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"vmctl {metadata.version('vm-appliance')}\n"


@pytest.mark.parametrize(("words", "parser"), LEAVES, ids=[" ".join(w) for w, _ in LEAVES])
def test_every_subcommands_help_shows_the_global_options(capsys, clean_env, words, parser):
    with pytest.raises(SystemExit) as exit_:
        main([*words, *required_words(parser), "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0
    assert "global options (before or after the subcommand)" in out
    assert "--json" in out


@pytest.mark.parametrize(("argv", "shown"), [
    ([], "(default: ./.appliance)"),
    (["exporter"], "--libvirt-uri LIBVIRT_URI (default: qemu:///system)"),
    (["console"], "(at most 65536) (default: 0)"),
    (["network", "add"], "nat (default): NAT to the outside"),  # said by its help: not twice
])
def test_help_shows_the_defaults(capsys, clean_env, argv, shown):
    with pytest.raises(SystemExit):
        main([*argv, "--help"])
    out = " ".join(capsys.readouterr().out.split())  # as wrapped to the terminal
    assert shown in out
    assert "(default: None)" not in out and "(default: False)" not in out

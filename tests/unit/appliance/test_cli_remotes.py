"""vmctl remote add | list | get-default | switch | rm, --remote, and the token files
(issue 16): against the real REST app over HTTP, with a client config of the test's own."""
from __future__ import annotations

import json
import os
import tomllib

import pytest

from appliance.cli.parser import build_parser
from appliance.cli.target import client_for
from tests.appliance_process import free_port
from tests.unit.appliance.cli_main import run_main
from tests.unit.appliance.conftest import CLI_TOKEN

FINGERPRINT = "ab" * 32


@pytest.fixture
def run(vmctl, tmp_path, monkeypatch, capsys):
    """main(argv) with no --home and none of the variables naming a target: only the
    client config (VMCTL_CONFIG, the vmctl fixture's) decides."""
    url = os.environ["VMCTL_URL"]
    for name in ("VMCTL_URL", "VMCTL_TOKEN", "VMAPP_HOME", "VMAPPLIANCE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # ./.appliance, the default home, does not exist here

    def vmctl_(*argv: str) -> tuple[int, str, str]:
        return run_main(capsys, *argv)

    vmctl_.url = url  # type: ignore[attr-defined]
    return vmctl_


@pytest.fixture
def token_file(tmp_path):
    path = tmp_path / "lab.token"
    path.write_text(CLI_TOKEN + "\n")
    path.chmod(0o600)
    return path


def config_file() -> dict:
    with open(os.environ["VMCTL_CONFIG"], "rb") as source:
        return tomllib.load(source)


def test_add_list_switch_use_and_remove(run, token_file):
    code, out, err = run("remote", "add", "lab", run.url, "--token-file", str(token_file))
    assert (code, out) == (0, f"lab: added ({run.url})\n"
                              "  the token is accepted: user admin (admin)\n"), err
    assert os.stat(os.environ["VMCTL_CONFIG"]).st_mode & 0o777 == 0o600
    assert config_file() == {"remotes": {"lab": {"url": run.url, "token-file": str(token_file)}}}
    code, out, _ = run("remote", "list")
    rows = [line.split()[:2] for line in out.splitlines()[1:]]
    assert rows == [["local", "(default)"], ["lab", run.url]]
    assert CLI_TOKEN not in out
    code, out, _ = run("--json", "remote", "list")
    assert CLI_TOKEN not in out and json.loads(out)[1]["token_file"] == str(token_file)

    code, out, err = run("host", "list", "--remote", "lab", "--json")  # the flag, after
    assert code == 0 and json.loads(out)[0]["name"] == "local", err
    code, _, err = run("host", "list")  # not the default yet: the (missing) home
    assert code == 1 and "the listener of home" in err
    assert run("remote", "switch", "lab")[:2] == (0, "default remote: lab\n")
    assert config_file()["default-remote"] == "lab"
    assert run("remote", "get-default")[1] == "lab\n"
    code, out, err = run("--json", "host", "list")
    assert code == 0 and json.loads(out)[0]["name"] == "local", err

    assert run("remote", "switch", "local")[0] == 0
    assert "default-remote" not in config_file()
    assert run("remote", "switch", "lab")[0] == 0
    assert run("remote", "rm", "lab")[:2] == (0, "lab: removed\n")
    assert config_file() == {}
    code, _, err = run("remote", "rm", "lab")
    assert code == 2 and "no remote named 'lab'" in err


@pytest.mark.parametrize(("mode", "said"), [(0o644, "can be read or written by others (mode 0644)"),
                                            (0o602, "can be read or written by others (mode 0602)"),
                                            # group members are others too (security review)
                                            (0o640, "can be read or written by others (mode 0640)"),
                                            (0o620, "can be read or written by others (mode 0620)")])
def test_a_token_file_others_can_read_is_refused(run, token_file, mode, said):
    token_file.chmod(mode)
    code, _, err = run("remote", "add", "lab", run.url, "--token-file", str(token_file))
    assert code == 2 and said in err and CLI_TOKEN not in err
    assert not os.path.exists(os.environ["VMCTL_CONFIG"])
    # one made readable after it was added is refused at use, before any request
    token_file.chmod(0o600)
    assert run("remote", "add", "lab", run.url, "--token-file", str(token_file))[0] == 0
    token_file.chmod(mode)
    code, out, err = run("list", "--remote", "lab")
    assert (code, out) == (2, "") and said in err and err.count("\n") == 1


@pytest.mark.parametrize("setup", ["missing", "directory", "empty"])
def test_a_token_file_that_is_not_one_token_is_refused(run, tmp_path, setup):
    path = tmp_path / "t"
    if setup == "directory":
        path.mkdir()
    elif setup == "empty":
        path.write_text("\n")
        path.chmod(0o600)
    code, _, err = run("remote", "add", "lab", run.url, "--token-file", str(path))
    assert code == 2 and f"token file {path}" in err


def test_a_401_through_a_remote_names_it_and_the_token_file(run, tmp_path):
    wrong = tmp_path / "wrong.token"
    wrong.write_text("nope\n")
    wrong.chmod(0o600)
    run("remote", "add", "lab", run.url, "--token-file", str(wrong), "--no-check")
    code, _, err = run("list", "--remote", "lab")
    assert code == 1 and "HTTP 401" in err and "nope" not in err
    assert err.endswith(f"(sent to {run.url}, remote lab, from --remote, with the token file "
                        f"{wrong})\n")


def test_which_target_wins(run, token_file, monkeypatch):
    dead = f"http://127.0.0.1:{free_port()}"
    run("remote", "add", "lab", run.url, "--token-file", str(token_file))
    run("remote", "add", "gone", dead, "--no-check")
    run("remote", "switch", "gone")

    def target(*argv: str):
        return client_for(build_parser().parse_args([*argv, "list"]))[1]

    assert target().url == dead and "the default remote of" in target().url_from
    assert target("--remote", "lab").url == run.url
    assert target("--remote", "lab", "--url", "https://x:1").url == "https://x:1"
    assert target("--remote", "local").home is not None  # the home's listener
    assert target("--home", "elsewhere").url_from.startswith("the listener of home")
    monkeypatch.setenv("VMAPPLIANCE_URL", "https://env:2")
    assert target().url == "https://env:2"
    assert target("--remote", "lab").url == run.url
    monkeypatch.delenv("VMAPPLIANCE_URL")
    monkeypatch.setenv("VMAPPLIANCE_REMOTE", "lab")
    assert target().url == run.url and target().url_from == "remote lab, from $VMAPPLIANCE_REMOTE"
    code, _, err = run("list", "--remote", "nope")
    assert code == 2 and err.startswith("vmctl list: argument --remote: no remote named 'nope'")


def test_a_remotes_fingerprint_pins_its_certificate(run, token_file):
    assert run("remote", "add", "lab", "https://lab.example:8443", "--token-file", str(token_file),
               "--no-check", "--fingerprint", ":".join([FINGERPRINT[i:i + 2] for i in range(0, 64, 2)]))[0] == 0
    assert config_file()["remotes"]["lab"]["fingerprint"] == FINGERPRINT
    client, _ = client_for(build_parser().parse_args(["--remote", "lab", "list"]))
    assert client.pinned == FINGERPRINT
    code, _, err = run("remote", "add", "lab2", "https://lab:1", "--fingerprint", "xyz")
    assert code == 2 and "argument --fingerprint: a SHA-256 fingerprint is 64 hex digits" in err


def test_odd_paths_survive_the_config_file(run, tmp_path):
    odd = tmp_path / 'quo"te\\back slash é'
    odd.mkdir()
    path = odd / "t"
    path.write_text("tok\n")
    path.chmod(0o600)
    assert run("remote", "add", "lab", "https://lab:1", "--token-file", str(path), "--no-check")[0] == 0
    assert config_file()["remotes"]["lab"]["token-file"] == str(path)


@pytest.mark.parametrize(("argv", "said"), [
    (["remote", "add", "Lab", "https://lab:1"], "argument name: 'Lab' is not a remote name"),
    (["remote", "add", "local", "https://lab:1"], "is not a remote name"),
    (["remote", "add", "lab", "ftp://lab"], "argument url: 'ftp://lab' is not an http(s)"),
    (["remote", "add", "lab", "https://lab:port"], "is not an http(s)"),
    (["remote", "add", "lab", "http://lab.example:8080"], "plain http only to a loopback"),
])
def test_remote_add_refuses_bad_values_by_name(run, argv, said):
    code, _, err = run(*argv)
    assert code == 2 and said in err and err.count("\n") == 1


# -- remote add asks the server first (appliance/cli/remote_check.py) ------------------------
@pytest.fixture
def https_app(service, tmp_path):
    """The real REST app over HTTPS with the appliance's self-signed pair (no CA of
    this machine signs it): its URL and its certificate's fingerprint."""
    from appliance import tls
    from appliance.api.app import create_app
    from appliance.config import Config
    from tests.unit.http_served import HttpServed

    cert, key = tls.prepare(Config(home=tmp_path / "srv", listen="127.0.0.1:0", tls="on"))
    served = HttpServed(create_app(service, CLI_TOKEN))
    served.server.socket = tls.server_context(cert, key).wrap_socket(served.server.socket,
                                                                      server_side=True)
    yield served.url.replace("http:", "https:"), tls.fingerprint(cert.read_bytes())
    served.stop()


def test_an_untrusted_certificate_is_shown_and_refused_off_a_terminal(run, token_file, https_app):
    url, fingerprint = https_app
    code, out, err = run("remote", "add", "lab", url, "--token-file", str(token_file))
    assert (code, out) == (2, "") and err.count("\n") == 1, err
    assert f"not signed by a CA this machine trusts (SHA-256 fingerprint {fingerprint})" in err
    assert f"--fingerprint {fingerprint} (or --accept-certificate)" in err
    assert not os.path.exists(os.environ["VMCTL_CONFIG"])


def test_accept_certificate_pins_it_and_the_token_is_tried(run, token_file, https_app):
    url, fingerprint = https_app
    code, out, err = run("remote", "add", "lab", url, "--token-file", str(token_file),
                         "--accept-certificate")
    assert code == 0, err
    assert out == (f"lab: added ({url})\n  its certificate is pinned: SHA-256 fingerprint "
                   f"{fingerprint}\n  the token is accepted: user admin (admin)\n")
    assert config_file()["remotes"]["lab"]["fingerprint"] == fingerprint
    code, out, err = run("--remote", "lab", "--json", "host", "list")
    assert code == 0 and json.loads(out)[0]["name"] == "local", err


def test_on_a_terminal_the_user_accepts_by_answer_or_fingerprint(run, token_file, https_app,
                                                                 monkeypatch):
    from appliance.cli import remote_check

    url, fingerprint = https_app
    asked: list[str] = []
    answers = iter(["n", "0" * 64, "y", fingerprint.upper()])
    monkeypatch.setattr(remote_check, "ask_on_terminal",
                        lambda: lambda question: asked.append(question) or next(answers))
    code, _, err = run("remote", "add", "lab", url, "--token-file", str(token_file))
    assert code == 2 and "was not accepted" in err
    assert asked == [f"Certificate fingerprint: {fingerprint}\nok (y/n/[fingerprint])? "]
    code, _, err = run("remote", "add", "lab", url, "--token-file", str(token_file))
    assert code == 2 and f"has fingerprint {fingerprint}, not {'0' * 64}" in err
    assert not os.path.exists(os.environ["VMCTL_CONFIG"])
    assert run("remote", "add", "lab", url, "--token-file", str(token_file))[0] == 0
    assert run("remote", "add", "lab2", url, "--token-file", str(token_file))[0] == 0
    assert {r["fingerprint"] for r in config_file()["remotes"].values()} == {fingerprint}


def test_a_wrong_pin_an_unreachable_server_and_a_refused_token_are_refused(run, token_file,
                                                                          https_app, tmp_path):
    url, fingerprint = https_app
    wrong = ("0" if fingerprint[0] != "0" else "1") + fingerprint[1:]
    code, _, err = run("remote", "add", "lab", url, "--fingerprint", wrong)
    assert code == 2 and f"fingerprint {fingerprint}, not the pinned {wrong}" in err
    dead = f"http://127.0.0.1:{free_port()}"
    code, _, err = run("remote", "add", "lab", dead)
    assert code == 2 and f"cannot reach the appliance at {dead}" in err and err.count("\n") == 1
    code, _, err = run("remote", "add", "lab", f"https://127.0.0.1:{free_port()}")
    assert code == 2 and "cannot reach https://127.0.0.1:" in err and err.count("\n") == 1
    other = tmp_path / "other.token"
    other.write_text("not-this-appliances\n")
    other.chmod(0o600)
    code, _, err = run("remote", "add", "lab", run.url, "--token-file", str(other))
    assert code == 2 and "refused the token (HTTP 401)" in err and "not-this" not in err
    code, _, err = run("remote", "add", "lab", url, "--fingerprint", fingerprint,
                       "--token-file", str(other))
    assert code == 2 and "refused the token (HTTP 401)" in err
    assert not os.path.exists(os.environ["VMCTL_CONFIG"])
    # --no-check keeps it unasked
    assert run("remote", "add", "lab", dead, "--no-check")[:2] == (0, f"lab: added ({dead})\n")

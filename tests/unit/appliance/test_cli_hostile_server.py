"""vmctl against a hostile server: what the server sends (a VM's name in a listing, an
error's reason, the user `vmctl remote add` reports) is printed with each terminal
control character shown as \\xNN (appliance/cli/output.py Printable), so that the
server cannot clear the screen, retitle the window, write the clipboard (OSC 52) or
overwrite what was printed (\\r). Newlines and tabs pass."""
from __future__ import annotations

import json

import pytest

from appliance.cli.output import printable
from tests.unit.appliance.cli_main import run_main
from tests.unit.http_served import HttpServed

EVIL = "web\x1b]52;c;cm0gLXJmIH4=\x07\x1b[2J\rok\x9b31m\x7f"
SHOWN = "web\\x1b]52;c;cm0gLXJmIH4=\\x07\\x1b[2J\\x0dok\\x9b31m\\x7f"


def hostile(environ, start_response):
    path = environ["PATH_INFO"]
    if path == "/v1/vms":
        body, status = {"items": [{"name": EVIL, "desired_state": "running", "state": EVIL,
                                   "host": "h\x1b[8m", "spec": {
                                       "cpus": 1, "memory": 256, "image": "demo",
                                       "run_strategy": "Always"}}]}, "200 OK"
    elif path == "/healthz":
        body, status = {"status": "ok"}, "200 OK"
    elif path == "/v1/me":
        body, status = {"user": EVIL, "role": "admin\x1b[0m"}, "200 OK"
    else:
        body, status = {"reason": f"no such VM {EVIL}\n\tsecond line", "field": "name\x1b[1m"}, \
            "404 Not Found"
    data = json.dumps(body).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))])
    return [data]


@pytest.fixture
def server(monkeypatch, tmp_path):
    served = HttpServed(hostile)
    for name in ("VMAPP_HOME", "VMAPPLIANCE_HOME", "VMAPPLIANCE_URL", "VMAPPLIANCE_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("VMCTL_URL", served.url)
    monkeypatch.setenv("VMCTL_TOKEN", "t")
    monkeypatch.setenv("VMCTL_CONFIG", str(tmp_path / "vmctl.toml"))
    monkeypatch.chdir(tmp_path)
    yield served
    served.stop()


def test_printable_shows_controls_and_keeps_newlines_and_tabs():
    assert printable(EVIL) == SHOWN
    assert printable("a\tb\nc é ✓") == "a\tb\nc é ✓"


def test_a_listing_and_an_error_from_the_server_reach_the_terminal_inert(server, capsys):
    code, out, err = run_main(capsys, "list")
    assert code == 0, err
    assert SHOWN in out and "h\\x1b[8m" in out
    assert not set(out) & {"\x1b", "\x07", "\r", "\x9b", "\x7f"}
    code, out, err = run_main(capsys, "get", "web1")
    assert code == 1
    assert f"no such VM {SHOWN}\n\tsecond line" in err and "name\\x1b[1m" in err
    assert not set(err) & {"\x1b", "\x07", "\r", "\x9b", "\x7f"}


def test_remote_add_reports_the_server_s_user_inert(server, capsys, tmp_path):
    token = tmp_path / "t.token"
    token.write_text("t\n")
    token.chmod(0o600)
    code, out, err = run_main(capsys, "remote", "add", "lab", server.url, "--token-file", str(token))
    assert code == 0, err
    assert f"the token is accepted: user {SHOWN} (admin\\x1b[0m)" in out
    assert "\x1b" not in out

"""vmctl console, vnc and screenshot against a stand-in server: a real
WebSocket server (websockets) in a thread for console; a fake REST client for
vnc and screenshot. The real appliance: tests/integration/test_vmctl_console.py."""
from __future__ import annotations

import json
import os
import sys
import threading
import urllib.parse

import pytest
from websockets.datastructures import Headers
from websockets.http11 import Response
from websockets.sync.server import serve

from appliance import tls
from appliance.cli import consoles, main
from appliance.client import APIError, Client
from appliance.config import Config

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


class ConsoleServer:
    """A WebSocket server that records each upgrade request and what it was
    sent; `answer` says what it does: refuse with (status, body), or accept,
    send `reply` after the first message, then close with `close`."""

    def __init__(self, ssl_context=None):
        self.requests: list = []
        self.received: list[bytes] = []
        self.refuse: tuple[int, dict] | None = None
        self.reply = b""
        self.close = (1000, "")
        self.server = serve(self._handler, "127.0.0.1", 0, ssl=ssl_context,
                            process_request=self._process_request)
        self.port = self.server.socket.getsockname()[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _process_request(self, connection, request):
        self.requests.append(request)
        if self.refuse is None:
            return None
        status, body = self.refuse
        payload = json.dumps(body).encode()
        return Response(status, "Refused", Headers(
            [("Content-Type", "application/json"), ("Content-Length", str(len(payload)))]), payload)

    def _handler(self, websocket):
        for message in websocket:
            self.received.append(message if isinstance(message, bytes) else message.encode())
            if self.reply:
                websocket.send(self.reply)
                websocket.close(*self.close)
                return

    def query(self, index: int = -1) -> dict[str, str]:
        return dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.requests[index].path).query))


@pytest.fixture
def server():
    srv = ConsoleServer()
    yield srv
    srv.server.shutdown()


class PipedStdio:
    """stdin and stdout as pipes (not terminals), as a script's vmctl console
    has them: `stdin` and `stdout` are the test's ends."""

    def __init__(self):
        in_read, in_write = os.pipe()
        out_read, out_write = os.pipe()
        self.theirs = [os.fdopen(in_read, "rb", buffering=0), os.fdopen(out_write, "w")]
        self.stdin = os.fdopen(in_write, "wb", buffering=0)
        self.stdout = os.fdopen(out_read, "rb", buffering=0)

    def install(self, monkeypatch) -> None:
        # at the call, not in the fixture: capsys puts its own sys.stdout back when a test starts
        monkeypatch.setattr(sys, "stdin", self.theirs[0])
        monkeypatch.setattr(sys, "stdout", self.theirs[1])

    def close(self) -> None:
        for f in (self.stdin, self.stdout, *self.theirs):
            f.close()


@pytest.fixture
def piped_stdio():
    stdio = PipedStdio()
    yield stdio
    stdio.close()


def vmctl(tmp_path, monkeypatch, stdio: PipedStdio, port: int, *args: str) -> int:
    monkeypatch.setenv("VMCTL_URL", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("VMCTL_TOKEN", "t0ken")
    stdio.install(monkeypatch)
    return main(["--home", str(tmp_path), *args])


def test_console_sends_the_token_project_and_options_and_pipes_stdin(
        server, piped_stdio, tmp_path, monkeypatch, capsys):
    server.reply = b"6.1.0-28-cloud-amd64\r\n"
    piped_stdio.stdin.write(b"uname -r\n")
    piped_stdio.stdin.close()
    code = vmctl(tmp_path, monkeypatch, piped_stdio, server.port, "--project", "blue",
                 "console", "web1", "--read-only", "--history", "100")
    assert code == 0
    assert piped_stdio.stdout.read(100) == b"6.1.0-28-cloud-amd64\r\n"
    assert server.received == [b"uname -r\n"]
    request = server.requests[0]
    assert urllib.parse.urlsplit(request.path).path == "/v1/vms/web1/console"
    assert request.headers["Authorization"] == "Bearer t0ken"
    assert server.query() == {"project": "blue", "mode": "ro", "history": "100"}
    assert "Connected to web1 (until the end of stdin; read-only)" in capsys.readouterr().err


@pytest.mark.parametrize("status, reason", [
    (401, "a token is needed"), (403, "viewers may not force the console"),
    (404, "no VM named web9"), (409, "web9 is stopped: start it first")])
def test_a_refused_handshake_is_one_line_with_the_apis_reason(
        server, piped_stdio, tmp_path, monkeypatch, capsys, status, reason):
    server.refuse = (status, {"title": "refused", "reason": reason})
    code = vmctl(tmp_path, monkeypatch, piped_stdio, server.port, "console", "web9")
    err = capsys.readouterr().err
    assert code == 1
    # a 401 also says where it was sent and whose token (appliance/cli/target.py)
    tried = (f" (sent to http://127.0.0.1:{server.port}, from $VMCTL_URL, with the token of "
             "$VMCTL_TOKEN)") if status == 401 else ""
    assert err == f"vmctl console: HTTP {status}: {reason}{tried}\n"


def test_nobody_listening_is_one_line(tmp_path, monkeypatch, capsys, piped_stdio):
    from tests.appliance_process import free_port

    code = vmctl(tmp_path, monkeypatch, piped_stdio, free_port(), "console", "web1")
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("vmctl console: HTTP 0: cannot reach the appliance at")
    assert len(err.splitlines()) == 1


@pytest.mark.parametrize("close, expected_code", [((1000, "web1 stopped"), 0),
                                                   ((1011, "the broker went away"), 1)])
def test_the_server_closing_says_why(server, piped_stdio, tmp_path, monkeypatch, capsys,
                                     close, expected_code):
    server.reply, server.close = b"bye\r\n", close
    piped_stdio.stdin.write(b"\r")  # stdin stays open: the close, not its end, ends the session
    assert vmctl(tmp_path, monkeypatch, piped_stdio, server.port, "console", "web1") == expected_code
    assert f"vmctl console: web1: {close[1]}" in capsys.readouterr().err


@pytest.fixture
def tls_server(tmp_path):
    config = Config(home=tmp_path / "srv", tls="on")
    cert, key = tls.prepare(config)
    srv = ConsoleServer(ssl_context=tls.server_context(cert, key))
    srv.reply = b"pong"
    yield srv, cert
    srv.server.shutdown()


def test_the_websocket_pins_the_fingerprint_as_rest_does_and_sends_no_token_elsewhere(tls_server):
    srv, cert = tls_server
    url = f"https://127.0.0.1:{srv.port}"
    right = tls.fingerprint(cert.read_bytes())
    with consoles.open_websocket(Client(url, "t0ken", fingerprint=right), "/v1/vms/a/console",
                                 {}) as ws:
        ws.send(b"ping")
        assert ws.recv() == b"pong"
    assert len(srv.requests) == 1
    wrong = ("0" if right[0] != "0" else "1") + right[1:]
    with pytest.raises(APIError, match=f"fingerprint {right}, not the pinned {wrong}"):
        consoles.open_websocket(Client(url, "t0ken", fingerprint=wrong), "/v1/vms/a/console", {})
    with pytest.raises(APIError, match="CERTIFICATE_VERIFY_FAILED"):
        consoles.open_websocket(Client(url, "t0ken"), "/v1/vms/a/console", {})  # system CAs
    assert len(srv.requests) == 1  # the token never left


def test_websocket_url_follows_the_base_url():
    assert consoles.websocket_url(Client("https://h:8443/", "t", project="a b"), "/v1/x",
                                  {"mode": "ro"}) == "wss://h:8443/v1/x?mode=ro&project=a+b"
    assert consoles.websocket_url(Client("http://h:8080", "t"), "/v1/x", {}) == "ws://h:8080/v1/x"


class FakeClient:
    def __init__(self, answer, base_url="https://vm.example:8443", project=None):
        self.answer = answer
        self.base_url = base_url
        self.project = project
        self.calls: list = []

    def request(self, method, path, **kwargs):
        self.calls.append((method, path, kwargs))
        return self.answer


def args(**values):
    import argparse

    return argparse.Namespace(json=False, **values)


def test_vnc_prints_the_pages_url_with_the_ticket_and_project(capsys):
    ticket = {"ticket": "vmt_abc/+", "vm": "web1", "kind": "vnc", "write": True,
              "expires": "2026-11-29T21:00:00Z", "path": "/v1/vms/web1/vnc"}
    client = FakeClient(ticket, project="blue team")
    assert consoles.cmd_vnc(client, args(name="web1")) == 0
    out, err = capsys.readouterr()
    assert client.calls == [("POST", "/v1/tickets", {"body": {"vm": "web1", "kind": "vnc"}})]
    assert out == "https://vm.example:8443/#vnc?vm=web1&ticket=vmt_abc%2F%2B&project=blue+team\n"
    assert "valid once, for 60 s" in err
    client.project = None
    consoles.cmd_vnc(client, args(name="web1"))
    assert capsys.readouterr().out == "https://vm.example:8443/#vnc?vm=web1&ticket=vmt_abc%2F%2B\n"


def test_screenshot_writes_the_png_atomically_keeping_the_files_mode(tmp_path, capsys):
    target = tmp_path / "shot.png"
    target.write_bytes(b"old")
    target.chmod(0o640)
    client = FakeClient(PNG)
    assert consoles.cmd_screenshot(client, args(name="web1", file=str(target))) == 0
    assert client.calls == [("GET", "/v1/vms/web1/screen.png", {"binary": True})]
    assert target.read_bytes() == PNG and (target.stat().st_mode & 0o777) == 0o640
    assert os.listdir(tmp_path) == ["shot.png"]  # no temporary file left
    fresh = tmp_path / "new.png"
    old_umask = os.umask(0o022)
    try:
        consoles.cmd_screenshot(client, args(name="web1", file=str(fresh)))
    finally:
        os.umask(old_umask)
    assert fresh.stat().st_mode & 0o777 == 0o644


def test_screenshot_refuses_a_directory_and_an_answer_that_is_not_a_png(tmp_path, capsys):
    assert consoles.cmd_screenshot(FakeClient(PNG), args(name="web1", file=str(tmp_path))) == 2
    assert "is a directory" in capsys.readouterr().err
    assert os.listdir(tmp_path) == []
    target = tmp_path / "shot.png"
    target.write_bytes(PNG)
    assert consoles.cmd_screenshot(FakeClient(b"<html>"), args(name="web1", file=str(target))) == 1
    assert target.read_bytes() == PNG and os.listdir(tmp_path) == ["shot.png"]


def test_screenshot_to_stdout(tmp_path, monkeypatch):
    out = tmp_path / "out"
    with open(out, "w") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        assert consoles.cmd_screenshot(FakeClient(PNG), args(name="web1", file="-")) == 0
    assert out.read_bytes() == PNG


def test_console_log_keeps_printing_the_log(monkeypatch):
    seen = []
    monkeypatch.setattr(consoles.vms, "print_console_log", lambda client, a: seen.append(a) or 0)
    namespace = args(name="web1", log=True, follow=False, read_only=False, force=False, history=0)
    assert consoles.cmd_console(object(), namespace) == 0 and seen == [namespace]
    namespace.read_only = True
    assert consoles.cmd_console(object(), namespace) == 2


class MeClient:
    def __init__(self, answer):
        self.answer = answer

    def get(self, path):
        assert path == "/v1/me"
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def test_the_connected_line_says_when_the_role_may_not_type():
    assert consoles._read_only_role(MeClient({"role": "viewer"})) == [
        "read-only: a viewer's keys are dropped"]
    assert consoles._read_only_role(MeClient({"role": "monitor"})) != []
    assert consoles._read_only_role(MeClient({"role": "operator"})) == []
    assert consoles._read_only_role(MeClient({"role": "admin"})) == []
    # an answer that does not say: nothing said (the server decides anyway)
    assert consoles._read_only_role(MeClient(APIError(500, "boom"))) == []
    assert consoles._read_only_role(MeClient({"role": "emperor"})) == []


class DroppingServer:
    """Reads each upgrade request and closes the connection without a byte of answer
    for the first `drops` of them (a restarted worker, a reset that took the answer with
    it), then refuses with a 404 and its JSON body."""

    def __init__(self, drops: int):
        import socket

        self.drops, self.seen = drops, 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    request += chunk
                self.seen += 1
                if self.seen <= self.drops:
                    continue
                body = json.dumps({"error": "NotFound", "reason": "no VM named web1"}).encode()
                conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
                             b"Content-Length: %d\r\nConnection: close\r\n\r\n%s"
                             % (len(body), body))


@pytest.mark.parametrize("drops, status", [(1, 404), (2, 0)])
def test_a_connection_that_ends_before_any_answer_is_tried_once_more(drops, status):
    server = DroppingServer(drops)
    try:
        with pytest.raises(APIError) as refused:
            consoles.open_websocket(Client(f"http://127.0.0.1:{server.port}", "t"),
                                    "/v1/vms/web1/console", {})
    finally:
        server.listener.close()
    assert refused.value.status == status and server.seen == 2
    if status == 404:
        assert "no VM named web1" in str(refused.value)
    else:  # twice without an answer: one line that says the connection ended first
        assert "did not receive a valid HTTP response (the connection ended first" in str(
            refused.value), str(refused.value)

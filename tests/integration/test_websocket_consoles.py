"""The consoles' WebSockets under a real `vmctl serve` (gunicorn + uvicorn, the
console broker, a TCG guest), with the `websockets` client as vmctl and the
browser use it. Each check looks for what the guest computes (42-wsc1), never
for text the typed command itself contains (the terminal echoes it).

The appliance runs with ticket_ttl 3 (config.json), so a ticket's expiry is
seen in seconds."""
from __future__ import annotations

import json
import struct
import time
import uuid

import pytest
import requests
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.appliance_process import READY_LINE, Appliance

pytestmark = pytest.mark.integration

TTL = 3.0
VM = "wsc1"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    (home / "config.json").write_text(json.dumps({"ticket_ttl": TTL}))
    appliance = Appliance(home)
    try:
        appliance.start()
        appliance.create_vm(VM, memory="160M")
        appliance.wait_console(VM, READY_LINE, timeout=120)
        yield appliance
    finally:
        appliance.cleanup()


@pytest.fixture(scope="module")
def users(app) -> dict[str, str]:
    """role -> a token of a user with that role in the default project."""
    made = {"admin": app.token}
    for role in ("operator", "viewer", "monitor"):
        name = f"{role}-{uuid.uuid4().hex[:4]}"
        assert app.api("POST", "/v1/users", json={"name": name, "role": role}).status_code == 201
        resp = app.api("POST", "/v1/tokens", json={"user": name})
        assert resp.status_code == 201, resp.text
        made[role] = resp.json()["token"]
    return made


def ws_url(app: Appliance, path: str) -> str:
    return app.url.replace("http", "ws", 1) + path


def open_ws(app: Appliance, path: str, token: str | None = None) -> ClientConnection:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return connect(ws_url(app, path), additional_headers=headers, open_timeout=20,
                   max_size=2**22)


def read_until(ws: ClientConnection, text: bytes, timeout: float = 30) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while text not in seen:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{text!r} not seen within {timeout} s: {seen[-600:]!r}")
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            continue
        seen += message if isinstance(message, bytes) else message.encode()
    return seen


def read_for(ws: ClientConnection, seconds: float) -> bytes:
    seen = b""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            message = ws.recv(timeout=left)
        except TimeoutError:
            break
        seen += message if isinstance(message, bytes) else message.encode()
    return seen


def refusal(app: Appliance, path: str, token: str | None = None) -> int:
    with pytest.raises(InvalidStatus) as refused:
        open_ws(app, path, token)
    return refused.value.response.status_code


def ticket(app: Appliance, token: str, kind: str = "console") -> dict:
    resp = requests.post(app.url + "/v1/tickets", json={"vm": VM, "kind": kind},
                         headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert resp.status_code == 201, resp.text
    return resp.json()


# -- the serial console ---------------------------------------------------------------------------
def test_an_operator_types_and_reads_the_guest_s_answer(app, users):
    with open_ws(app, f"/v1/vms/{VM}/console", users["operator"]) as ws:
        ws.send(b"\r")
        ws.send("echo $((6*7))-$(hostname)\r")  # a text frame: its UTF-8 bytes
        read_until(ws, f"42-{VM}".encode())


def test_a_viewer_s_websocket_is_read_only(app, users):
    """The viewer types a command whose answer (MARK-7) would show; then the
    operator types one (DONE-9): the viewer sees DONE-9, and MARK-7 never appears."""
    with open_ws(app, f"/v1/vms/{VM}/console", users["viewer"]) as viewer, \
            open_ws(app, f"/v1/vms/{VM}/console", users["operator"]) as operator:
        viewer.send(b"\recho MARK-$((3+4))\r")
        time.sleep(1.0)
        operator.send(b"echo DONE-$((4+5))\r")
        seen = read_until(viewer, b"DONE-9")
        read_until(operator, b"DONE-9")
    assert b"MARK-7" not in seen
    assert "MARK-7" not in app.console(VM)


def test_a_token_less_upgrade_is_refused(app, users):
    assert refusal(app, f"/v1/vms/{VM}/console") == 401
    assert refusal(app, f"/v1/vms/{VM}/vnc") == 401
    assert refusal(app, f"/v1/vms/{VM}/console", "vma_000000000000_" + "x" * 43) == 401
    assert refusal(app, f"/v1/vms/{VM}/console", users["monitor"]) == 403
    assert refusal(app, "/v1/vms/nosuchvm/console", users["operator"]) == 404


def test_a_ticket_works_once_and_expires(app, users):
    made = ticket(app, users["viewer"])
    assert made["write"] is False and made["path"] == f"/v1/vms/{VM}/console"
    path = f"{made['path']}?ticket={made['ticket']}"
    with open_ws(app, path) as ws:  # no header: the ticket alone
        ws.send(b"echo $((6*7))-$(hostname)\r")  # read-only: goes nowhere, but the socket is open
        assert read_for(ws, 0.5) is not None
    assert refusal(app, path) == 401  # used
    late = ticket(app, users["operator"])
    assert late["write"] is True
    time.sleep(TTL + 0.5)
    assert refusal(app, f"{late['path']}?ticket={late['ticket']}") == 401  # expired


def test_a_ticket_of_a_revoked_token_is_refused(app, users):
    resp = app.api("POST", "/v1/tokens", json={"description": "revoked soon"})
    token, token_id = resp.json()["token"], resp.json()["id"]
    made = ticket(app, token)
    assert app.api("DELETE", f"/v1/tokens/{token_id}").status_code == 204
    assert refusal(app, f"{made['path']}?ticket={made['ticket']}") == 401


def test_the_attach_is_in_the_vm_s_events(app, users):
    with open_ws(app, f"/v1/vms/{VM}/console?mode=ro", users["operator"]):
        pass
    events = app.api("GET", "/v1/events", params={"vm": VM}).json()["items"]
    attached = [e for e in events if e["kind"] == "console-attached"]
    assert attached and attached[-1]["message"] == "console attached read-only"
    assert attached[-1]["actor"].startswith("operator-")


# -- VNC ------------------------------------------------------------------------------------------
ALT, PRINT = 0xFFE9, 0xFF61  # Alt + PrintScreen is the kernel's SysRq


def key(keysym: int, down: bool) -> bytes:
    return b"\x04" + bytes([down]) + b"\x00\x00" + struct.pack(">I", keysym)


def sysrq_help() -> bytes:
    """Alt+SysRq+h: the guest kernel prints its SysRq help (or that SysRq is
    disabled) on the serial console: a keystroke with an effect one can see."""
    return (key(ALT, True) + key(PRINT, True) + key(ord("h"), True) + key(ord("h"), False)
            + key(PRINT, False) + key(ALT, False))


def rfb_session(ws: ClientConnection, shared: bool = True) -> None:
    """The client's side of the handshake, up to ServerInit."""
    banner = read_until(ws, b"\n", timeout=20)
    assert banner.startswith(b"RFB 003.008")
    ws.send(b"RFB 003.008\n")
    types = read_until(ws, b"\x01", timeout=20)  # number-of-types, then the types: None (1)
    assert types[0] >= 1
    ws.send(b"\x01")
    assert read_until(ws, b"\x00\x00\x00\x00", timeout=20)  # SecurityResult: OK
    ws.send(bytes([shared]))
    read_for(ws, 1.0)  # ServerInit


def update_request() -> bytes:
    return b"\x03\x00" + struct.pack(">HHHH", 0, 0, 64, 64)


def test_vnc_over_websocket_speaks_rfb(app, users):
    with open_ws(app, f"/v1/vms/{VM}/vnc", users["viewer"]) as ws:
        assert read_until(ws, b"\n").startswith(b"RFB 003.008")


def test_a_viewer_s_vnc_keys_are_dropped(app, users):
    """The operator's SysRq reaches the guest kernel (its answer is on the serial
    console); the viewer's, sent the same way, does not."""
    with open_ws(app, f"/v1/vms/{VM}/vnc", users["viewer"]) as ws:
        rfb_session(ws)
        before = app.console(VM).count("sysrq")
        ws.send(sysrq_help() + update_request())
        read_for(ws, 2.0)
        assert app.console(VM).count("sysrq") == before
    with open_ws(app, f"/v1/vms/{VM}/vnc", users["operator"]) as ws:
        rfb_session(ws)
        ws.send(sysrq_help())
        deadline = time.monotonic() + 20
        while app.console(VM).count("sysrq") == before and time.monotonic() < deadline:
            time.sleep(0.3)
        assert app.console(VM).count("sysrq") > before, app.console(VM)[-1500:]


def test_a_viewer_cannot_push_other_vnc_clients_off(app, users):
    """A ClientInit with shared=0 makes QEMU (sharePolicy allow-exclusive) drop every
    other client; a viewer's is made shared, so the operator's session lives on."""
    with open_ws(app, f"/v1/vms/{VM}/vnc", users["operator"]) as operator:
        rfb_session(operator)
        with open_ws(app, f"/v1/vms/{VM}/vnc", users["viewer"]) as viewer:
            rfb_session(viewer, shared=False)
            time.sleep(1.0)
            operator.send(update_request())
            try:
                assert read_for(operator, 3.0)  # a FramebufferUpdate: still connected
            except ConnectionClosed:
                pytest.fail("the viewer's exclusive ClientInit pushed the operator off")


def test_a_client_message_over_64_kib_closes_the_websocket(app, users):
    with open_ws(app, f"/v1/vms/{VM}/console", users["operator"]) as ws:
        ws.send(b"#" * (64 * 1024 + 1))
        with pytest.raises(ConnectionClosed) as closed:
            read_for(ws, 10)
            ws.recv(timeout=10)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009

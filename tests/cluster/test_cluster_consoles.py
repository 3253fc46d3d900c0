"""A VM on the cluster's second host (packaging/local-hosts) has a working
serial console and VNC display through the appliance's console broker: the
broker opens its own connection to that host's libvirt."""
from __future__ import annotations

import asyncio
import time

import pytest

from appliance.consoles import client
from tests.appliance_process import READY_LINE

pytestmark = pytest.mark.integration


async def read_until(reader: asyncio.StreamReader, text: bytes, timeout: float = 30) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while text not in data:
        chunk = await asyncio.wait_for(reader.read(65536), max(0.1, deadline - time.monotonic()))
        if not chunk:
            raise AssertionError(f"closed before {text!r}: {data[-500:]!r}")
        data += chunk
    return data


def test_a_vm_on_another_host_has_a_console_and_vnc(cluster):
    app = cluster.app
    vm = app.create_vm("far1", host="h2")
    assert vm["host"] == "h2" and cluster.active_on(vm["id"]) == ["h2"]
    app.wait_console("far1", READY_LINE)
    sock = app.home / "run" / "consoles.sock"

    async def go():
        reader, writer = await client.open_console(sock, vm["id"], write=True)
        writer.write(b"echo $((6*7))-$(hostname)\n")
        await read_until(reader, b"42-far1")
        writer.close()
        rfb = await client.open_vnc(sock, vm["id"])
        with rfb:
            rfb.settimeout(10)
            assert rfb.recv(12) == b"RFB 003.008\n"
    asyncio.run(asyncio.wait_for(go(), 90))
    assert client.screenshot(sock, vm["id"]).startswith(b"\x89PNG")


def test_the_api_serves_a_far_vm_s_console_vnc_and_screen(cluster):
    """What a user on another machine does: the WebSockets and screen.png of the
    REST API, with a token, for a VM on h2 (the API worker -> the broker -> h2's
    libvirt), and a browser's ticket for its VNC display."""
    from websockets.sync.client import connect

    app = cluster.app
    vm = app.create_vm("far2", host="h2")
    assert cluster.active_on(vm["id"]) == ["h2"]
    app.wait_console("far2", READY_LINE)
    ws_url = app.url.replace("http", "ws", 1) + "/v1/vms/far2"
    bearer = {"Authorization": f"Bearer {app.token}"}
    with connect(ws_url + "/console", additional_headers=bearer, open_timeout=20) as ws:
        ws.send(b"echo $((6*9))-$(hostname)\n")
        seen, deadline = b"", time.monotonic() + 30
        while b"54-far2" not in seen:
            assert time.monotonic() < deadline, seen[-300:]
            seen += ws.recv(timeout=max(0.1, deadline - time.monotonic()))
    ticket = app.api("POST", "/v1/tickets", json={"vm": "far2", "kind": "vnc"})
    assert ticket.status_code == 201, ticket.text
    with connect(f"{ws_url}/vnc?ticket={ticket.json()['ticket']}", open_timeout=20) as ws:
        assert ws.recv(timeout=10)[:12] == b"RFB 003.008\n"
    screen = app.api("GET", "/v1/vms/far2/screen.png")
    assert screen.status_code == 200 and screen.content.startswith(b"\x89PNG")

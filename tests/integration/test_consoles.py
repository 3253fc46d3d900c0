"""The console broker under a real `vmctl serve`, on real TCG guests, through
the client functions everyone else uses (appliance/consoles/client.py).

The appliance runs with --no-mount. Guests: con1 (VNC, the default) and text1 (graphics none) run; off1 never
starts. Each check looks for what the guest computes (42-con1), never for text
the typed command itself contains, which the terminal echoes."""
from __future__ import annotations

import asyncio
import io
import os
import signal
import stat
import time

import libvirt
import pytest
from PIL import Image

from appliance.consoles import client
from appliance.errors import Conflict
from tests.appliance_process import READY_LINE

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def appliance(unmounted_appliance):
    return unmounted_appliance


@pytest.fixture(scope="module")
def vms(appliance):
    found = {name: appliance.create_vm(name, **spec) for name, spec in
             [("con1", {}), ("text1", {"graphics": "none"}), ("off1", {"state": "stopped"})]}
    for name in ("con1", "text1"):
        appliance.wait_console(name, READY_LINE)
    return {name: vm["id"] for name, vm in found.items()}


def sock(appliance):
    return appliance.home / "run" / "consoles.sock"


def run(coro, timeout: float = 60):
    return asyncio.run(asyncio.wait_for(coro, timeout))


async def read_until(reader: asyncio.StreamReader, text: bytes, timeout: float = 20) -> bytes:
    data = b""
    deadline = time.monotonic() + timeout
    while text not in data:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{text!r} not seen within {timeout} s: {data[-500:]!r}")
        try:
            chunk = await asyncio.wait_for(reader.read(65536), left)
        except asyncio.TimeoutError:
            continue
        if not chunk:
            raise AssertionError(f"closed before {text!r}: {data[-500:]!r}")
        data += chunk
    return data


def test_the_broker_socket_is_root_s_alone(appliance, vms):
    mode = os.stat(sock(appliance)).st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert stat.S_IMODE(os.stat(sock(appliance).parent).st_mode) == 0o700


def test_a_typed_command_runs_in_the_guest(appliance, vms):
    async def go():
        reader, writer = await client.open_console(sock(appliance), vms["con1"], write=True)
        writer.write(b"echo $((6*7))-$(hostname)\n")
        await read_until(reader, b"42-con1")
        writer.close()
    run(go())


def test_a_paste_longer_than_the_unanswered_bound_reaches_a_reading_guest(appliance, vms):
    # 20 KB at once: the broker sends a guest at most UNANSWERED_MAX (4 KiB) more
    # than it wrote back; a shell's echo lets the rest through
    async def go():
        reader, writer = await client.open_console(sock(appliance), vms["con1"], write=True)
        writer.write(b"".join(b": %s\n" % (b"x" * 96) for _ in range(200)))
        writer.write(b"echo $((6*7))-pasted\n")
        await read_until(reader, b"42-pasted", timeout=90)
        writer.close()
    run(go(), timeout=120)


def test_two_clients_share_the_session_and_a_viewer_cannot_type(appliance, vms):
    async def go():
        typist = await client.open_console(sock(appliance), vms["con1"], write=True)
        viewer = await client.open_console(sock(appliance), vms["con1"], write=False)
        viewer[1].write(b"echo $((7*7))-viewer-typed\n")  # dropped by the broker
        await viewer[1].drain()
        await asyncio.sleep(1.0)
        typist[1].write(b"echo $((6*9))-shared\n")
        seen_by_typist = await read_until(typist[0], b"54-shared")
        seen_by_viewer = await read_until(viewer[0], b"54-shared")
        for seen in (seen_by_typist, seen_by_viewer):
            assert b"viewer-typed" not in seen  # not even echoed: it never reached the port
        typist[1].close()
        viewer[1].close()
    run(go())
    assert "49-viewer-typed" not in appliance.console("con1")


def test_history_comes_first(appliance, vms):
    async def go():
        reader, writer = await client.open_console(sock(appliance), vms["con1"], write=False,
                                                   history=65536)
        first = await read_until(reader, READY_LINE.encode())
        writer.close()
        return first
    assert READY_LINE.encode() in run(go())


def test_input_types_into_the_serial_port(appliance, vms):
    client.send_input(sock(appliance), vms["con1"], b"echo MARK-$((6*7)) > /dev/console\n")
    appliance.wait_console("con1", "MARK-42", timeout=20)


def test_vnc_gives_an_rfb_socket(appliance, vms):
    rfb = run(client.open_vnc(sock(appliance), vms["con1"]))
    with rfb:
        rfb.settimeout(10)
        assert rfb.recv(12) == b"RFB 003.008\n"


def test_a_screenshot_is_a_png(appliance, vms):
    png = client.screenshot(sock(appliance), vms["con1"])
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.size[0] > 0 and image.size[1] > 0


def test_graphics_none_has_a_console_but_no_display(appliance, vms):
    with pytest.raises(Conflict, match="graphics: none"):
        client.screenshot(sock(appliance), vms["text1"])
    with pytest.raises(Conflict, match="graphics: none"):
        run(client.open_vnc(sock(appliance), vms["text1"]))

    async def go():
        reader, writer = await client.open_console(sock(appliance), vms["text1"], write=True)
        writer.write(b"echo $((5*5))-$(hostname)\n")
        await read_until(reader, b"25-text1")
        writer.close()
    run(go())


def test_a_stopped_vm_has_nothing(appliance, vms):
    with pytest.raises(Conflict, match="start it first"):
        client.screenshot(sock(appliance), vms["off1"])
    with pytest.raises(Conflict, match="start it first"):
        client.send_input(sock(appliance), vms["off1"], b"x")
    with pytest.raises(Conflict, match="start it first"):
        run(client.open_vnc(sock(appliance), vms["off1"]))
    with pytest.raises(Conflict, match="start it first"):
        run(client.open_console(sock(appliance), vms["off1"], write=True))


def test_a_console_held_elsewhere_is_409_unless_forced(appliance, vms):
    time.sleep(1.5)  # the broker lets go of con1's console (it lingers 1 s after input)
    conn = libvirt.open(appliance.libvirt_uri)
    try:
        stream = conn.newStream(0)
        conn.lookupByUUIDString(vms["con1"]).openConsole(None, stream, 0)  # as `virsh console` does
        with pytest.raises(Conflict, match="held elsewhere") as err:
            run(client.open_console(sock(appliance), vms["con1"], write=True))
        assert err.value.field == "force"

        async def take_over():
            reader, writer = await client.open_console(sock(appliance), vms["con1"], write=True,
                                                       force=True)
            writer.write(b"echo $((6*6))-forced\n")
            await read_until(reader, b"36-forced")
            writer.close()
        run(take_over())
        try:
            stream.abort()
        except libvirt.libvirtError:
            pass  # taken over: libvirt already ended it
    finally:
        conn.close()


def broker_pid(appliance) -> int:
    """The pid of the broker our `vmctl serve` started (its child, by its command line)."""
    wanted = ["-m", "appliance.consoles", "--home", str(appliance.home)]
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            # NUL-separated when exec'd, one title when forked (appliance/forked.py)
            args = open(f"/proc/{entry}/cmdline", "rb").read().decode().replace("\0", " ").split()
            ppid = int(open(f"/proc/{entry}/stat").read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == appliance.proc.pid and args[1:5] == wanted:
            return int(entry)
    raise AssertionError("no console broker under vmctl serve")


def test_a_killed_broker_is_restarted_and_its_clients_closed(appliance, vms):
    async def attached():
        return await client.open_console(sock(appliance), vms["con1"], write=False)

    async def go():
        reader, writer = await attached()
        os.kill(broker_pid(appliance), signal.SIGKILL)
        await asyncio.wait_for(reader.read(), 10)  # whatever came before, then the end
        assert reader.at_eof()
        writer.close()
    run(go())
    deadline = time.monotonic() + 20
    while True:
        try:
            client.screenshot(sock(appliance), vms["con1"])
            break
        except client.ConsoleUnavailable:
            assert time.monotonic() < deadline, "the broker did not come back"
            time.sleep(0.3)


def test_stopping_the_vm_closes_its_clients(appliance, vms):
    async def go():
        reader, writer = await client.open_console(sock(appliance), vms["text1"], write=False)
        resp = await asyncio.to_thread(appliance.api, "PUT", "/v1/vms/text1/state",
                                       json={"state": "force-stop"})
        assert resp.status_code == 200, resp.text
        while await asyncio.wait_for(reader.read(65536), 20):
            pass  # the last output, then the end
        writer.close()
    run(go())

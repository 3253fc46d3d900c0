"""A guest that does not read its serial port must not freeze the console
broker's loop (tests/soak/notes.md): input typed into it is held a little,
then refused to that session alone, while another VM's console still types.

Real libvirt domains that never boot (boot sector `cli; hlt`, as the soak's),
real console streams (each on its connection and thread, libvirt's events in
their own thread, as the broker runs them), the broker's Session and
ConsoleStream. The loop runs in its own thread so that a blocked loop fails the
test within a bound instead of hanging it."""
from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import uuid
from pathlib import Path

import libvirt
import pytest

from appliance.consoles.port import ConsoleStream, GuestInput
from appliance.consoles.session import Session
from appliance.consoles.streams import start_libvirt_events
from tests.appliance_process import LIBVIRT_URI, remove_domains
from tests.integration.serial_guests import boot_image, create

pytestmark = pytest.mark.integration

TYPED = 200 * 1024
CHUNK = 4000


@pytest.fixture
def halted_domains(tmp_path: Path):
    conn = libvirt.open(LIBVIRT_URI)
    doms = []
    try:
        for i in range(2):
            image = boot_image(tmp_path / f"halt{i}.img")
            doms.append(create(conn, f"vmapp-test-unread-{uuid.uuid4().hex[:8]}", image))
        yield [dom.UUIDString() for dom in doms]
    finally:
        remove_domains(doms)  # also unblocks a send stuck on them
        conn.close()


def test_a_guest_that_does_not_read_its_console_blocks_no_other(halted_domains):
    start_libvirt_events()
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = loop.time()
        while True:
            await asyncio.sleep(0.05)
            gaps.append(loop.time() - last)
            last = loop.time()

    async def go() -> tuple[int, bool, bool, float]:
        beat = asyncio.ensure_future(heartbeat())
        sessions, ports = [], []
        for vm_id in halted_domains:
            session = Session(vm_id)
            port = ConsoleStream(session)
            await port.open(LIBVIRT_URI, vm_id, False)
            port.start(GuestInput())
            session.start(port)
            sessions.append(session)
            ports.append(port)
        mute, other = sessions
        taken = 0
        start = loop.time()
        while taken < TYPED:
            if not await mute.send(None, b"a" * CHUNK, timeout=2.0):
                break
            taken += CHUNK
        refused_after = loop.time() - start
        typed = await other.send(None, b"hello\r", timeout=2.0) and await other.flushed(2.0)
        await asyncio.sleep(0.2)  # the heartbeat's last gap
        for session in sessions:
            session.close()  # closing the stream must not block either
        await asyncio.wait_for(ports[1].done.wait(), 10)  # the other's closed at once
        await asyncio.sleep(0.2)
        beat.cancel()
        return taken, typed, mute.closed, refused_after

    future = asyncio.run_coroutine_threadsafe(go(), loop)
    try:
        taken, typed, _closed, refused_after = future.result(timeout=60)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
    print(f"taken {taken} B, refused after {refused_after:.2f} s, "
          f"longest loop gap {max(gaps):.2f} s")
    assert max(gaps) < 1.0, f"the loop stalled {max(gaps):.1f} s"
    assert taken < TYPED, "the unread guest took everything typed: no refusal"
    assert refused_after < 10
    assert typed, "the second VM's console did not take its input"


def test_console_writes_into_a_halted_guest_are_refused_and_another_vm_still_types(tmp_path):
    """The soak's reproduction, through the mount: 20 writes of 4,000 bytes to
    a halted guest's `console` (it froze every console with EIO before); then
    one write per session, each session closed before the next write: what the
    guest did not read stays in its pty, so a new session takes nothing either
    (fuzz-mount, S13: each session was allowed 4 KiB afresh, and the 4th
    session's close froze the broker in the stream's finish)."""
    import errno
    import os

    from tests.appliance_process import wait_for
    from tests.soak.world import VM_MEMORY, SoakWorld

    world = SoakWorld(tmp_path / "soak")
    try:
        world.start()
        for name in ("mute", "other"):
            world.app.create_vm(name, memory=VM_MEMORY)
            world.app.wait_state(name, "running", 120)
        refused = []
        start = time.monotonic()
        for _ in range(20):
            fd = os.open(world.mnt / "vms" / "mute" / "console", os.O_WRONLY)
            try:
                os.write(fd, b"a" * 4000)
                os.close(fd)
            except OSError as err:
                refused.append(err.errno)
                with contextlib.suppress(OSError):
                    os.close(fd)
        took = time.monotonic() - start
        fd = os.open(world.mnt / "vms" / "other" / "console", os.O_WRONLY)
        try:
            os.write(fd, b"hello\r")
        finally:
            os.close(fd)
        print(f"20 writes in {took:.1f} s; refused: {refused}")
        assert refused and set(refused) == {errno.EBUSY}, refused
        assert took < 30

        mute = world.app.api("GET", "/v1/vms/mute").json()["id"]
        log = world.app.home / "logs" / "consoles.log"

        def closes() -> int:  # the broker's sessions of `mute` closed so far
            return sum(1 for line in log.read_text().splitlines() if line.endswith(f"console of {mute} closed"))

        later = []
        for i in range(1, 5):
            wait_for(f"mute's session {i} closed (the broker froze?)", lambda: closes() >= i, 30)  # noqa: B023
            start = time.monotonic()
            fd = os.open(world.mnt / "vms" / "mute" / "console", os.O_WRONLY)
            try:
                os.write(fd, b"a" * 4000)
                os.close(fd)
                later.append("taken")
            except OSError as err:
                later.append(errno.errorcode.get(err.errno or 0, str(err.errno)))
                with contextlib.suppress(OSError):
                    os.close(fd)
            assert time.monotonic() - start < 5, later
        wait_for("mute's last session closed (the broker froze?)", lambda: closes() >= 5, 30)
        print(f"one write per session: {later}")
        assert later == ["EBUSY"] * 4, later
    finally:
        world.close()

"""A console stream's port (appliance/consoles/port.py) with libvirt doubles at
the boundary: the input credit, and a stream whose send blocks (a guest that
does not read its serial port) stalling its own console alone, never the
broker's loop nor another VM's console; closed as stuck with a reason."""
import asyncio
import threading
import time

import pytest

from appliance.consoles import broker as broker_module
from appliance.consoles import client
from appliance.consoles import port as port_module
from appliance.consoles.hosts import HostConnections
from appliance.consoles.session import Session
from appliance.errors import Conflict
from tests.unit.appliance.consoles.fake_libvirt import FakeConnection, FakeStream
from tests.unit.appliance.consoles.test_broker import Running


async def until(what, check, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        await asyncio.sleep(0.01)


def running_vm(service, store, name):
    row, _ = service.create_vm({"name": name, "state": "stopped", "graphics": "none"})
    store.update_vm(row["id"], host="local", observed_state="running", bump=False)
    return row


def test_a_console_is_sent_no_more_than_the_guest_answers_for():
    class Recorder(Session):
        woken = 0

        def writable(self):
            self.woken += 1

    async def go():
        fake = FakeStream()
        session = Recorder("vm")
        port = port_module.ConsoleStream(session, lambda uri: FakeConnection({"vm": fake}))
        assert await port.open("test:///default", "vm", False) == 1
        port.start(port_module.GuestInput())
        most = port_module.UNANSWERED_MAX
        assert port.send(b"a" * (most + 10)) == most  # no more than the bound at once
        assert port.stalled() and port.send(b"b") == 0
        await until("the chunk sent", lambda: not port.busy())
        fake.write(b"x" * 10)  # an echo of 10 bytes: 10 more may go, no more
        await until("the echo read", lambda: port.sent.unanswered == most - 10)
        assert port.send(b"c" * 100) == 10 and port.stalled()
        await until("the chunk sent", lambda: not port.busy())
        assert len(fake.sent) == most + 10 and session.woken >= 2
        port.close()
        await asyncio.wait_for(port.done.wait(), 5)
        assert fake.finished and not fake.aborted
    asyncio.run(asyncio.wait_for(go(), 30))


def test_a_stream_stuck_in_send_stalls_its_own_console_alone(config, store, service, monkeypatch):
    monkeypatch.setattr(port_module, "STUCK_TIMEOUT", 1.0)
    monkeypatch.setattr(broker_module, "CLOSING_WAIT", 0.2)
    stuck, other = running_vm(service, store, "stuck"), running_vm(service, store, "other")
    gate = threading.Event()  # the stuck guest's send and finish block until it is set
    streams = {stuck["id"]: FakeStream(gate), other["id"]: FakeStream()}
    hosts = HostConnections(store, config, open_connection=lambda uri: FakeConnection(streams))
    sock = config.console_socket
    # When the broker's loop itself blocks (the bug), this test's loop is that loop:
    # the other VM is probed from a thread, and the gate opens after 8 s at the latest.
    opener = threading.Timer(8.0, gate.set)
    opener.start()

    def probe_once_stuck() -> float:
        deadline = time.monotonic() + 5
        while not streams[stuck["id"]].senders and time.monotonic() < deadline:
            time.sleep(0.01)
        start = time.monotonic()
        client.send_input(sock, other["id"], b"hi", timeout=15.0)
        return time.monotonic() - start

    async def go():
        async with Running(config, store, hosts) as running:
            reader, writer = await client.open_console(sock, stuck["id"], write=True)
            probe = asyncio.ensure_future(asyncio.to_thread(probe_once_stuck))
            writer.write(b"x" * 100)
            took = await probe
            assert took < 2.0, f"the other VM's input took {took:.1f} s while a stream was stuck"
            assert streams[other["id"]].sent == b"hi"
            said = await asyncio.wait_for(reader.read(), 5)  # closed as stuck, with the reason
            assert b"does not take its console's input" in said, said
            first = running.broker.streams[stuck["id"]]
            with pytest.raises(client.ConsoleUnavailable, match="still closing"):
                await asyncio.to_thread(client.send_input, sock, stuck["id"], b"a", 5.0)
            assert running.broker.streams[stuck["id"]] is first  # no second stream for it
            gate.set()
            await until("the stuck stream's thread ended", lambda: stuck["id"] not in running.broker.streams)
            assert streams[stuck["id"]].aborted and not streams[stuck["id"]].finished
            writer.close()
    try:
        asyncio.run(asyncio.wait_for(go(), 30))
    finally:
        gate.set()
        opener.cancel()
    # no call on the stuck stream ran on the loop's thread (this one)
    assert threading.get_ident() not in streams[stuck["id"]].ident


def test_the_guests_memory_never_drops_a_guest_whose_stream_is_open(config, store, monkeypatch):
    """GUEST_RUNS_MAX guests' unanswered input is kept, the least recently opened
    going first; one whose stream is open (or stuck closing) is never dropped."""
    broker = broker_module.Broker(config, HostConnections(store, config))
    monkeypatch.setattr(broker_module, "GUEST_RUNS_MAX", 2)
    kept = broker._guest_input("vm-a", ("local", 1))
    kept.unanswered = 4096
    broker.streams["vm-a"] = object()  # its stream is open
    broker._guest_input("vm-b", ("local", 2))
    broker._guest_input("vm-c", ("local", 3))  # vm-b goes: vm-a is older, but open
    assert set(broker.sent) == {"vm-a", "vm-c"} and broker.sent["vm-a"][1] is kept


def test_a_console_that_cannot_open_says_why_and_leaves_no_thread(config, store, service):
    row = running_vm(service, store, "halted")  # the store says running; libvirt, not
    opened = []

    def open_connection(uri):
        opened.append(FakeConnection({row["id"]: None}))
        return opened[-1]

    async def go():
        async with Running(config, store, HostConnections(store, config, open_connection)) as running:
            with pytest.raises(Conflict, match="not running"):
                await client.open_console(config.console_socket, row["id"], write=False)
            await until("its thread ended", lambda: not running.broker.streams)
            assert running.broker.sessions == {} and opened and all(c.closed for c in opened)
    asyncio.run(asyncio.wait_for(go(), 30))

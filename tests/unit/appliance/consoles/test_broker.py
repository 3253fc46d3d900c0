"""The broker's socket and its refusals, on libvirt's test driver: a bad client
gets an error line and is closed, and the broker goes on serving."""
import asyncio
import json
import os
import socket
import stat

import pytest

from appliance.consoles import broker as broker_module
from appliance.consoles import client, protocol
from appliance.consoles.broker import Broker
from appliance.consoles.hosts import HostConnections
from appliance.errors import Conflict, NotFound


class Running:
    """A broker on the test's socket, in a thread of its own with its loop."""

    def __init__(self, config, store, hosts=None):
        self.config = config
        self.store = store
        self.hosts = hosts or HostConnections(store, config)

    async def __aenter__(self):
        self.broker = Broker(self.config, self.hosts)
        self.server = await self.broker.serve(self.broker.listen(self.config.console_socket))
        return self

    async def __aexit__(self, *exc):
        self.server.close()
        self.broker.close()

    async def exchange(self, raw: bytes) -> tuple[dict, bytes]:
        """Send raw bytes; the reply line and whatever follows until the broker closes."""
        reader, writer = await asyncio.open_unix_connection(str(self.config.console_socket))
        writer.write(raw)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), 5)
        writer.close()
        head, _, rest = data.partition(b"\n")
        return json.loads(head), rest


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


@pytest.fixture
def vm(service, store):
    """A VM of the store (stopped: the test driver runs no guest)."""
    row, _ = service.create_vm({"name": "web1", "state": "stopped"})
    return row


def test_the_socket_is_root_s_alone(config, store):
    async def go():
        async with Running(config, store):
            mode = os.stat(config.console_socket).st_mode
            assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
            assert stat.S_IMODE(os.stat(config.console_socket.parent).st_mode) == 0o700
    run(go())


@pytest.mark.parametrize("raw, status, field", [
    (b"hello\n", 400, None),
    (b'{"op": "console"}\n', 400, "vm"),
    (b'{"op": "console", "vm": "' + b"a" * 6000 + b'"}\n', 400, None),
    (b"x" * 20000, 400, None),  # no newline at all: refused when the limit is passed
    (b'{"op": "console", "vm": "00000000-0000-0000-0000-00000000beef"}\n', 404, "vm"),
])
def test_a_bad_request_gets_an_error_line_and_is_closed(config, store, raw, status, field):
    async def go():
        async with Running(config, store) as running:
            reply, rest = await running.exchange(raw)
            assert reply["ok"] is False and reply["status"] == status and rest == b""
            assert reply.get("field") == field
            # and the broker still serves
            again, _ = await running.exchange(b"{}\n")
            assert again["status"] == 400
    run(go())


def test_a_client_that_sends_nothing_is_cut_off(config, store, monkeypatch):
    monkeypatch.setattr(protocol, "HEADER_TIMEOUT", 0.2)

    async def go():
        async with Running(config, store) as running:
            reply, _ = await running.exchange(b'{"op": "cons')
            assert reply["status"] == 400 and "within" in reply["reason"]
            assert running.broker.connections == 0
    run(go())


def test_a_stopped_vm_has_no_console(config, store, vm):
    async def go():
        async with Running(config, store) as running:
            for op in ("console", "vnc", "screenshot"):
                reply, _ = await running.exchange(protocol.encode({"op": op, "vm": vm["id"]}))
                assert reply["status"] == 409 and "start it first" in reply["reason"], op
            with pytest.raises(Conflict, match="start it first"):
                await client.open_console(config.console_socket, vm["id"], write=True)
            with pytest.raises(NotFound):
                await client.open_console(config.console_socket, "00000000-0000-0000-0000-0000000000ff",
                                          write=False)
    run(go())


def test_graphics_none_has_no_vnc_nor_screenshot(config, store, service):
    row, _ = service.create_vm({"name": "text1", "state": "stopped", "graphics": "none"})

    async def go():
        async with Running(config, store) as running:
            for op in ("vnc", "screenshot"):
                reply, _ = await running.exchange(protocol.encode({"op": op, "vm": row["id"]}))
                assert reply["status"] == 409 and reply["field"] == "graphics", op
    run(go())


def test_input_must_arrive_in_time(config, store, vm, monkeypatch):
    monkeypatch.setattr(broker_module, "INPUT_TIMEOUT", 0.2)

    async def go():
        async with Running(config, store) as running:
            reply, _ = await running.exchange(
                protocol.encode({"op": "input", "vm": vm["id"], "size": 10}) + b"abc")
            assert reply["status"] == 400 and reply["field"] == "size"
    run(go())


def test_a_host_uri_no_longer_allowed_is_not_opened(config, store, vm):
    """A URI written into the store by other means than the API (which
    allow-lists it) never reaches libvirt."""
    store.upsert_host({"name": "evil", "uri": "qemu+ext:///system?command=/bin/touch", "state": "enabled",
                       "up": 1, "info": {}, "cpu_ratio": 1.0, "ram_ratio": 1.0, "disk_ratio": 1.0,
                       "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    store.update_vm(vm["id"], host="evil", bump=False)
    opened = []
    hosts = HostConnections(store, config, open_connection=opened.append)
    with pytest.raises(Exception, match="not allowed"):
        hosts.running_domain(store.get_vm_by_id(vm["id"]))
    assert opened == []


def test_the_client_says_when_the_broker_is_not_running(config):
    with pytest.raises(client.ConsoleUnavailable, match="not running"):
        client.screenshot(config.console_socket, "00000000-0000-0000-0000-0000000000ff")
    with pytest.raises(client.ConsoleUnavailable):
        client.send_input(config.console_socket, "00000000-0000-0000-0000-0000000000ff", b"x")
    with pytest.raises(client.ConsoleUnavailable):
        asyncio.run(client.open_console(config.console_socket, "00000000-0000-0000-0000-0000000000ff",
                                        write=False))
    assert client.ConsoleUnavailable("x").http_status == 503


def test_peer_uid_is_the_connecting_process_s():
    ours, theirs = socket.socketpair()
    with ours, theirs:
        assert broker_module.peer_uid(ours) == os.getuid()


def test_a_client_of_another_uid_gets_nothing(config, store, vm, monkeypatch):
    async def go():
        async with Running(config, store):
            monkeypatch.setattr(broker_module.os, "getuid", lambda: 4242)  # we are someone else now
            reader, writer = await asyncio.open_unix_connection(str(config.console_socket))
            writer.write(protocol.encode({"op": "console", "vm": vm["id"]}))
            try:
                answer = await asyncio.wait_for(reader.read(), 5)
            except ConnectionResetError:  # closed with our request unread
                answer = b""
            assert answer == b""  # closed, no answer
            writer.close()
    run(go())


def test_vnc_through_a_transport_that_cannot_pass_descriptors_is_409(config, store, vm):
    store.upsert_host({"name": "far", "uri": "qemu+ssh://root@far.example/system", "state": "enabled",
                       "up": 1, "info": {}, "cpu_ratio": 1.0, "ram_ratio": 1.0, "disk_ratio": 1.0,
                       "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    store.update_vm(vm["id"], host="far", observed_state="running", bump=False)

    async def go():
        async with Running(config, store) as running:
            reply, _ = await running.exchange(protocol.encode({"op": "vnc", "vm": vm["id"]}))
            assert reply["status"] == 409 and "qemu+ssh" in reply["reason"]
            assert running.broker.hosts._conns == {}  # no ssh was started for it
    run(go())


def test_a_host_the_heartbeat_says_is_down_is_not_connected_to(config, store, vm):
    """A connect to a dead address can hang, and would hold every console with it."""
    store.update_host("local", up=0)
    store.update_vm(vm["id"], observed_state="running", bump=False)
    opened = []
    hosts = HostConnections(store, config, open_connection=opened.append)
    with pytest.raises(client.ConsoleUnavailable, match="down"):
        hosts.running_domain(store.get_vm_by_id(vm["id"]))
    assert opened == []


def test_a_guest_s_unanswered_input_is_kept_across_its_sessions_of_one_run(config, store, monkeypatch):
    """What a guest did not read stays in its pty after a session closes: the next
    session of the same run (host, domain id) goes on from it; a new run starts at 0
    (tests/integration/test_console_unread_guest.py: the broker froze in a 4th
    session's close when each session started at 0)."""
    broker = Broker(config, HostConnections(store, config))
    first = broker._guest_input("vm-a", ("local", 7))
    first.unanswered = 4000
    assert broker._guest_input("vm-a", ("local", 7)) is first
    assert broker._guest_input("vm-b", ("local", 8)).unanswered == 0
    assert broker._guest_input("vm-a", ("local", 9)).unanswered == 0  # started again
    assert broker._guest_input("vm-a", ("h2", 9)).unanswered == 0  # migrated
    monkeypatch.setattr(broker_module, "GUEST_RUNS_MAX", 2)
    kept = broker._guest_input("vm-a", ("h2", 9))
    broker._guest_input("vm-c", ("local", 10))  # vm-b, the least recently opened, goes
    assert set(broker.sent) == {"vm-a", "vm-c"} and broker.sent["vm-a"][1] is kept


def test_what_a_guest_logs_while_no_session_is_open_answers_its_input(config, store):
    """An echo that came after its session closed is in the console log (virtlogd's):
    the next session counts it, so a guest that reads is not taken for a mute one;
    a log that shrank was rotated (the guest wrote a lot): nothing is owed."""
    broker = Broker(config, HostConnections(store, config))
    log_file = config.vm_dir("vm-a") / "console.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_bytes(b"boot\n")
    sent = broker._guest_input("vm-a", ("local", 7))
    sent.unanswered = 4096
    session = broker_module.Session("vm-a")
    broker._forget(session)  # its session closed: the log's size noted
    assert broker._guest_input("vm-a", ("local", 7)).unanswered == 4096  # it wrote nothing since
    broker._forget(session)
    log_file.write_bytes(b"boot\n" + b"x" * 1000)
    assert broker._guest_input("vm-a", ("local", 7)).unanswered == 3096
    broker._forget(session)
    log_file.write_bytes(b"")
    assert broker._guest_input("vm-a", ("local", 7)).unanswered == 0

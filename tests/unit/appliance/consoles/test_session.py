"""A console session's fan-out, with a fake serial port: every client sees the
output, only writers reach the port, a slow client is dropped alone, the end
of the stream closes everyone, and nothing stays open after the last user."""
import asyncio
import socket

from appliance.consoles import session as session_module
from appliance.consoles.session import CLIENT_QUEUE_MAX, PORT_QUEUE_MAX, Session


class FakePort:
    """Takes up to `room` bytes, then would block until `make_room`."""

    def __init__(self, session: Session, room: int = 10**9):
        self.session = session
        self.room = room
        self.received = bytearray()
        self.closed = False

    def send(self, data: bytes) -> int:
        taken = min(len(data), self.room)
        self.room -= taken
        self.received += data[:taken]
        return taken

    def stalled(self) -> bool:
        return False

    def busy(self) -> bool:
        return False  # what it takes is gone at once

    def make_room(self, room: int) -> None:
        self.room = room
        self.session.writable()

    def close(self) -> None:
        self.closed = True


class Peer:
    """One client connection: the session's writer on one end, the test's on the other."""

    @classmethod
    async def open(cls) -> "Peer":
        ours, theirs = socket.socketpair()
        peer = cls()
        _, peer.writer = await asyncio.open_unix_connection(sock=ours)
        peer.reader, peer.own_writer = await asyncio.open_unix_connection(sock=theirs)
        return peer

    async def read_until(self, text: bytes, timeout: float = 5.0) -> bytes:
        data = b""
        while text not in data:
            chunk = await asyncio.wait_for(self.reader.read(65536), timeout)
            if not chunk:
                break
            data += chunk
        return data

    async def at_eof(self, timeout: float = 5.0) -> bool:
        while True:
            if not await asyncio.wait_for(self.reader.read(65536), timeout):
                return True


def run(coro):
    return asyncio.run(asyncio.wait_for(coro, 30))


def new_session(**port_args):
    closed = []
    session = Session("vm-1", on_closed=closed.append)
    port = FakePort(session, **port_args)
    session.start(port)
    return session, port, closed


def test_every_client_sees_the_output_and_only_writers_reach_the_port():
    async def go():
        session, port, _ = new_session()
        one, two = await Peer.open(), await Peer.open()
        writer = session.attach(one.writer, write=True)
        viewer = session.attach(two.writer, write=False)
        session.output(b"login: ")
        assert await one.read_until(b"login: ") == b"login: "
        assert await two.read_until(b"login: ") == b"login: "
        await session.send(viewer, b"rm -rf /\n")
        await session.send(writer, b"root\n")
        await session.send(None, b"uname\n")  # an input request
        assert bytes(port.received) == b"root\nuname\n"
    run(go())


def test_a_slow_client_is_dropped_not_the_session():
    async def go():
        session, _, closed = new_session()
        fast, slow = await Peer.open(), await Peer.open()
        session.attach(fast.writer, write=False)
        slow_client = session.attach(slow.writer, write=False)
        received = asyncio.create_task(fast.read_until(b"END"))
        chunk = b"x" * 65536
        for _ in range(3 * CLIENT_QUEUE_MAX // len(chunk)):  # 3 MiB, more than the slow one's queue
            session.output(chunk)
            await asyncio.sleep(0.001)  # as libvirt's callbacks come, one at a time
        session.output(b"END")
        data = await received
        assert len(data) == 3 * CLIENT_QUEUE_MAX + 3
        assert slow_client not in session.clients and len(session.clients) == 1
        assert not session.closed and not closed
    run(go())


def test_the_end_of_the_stream_closes_every_client():
    async def go():
        session, port, closed = new_session()
        one, two = await Peer.open(), await Peer.open()
        session.attach(one.writer, write=True)
        session.attach(two.writer, write=False)
        session.output(b"bye\n")
        session.ended()  # the VM stopped
        assert await one.read_until(b"bye\n") == b"bye\n"  # what was queued still arrives
        assert await one.at_eof() and await two.at_eof()
        assert session.closed and port.closed and closed == [session]
    run(go())


def test_the_last_client_leaving_closes_the_port(monkeypatch):
    monkeypatch.setattr(session_module, "LINGER", 0.2)

    async def go():
        session, port, closed = new_session()
        one, two = await Peer.open(), await Peer.open()
        first = session.attach(one.writer, write=False)
        second = session.attach(two.writer, write=True)
        session.detach(first)
        assert not port.closed
        session.detach(second)  # sent nothing: closed at once
        assert port.closed and closed == [session]
    run(go())


def test_a_session_lingers_after_its_last_bytes_to_the_port(monkeypatch):
    monkeypatch.setattr(session_module, "LINGER", 0.3)

    async def go():
        session, port, closed = new_session()
        session.hold()
        await session.send(None, b"echo hi\n")
        assert await session.flushed(1.0)
        session.release()
        assert not port.closed  # libvirtd is still writing it to the serial port
        await asyncio.sleep(0.1)
        session.hold()  # another input in time keeps it open
        session.release()
        await asyncio.sleep(0.35)
        assert port.closed and closed == [session]
    run(go())


def test_writers_wait_while_the_port_is_full():
    async def go():
        session, port, _ = new_session(room=0)
        await session.send(None, b"a" * PORT_QUEUE_MAX)
        blocked = asyncio.create_task(session.send(None, b"more"))
        await asyncio.sleep(0.05)
        assert not blocked.done()  # the buffer is full: this writer waits
        assert not await session.flushed(0.05)
        port.make_room(10**9)
        await asyncio.wait_for(blocked, 1.0)
        assert await session.flushed(1.0)
        assert bytes(port.received) == b"a" * PORT_QUEUE_MAX + b"more"
    run(go())


def test_closing_wakes_a_waiting_writer():
    async def go():
        session, _, _ = new_session(room=0)
        await session.send(None, b"a" * PORT_QUEUE_MAX)
        blocked = asyncio.create_task(session.send(None, b"more"))
        await asyncio.sleep(0.05)
        session.close()
        await asyncio.wait_for(blocked, 1.0)
        assert not await session.flushed(0.1)
    run(go())


def test_a_writer_gives_up_when_the_guest_takes_nothing():
    async def go():
        session, port, _ = new_session(room=0)
        assert await session.send(None, b"a" * PORT_QUEUE_MAX)
        assert not await session.send(None, b"more", timeout=0.1)  # the port stayed full
        assert bytes(port.received) == b""
        port.make_room(10**9)
        assert await session.send(None, b"more", timeout=0.1)
        assert bytes(port.received) == b"a" * PORT_QUEUE_MAX + b"more"
    run(go())


class MutePort(FakePort):
    """A guest that does not read: stalled once it was sent `most` bytes."""

    def __init__(self, session: Session, most: int):
        super().__init__(session)
        self.most = most

    def send(self, data: bytes) -> int:
        taken = min(len(data), max(0, self.most - len(self.received)))
        self.received += data[:taken]
        return taken

    def stalled(self) -> bool:
        return len(self.received) >= self.most


def test_a_guest_that_does_not_read_gets_a_bounded_backlog_then_refusals_at_once():
    async def go():
        session = Session("vm")
        port = MutePort(session, most=100)
        session.start(port)
        assert await session.send(None, b"a" * (PORT_QUEUE_MAX + 100))  # 100 sent, the rest waits
        loop = asyncio.get_running_loop()
        start = loop.time()
        assert not await session.send(None, b"more", timeout=5.0)  # refused, not waited for
        assert not await session.flushed(5.0)
        assert loop.time() - start < 1.0
        assert len(port.received) == 100 and not session.closed
    run(go())

"""libvirt doubles for console streams, at the boundary the broker uses: a
connection, a domain and its console stream, whose send and finish can be made
to block (`gate`: what a guest that does not read its serial port does to
libvirt's calls, tests/integration/test_console_stuck_stream.py)."""
from __future__ import annotations

import threading

import libvirt


class FakeStream:
    def __init__(self, gate: threading.Event | None = None):
        self.gate = gate  # while not set, send and finish block
        self.callback = None
        self.events = 0
        self.sent = bytearray()
        self.output = bytearray()
        self.lock = threading.Lock()
        self.finished = self.aborted = False
        self.senders = 0  # threads that called send
        self.ident: set[int] = set()  # the threads that called it at all

    def _call(self) -> None:
        self.ident.add(threading.get_ident())

    def eventAddCallback(self, events, callback, opaque):
        self._call()
        self.callback, self.events = callback, events
        self._fire()

    def eventUpdateCallback(self, events):
        self.events = events
        self._fire()

    def eventRemoveCallback(self):
        self._call()
        self.callback = None

    def _fire(self) -> None:
        """As libvirt's event thread would: READABLE while output waits, if watched."""
        with self.lock:
            ready = bool(self.output) and self.events & libvirt.VIR_STREAM_EVENT_READABLE
        if ready and self.callback is not None:
            threading.Thread(target=self.callback, args=(self, libvirt.VIR_STREAM_EVENT_READABLE, None),
                             daemon=True).start()

    def write(self, data: bytes) -> None:
        """The guest prints."""
        with self.lock:
            self.output += data
        self._fire()

    def recv(self, size):
        self._call()
        with self.lock:
            if not self.output:
                return -2
            data, self.output = bytes(self.output[:size]), self.output[size:]
            return data

    def send(self, data):
        self._call()
        self.senders += 1
        if self.gate is not None:
            self.gate.wait()
        self.sent += data
        return len(data)

    def finish(self):
        self._call()
        if self.gate is not None:
            self.gate.wait()
        self.finished = True

    def abort(self):
        self._call()
        self.aborted = True


class FakeDomain:
    def __init__(self, stream: FakeStream | None, dom_id: int):
        self.stream, self.dom_id = stream, dom_id

    def isActive(self):
        return self.stream is not None  # None: defined, not running

    def ID(self):
        return self.dom_id

    def openConsole(self, dev, stream, flags):
        stream.inner = self.stream  # noqa: B010


class FakeConnection:
    """libvirt.open's double: every VM's domain, each with its FakeStream."""

    def __init__(self, streams: dict[str, FakeStream | None]):
        self.streams = streams
        self.closed = False

    def isAlive(self):
        return not self.closed

    def lookupByUUIDString(self, vm_id):
        if vm_id not in self.streams:
            raise libvirt.libvirtError("no domain")
        return FakeDomain(self.streams[vm_id], 1 + sorted(self.streams).index(vm_id))

    def newStream(self, flags):
        return _Pending(self)

    def close(self):
        self.closed = True


class _Pending:
    """A stream before openConsole: then it is the domain's FakeStream."""

    def __init__(self, conn):
        self.inner = None

    def __getattr__(self, name):
        return getattr(self.__dict__["inner"], name)

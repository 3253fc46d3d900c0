"""Console keystroke round trip: the appliance's WebSocket against `virsh console`, same guest.

    .venv/bin/python -m tests.bench.bench_console [--rounds 10] [--keystrokes 30]

One real `vmctl serve` (tests/appliance_process.Appliance), one demo guest booted
and idle at its shell prompt (console READY_LINE, then a command typed and its
answer read back). One keystroke is one character written and its echo read back
from the guest's shell (busybox ash on ttyS0 echoes what it is typed); between two
timed keystrokes a DEL is typed and its echo awaited, untimed, so that the shell's
line stays empty. Four ways to reach the same serial port:

- websocket: `/v1/vms/NAME/console` of the appliance's API (the `websockets`
  client, token header, binary frames) -> the console broker -> libvirt;
- virsh: `virsh -c URI console DOMAIN` driven through a pty (pexpect): the reference;
- broker (context): the broker's unix socket directly (appliance.consoles.client
  .open_console), i.e. the WebSocket path without the API's hop;
- libvirt (context): `virDomainOpenConsole` from Python (libvirtaio), no broker.

A libvirt console stream is exclusive per domain, so the ways are measured in
alternating blocks: in each round every way attaches, types 2 untimed keystrokes,
then KEYSTROKES timed ones, and detaches before the next way attaches (the order
rotates round by round). Attaching (open -> first echo) is timed too, as context.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

from tests.bench.common import LIBVIRT_URI, background, ms, p50, pct, ratio, remove_domains

GOAL_RATIO = 1.5
VM = "conbench"
BOOT_SECONDS = 240  # a TCG boot takes ~5-30 s, far longer when other sessions boot guests too
ECHO_TIMEOUT = 10.0
WAYS = ("websocket", "virsh", "broker", "libvirt")
KEYS = b"abcdefghijklmnopqrstuvwxyz"
DEL = b"\x7f"
DETACH = b"\x1d"  # Ctrl-], virsh console's escape


class Session:
    """An attached console: bytes from the guest are fed in; expect() waits for a token after the last one."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.seen = 0
        self.changed = asyncio.Event()
        self.closed = False

    def feed(self, data: bytes) -> None:
        self.buffer += data
        self.changed.set()

    async def expect(self, token: bytes, timeout: float = ECHO_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while True:
            found = self.buffer.find(token, self.seen)
            if found >= 0:
                self.seen = found + len(token)
                return
            if self.closed:
                raise RuntimeError(f"{type(self).__name__}: the console closed before {token!r} came back")
            self.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise RuntimeError(f"{type(self).__name__}: no echo of {token!r} in {timeout} s; "
                                   f"last bytes {bytes(self.buffer[-200:])!r}")
            try:
                await asyncio.wait_for(self.changed.wait(), left)
            except TimeoutError:
                pass

    async def write(self, data: bytes) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError


class WebSocketSession(Session):
    async def open(self, url: str, token: str) -> None:
        from websockets.asyncio.client import connect

        self.ws = await connect(url, additional_headers={"Authorization": f"Bearer {token}"})
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                self.feed(message if isinstance(message, bytes) else message.encode())
        finally:
            self.closed = True
            self.changed.set()

    async def write(self, data: bytes) -> None:
        await self.ws.send(data)

    async def close(self) -> None:
        await self.ws.close()
        await self.reader


class BrokerSession(Session):
    async def open(self, socket_path: Path, vm_id: str) -> None:
        from appliance.consoles.client import open_console

        self.stream_reader, self.writer = await open_console(socket_path, vm_id, write=True)
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            while data := await self.stream_reader.read(65536):
                self.feed(data)
        finally:
            self.closed = True
            self.changed.set()

    async def write(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def close(self) -> None:
        self.writer.close()
        await self.reader


class VirshSession(Session):
    """`virsh console` on a pty (it refuses to run without a terminal, and puts that terminal in raw mode)."""

    async def open(self, domain: str) -> None:
        import pexpect

        self.child = pexpect.spawn("virsh", ["-c", LIBVIRT_URI, "console", domain], echo=False, timeout=30)
        # Until virsh has put the pty in raw mode, what we type would be echoed by the pty itself.
        try:
            index = self.child.expect_exact(["Escape character is", pexpect.EOF])
            if index != 0:
                raise RuntimeError(f"virsh console {domain}: {self.child.before!r}")
            self.child.expect_exact("\n")  # the rest of that line
        except BaseException:
            self.child.close(force=True)  # no virsh left behind by a refused attach
            raise
        loop = asyncio.get_running_loop()
        loop.add_reader(self.child.child_fd, self._readable)

    def _readable(self) -> None:
        try:
            data = os.read(self.child.child_fd, 65536)
        except OSError:
            data = b""
        if data:
            self.feed(data)
        else:
            asyncio.get_running_loop().remove_reader(self.child.child_fd)
            self.closed = True
            self.changed.set()

    async def write(self, data: bytes) -> None:
        os.write(self.child.child_fd, data)

    async def close(self) -> None:
        if not self.closed:
            asyncio.get_running_loop().remove_reader(self.child.child_fd)
        os.write(self.child.child_fd, DETACH)
        deadline = time.monotonic() + 10
        while self.child.isalive() and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        self.child.close(force=True)


class LibvirtSession(Session):
    """virDomainOpenConsole from Python on the running loop (libvirtaio), as the broker does, minus the broker."""

    async def open(self, conn, domain: str) -> None:
        import libvirt

        self.libvirt = libvirt
        self.stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        try:
            conn.lookupByName(domain).openConsole(None, self.stream, 0)
        except libvirt.libvirtError:
            with contextlib.suppress(libvirt.libvirtError):
                self.stream.abort()
            raise
        self.stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_HANGUP
                                     | libvirt.VIR_STREAM_EVENT_ERROR, self._event, None)

    def _event(self, stream, events: int, _opaque) -> None:
        while not self.closed:
            try:
                data = stream.recv(65536)
            except self.libvirt.libvirtError:
                data = b""
            if data == -2:  # nothing more for now
                return
            if not data:
                self.closed = True
                stream.eventRemoveCallback()
            else:
                self.feed(data)
        self.changed.set()

    async def write(self, data: bytes) -> None:
        self.stream.send(data)

    async def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.stream.eventRemoveCallback()
        try:
            self.stream.finish()
        except self.libvirt.libvirtError:
            self.stream.abort()


async def keystroke(session: Session, key: bytes) -> float:
    """One character typed, its echo received: seconds. Then the DEL that erases it (untimed)."""
    started = time.perf_counter()
    await session.write(key)
    await session.expect(key)
    elapsed = time.perf_counter() - started
    await session.write(DEL)
    await session.expect(b"\x08")  # busybox's line editing moves back over the erased character
    return elapsed


def _stats(samples: list[float]) -> dict:
    return {"p50_ms": ms(p50(samples), 2), "p90_ms": ms(pct(samples, 0.9), 2), "min_ms": ms(min(samples), 2),
            "max_ms": ms(max(samples), 2), "n": len(samples)}


class Ways:
    """How each way attaches to the guest's console; an attach is retried while the
    previous way's stream is still being released (a console stream is exclusive)."""

    def __init__(self, app, vm_id: str, domain: str, conn) -> None:
        from appliance.config import Config

        self.url = app.url.replace("http", "ws", 1) + f"/v1/vms/{VM}/console"
        self.token, self.vm_id, self.domain, self.conn = app.token, vm_id, domain, conn
        self.socket_path = Config.load(app.home).console_socket
        self.retries = {way: 0 for way in WAYS}
        self.extensions: list[str] = []

    async def _open(self, way: str) -> Session:
        if way == "websocket":
            ws = WebSocketSession()
            await ws.open(self.url, self.token)
            self.extensions = [str(e.name) for e in ws.ws.protocol.extensions]
            return ws
        if way == "virsh":
            virsh = VirshSession()
            await virsh.open(self.domain)
            return virsh
        if way == "broker":
            broker = BrokerSession()
            await broker.open(self.socket_path, self.vm_id)
            return broker
        direct = LibvirtSession()
        await direct.open(self.conn, self.domain)
        return direct

    async def attach(self, way: str, key: bytes, limit: float = 15.0) -> tuple[Session, float]:
        """Attached and its first keystroke echoed: the session and the seconds that took."""
        deadline = time.monotonic() + limit
        while True:
            started = time.perf_counter()
            session = None
            try:
                session = await self._open(way)
                await keystroke(session, key)
                return session, time.perf_counter() - started
            except Exception:
                if session is not None:
                    await _quietly(session.close())
                if time.monotonic() > deadline:
                    raise
                self.retries[way] += 1
                await asyncio.sleep(0.05)


async def _quietly(awaitable) -> None:
    try:
        await asyncio.wait_for(awaitable, 10)
    except Exception:  # noqa: BLE001 - closing what already failed
        pass


async def _measure(app, vm_id: str, domain: str, rounds: int, keystrokes: int) -> dict:
    import libvirt
    import libvirtaio

    libvirtaio.virEventRegisterAsyncIOImpl(loop=asyncio.get_running_loop())
    libvirt.registerErrorHandler(lambda *_: None, None)  # "Active console session exists" is retried, not noise
    conn = libvirt.open(LIBVIRT_URI)
    ways = Ways(app, vm_id, domain, conn)
    # The guest's shell answers (through the reference, so a broken product path fails below, not here).
    session, _ = await ways.attach("virsh", b"a")
    await session.write(b"\x15echo bench-$((6*7))\r")  # ^U: an empty line first
    await session.expect(b"bench-42")
    await session.close()
    samples: dict[str, list[float]] = {way: [] for way in WAYS}
    attach: dict[str, list[float]] = {way: [] for way in WAYS}
    per_round: list[dict[str, float]] = []
    load = [round(os.getloadavg()[0], 2)]
    for r in range(rounds):
        order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]  # rotate: no way always follows the same one
        got = {}
        for way in order:
            session, seconds = await ways.attach(way, b"a")
            attach[way].append(seconds)
            try:
                await keystroke(session, b"b")  # the second untimed keystroke
                block = [await keystroke(session, KEYS[i % len(KEYS):][:1]) for i in range(keystrokes)]
            finally:
                await session.close()
            samples[way] += block
            got[way] = p50(block)
        per_round.append(got)
    load.append(round(os.getloadavg()[0], 2))
    conn.close()
    # Per-keystroke samples are not kept (1,200 numbers): the per-round p50s below show the spread.
    stats = {way: {**_stats(samples[way]), "attach_p50_ms": ms(p50(attach[way]), 1),
                   "attach_retries": ways.retries[way]} for way in WAYS}
    ws, virsh = stats["websocket"], stats["virsh"]
    paired = sorted(g["websocket"] / g["virsh"] for g in per_round)
    return {
        "rounds": rounds, "keystrokes_per_block": keystrokes,
        **stats,
        "ratio": ratio(ws["p50_ms"], virsh["p50_ms"]),
        "ratio_p90": ratio(ws["p90_ms"], virsh["p90_ms"]),
        "ratio_broker": ratio(stats["broker"]["p50_ms"], virsh["p50_ms"]),
        "ratio_libvirt": ratio(stats["libvirt"]["p50_ms"], virsh["p50_ms"]),
        "paired_ratio_median": round(p50(paired), 3),
        "paired_ratio_range": [round(paired[0], 3), round(paired[-1], 3)],
        "per_round_p50_ms": [{way: ms(v, 2) for way, v in g.items()} for g in per_round],
        "goal_ratio": GOAL_RATIO,
        "pass": ws["p50_ms"] <= GOAL_RATIO * virsh["p50_ms"],
        "websocket_extensions": ways.extensions,
        "loadavg_1min_before_after": load,
    }


def run(base: Path, rounds: int = 10, keystrokes: int = 30) -> dict:
    import libvirt

    from tests.appliance_process import READY_LINE, Appliance

    prefix = f"bk{uuid.uuid4().hex[:6]}-"
    app = Appliance(Path(base) / "console-home", prefix=prefix, extra_args=["--no-mount"])
    # libvirtaio is registered on this loop; it stays open until every libvirt connection is closed.
    loop = asyncio.new_event_loop()
    try:
        app.start()
        before = background()
        started = time.monotonic()
        vm = app.create_vm(VM, state="running")
        app.wait_console(VM, READY_LINE, BOOT_SECONDS)
        boot_s = round(time.monotonic() - started, 1)
        conn = libvirt.open(LIBVIRT_URI)
        try:
            domain = conn.lookupByUUIDString(vm["id"]).name()
        finally:
            conn.close()
        result = loop.run_until_complete(_measure(app, vm["id"], domain, rounds, keystrokes))
        result["guest"] = {"domain": domain, "vm_id": vm["id"], "create_and_boot_s": boot_s}
        result["background_before_after"] = [before, background()]
        return result
    finally:
        app.cleanup()
        remove_domains(prefix)
        loop.run_until_complete(asyncio.sleep(0.1))  # libvirtaio's callbacks freeing the closed connections' handles
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--keystrokes", type=int, default=30, help="timed keystrokes per way per round")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="vmapp-bench-console-") as tmp:
        result = run(Path(tmp), args.rounds, args.keystrokes)
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

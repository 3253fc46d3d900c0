"""Readiness and liveness probes, as KubeVirt's: a TCP connect to a forwarded
port on 127.0.0.1, a line expected on the serial console since the last boot,
or a qemu-guest-agent ping.

The prober runs in the controller; checks run in their own threads with their
timeout, so a hung guest never stalls the controller. Readiness is recorded in
the store (status.json, /metrics); a liveness probe that fails
`failure_threshold` times in a row pulls the plug, and the run strategy
decides what happens next (Always and RerunOnFailure start it again).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import logging
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from appliance.config import Config
from appliance.model import VMState
from appliance.store import Store
from appliance.virt.driver import DriverError, Guest

log = logging.getLogger(__name__)


@dataclasses.dataclass
class ProbeState:
    started: float  # when the VM was last seen starting (state_changed)
    failures: int = 0
    successes: int = 0
    next_due: float = 0.0
    in_flight: bool = False


def check_tcp(address: str, port: int, timeout: float,
              guest_accepted: Callable[[], bool] = lambda: True) -> tuple[bool, str]:
    """Connect through the forward, as a tcpSocket probe does.

    QEMU's user-mode network accepts on the host side before the guest does:
    it closes at once when the guest refuses, and holds the connection while
    its SYN to the guest is unanswered. So data or `guest_accepted()` (QEMU's
    own table of connections shows one ESTABLISHED to the guest port) decides.
    """
    deadline = time.monotonic() + timeout
    try:
        with socket.create_connection((address, port), timeout=timeout) as conn:
            while True:
                conn.settimeout(max(0.01, min(0.1, deadline - time.monotonic())))
                try:
                    data = conn.recv(1, socket.MSG_PEEK)
                except TimeoutError:
                    if guest_accepted():
                        return True, f"{address}:{port} accepted by the guest"
                    if time.monotonic() >= deadline:
                        return (
                            False,
                            f"{address}:{port}: the guest did not accept within {timeout} s",
                        )
                    continue
                if data:
                    return True, f"{address}:{port} answered"
                return False, f"{address}:{port} closed at once: nothing listens in the guest"
    except OSError as err:
        return False, f"tcp {address}:{port}: {err.strerror or err}"


def usernet_established(guest: Guest, guest_port: int) -> bool:
    """Whether QEMU's user-mode stack has a connection ESTABLISHED to guest_port."""
    table = guest.monitor_command("info usernet")
    for line in table.splitlines():
        fields = line.split()
        if len(fields) >= 6 and fields[0] == "TCP[ESTABLISHED]" and fields[5] == str(guest_port):
            return True
    return False


def check_console(path: Path, offset: int, text: str) -> tuple[bool, str]:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            seen = f.read().decode("utf-8", "replace")
    except FileNotFoundError:
        seen = ""
    if text in seen:
        return True, f"console shows {text!r}"
    return False, f"console does not show {text!r} since the last boot"


def check_agent(guest: Guest, timeout: int) -> tuple[bool, str]:
    try:
        guest.agent_command(json.dumps({"execute": "guest-ping"}), timeout)
        return True, "guest agent answered"
    except DriverError as err:
        # libvirt's message quotes the guest agent's own answer: the driver's reason is one
        # short line.
        return False, f"guest agent: {err.reason}"


class Prober:
    def __init__(
        self,
        store: Store,
        config: Config,
        lookup: Callable[[dict], Guest | None],
        on_liveness_failure: Callable[[dict, str], None],
        clock: Callable[[], float] = time.time,
    ):
        """`lookup(row)` finds a VM's domain on the host it runs on (None if unreachable)."""
        self.store = store
        self.config = config
        self.lookup = lookup
        self.on_liveness_failure = on_liveness_failure
        self.clock = clock
        self.pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="probe")
        self._states: dict[tuple[str, str], ProbeState] = {}
        self._lock = threading.Lock()
        self._running: set[str] | None = None  # VM ids running at the last tick
        self._next_sweep = 0.0

    def stop(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)

    def tick(self) -> None:
        """Start the checks that are due; forget VMs that stopped."""
        now = self.clock()
        live, running = set(), set()
        for row in self.store.vms_in_states([VMState.RUNNING]):
            running.add(row["id"])
            for kind in ("readiness_probe", "liveness_probe"):
                probe = row["spec"].get(kind)
                if not probe:
                    continue
                key = (row["id"], kind)
                live.add(key)
                with self._lock:
                    state = self._states.get(key)
                    if state is None or state.started != row["state_changed"]:
                        state = ProbeState(
                            started=row["state_changed"],
                            next_due=row["state_changed"] + probe["initial_delay_seconds"],
                        )
                        self._states[key] = state
                    if state.in_flight or now < state.next_due:
                        continue
                    state.in_flight = True
                    state.next_due = now + probe["period_seconds"]
                self.pool.submit(self._run, row, kind, probe, state)
        with self._lock:
            for key in set(self._states) - live:
                del self._states[key]
        self._clear_readiness(running, now)

    def _clear_readiness(self, running: set[str], now: float) -> None:
        """A VM that is not running is not ready; its next boot is judged afresh.
        Those that left `running` since the last tick are cleared at once; every
        row only once a minute (a result that raced a stop): that scan reads
        each row's `ready`, stored after its domain XML, and twice a second it
        was most of the idle CPU at 2,000 stopped VMs."""
        if self._running is None or now >= self._next_sweep:
            self._next_sweep = now + 60.0
            self.store.clear_ready_unless_running()
        else:
            self.store.clear_ready(self._running - running)
        self._running = running

    def _check(self, row: dict, probe: dict) -> tuple[bool, str]:
        timeout = probe["timeout_seconds"]
        if "tcp_socket" in probe:
            port = probe["tcp_socket"]["port"]
            fwd = next(f for f in row["spec"]["network"]["port_forwards"]
                       if f["guest_port"] == port and f["protocol"] == "tcp")
            dom = self.lookup(row)
            if dom is None:
                return False, "no domain"
            return check_tcp(fwd["host_address"], fwd["host_port"], timeout,
                             functools.partial(usernet_established, dom, port))
        if "console" in probe:
            return check_console(
                self.config.vm_dir(row["id"]) / "console.log",
                row.get("boot_console_offset") or 0,
                probe["console"]["contains"],
            )
        dom = self.lookup(row)
        if dom is None:
            return False, "no domain"
        return check_agent(dom, timeout)

    def _run(self, row: dict, kind: str, probe: dict, state: ProbeState) -> None:
        try:
            ok, detail = self._check(row, probe)
        except Exception as err:  # noqa: BLE001 - a probe that breaks has failed
            ok, detail = False, f"probe error: {err}"
        with self._lock:
            state.in_flight = False
            if ok:
                state.successes, state.failures = state.successes + 1, 0
            else:
                state.failures, state.successes = state.failures + 1, 0
            failures, successes = state.failures, state.successes
        fresh = self.store.get_vm_by_id(row["id"])
        if fresh is None or fresh["state_changed"] != state.started:
            return  # the VM restarted meanwhile: this result is stale
        if kind == "readiness_probe":
            ready = fresh.get("ready")
            if ok and successes >= probe["success_threshold"] and ready != 1:
                self._set_ready(fresh, True, detail)
            elif (
                not ok and (failures >= probe["failure_threshold"] or ready is None) and ready != 0
            ):
                self._set_ready(fresh, False, detail)
        elif not ok and failures >= probe["failure_threshold"]:
            with self._lock:
                state.failures = 0
                state.next_due = float("inf")  # until the VM starts again
            self.on_liveness_failure(fresh, f"liveness probe failed {failures} times: {detail}")

    def _set_ready(self, row: dict, ready: bool, detail: str) -> None:
        self.store.update_vm(row["id"], bump=False, ready=int(ready))
        self.store.add_event("ready" if ready else "not-ready", detail, row)

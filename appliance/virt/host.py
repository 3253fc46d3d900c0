"""One libvirt host: its connection, lifecycle events, and the state vocabulary.

libvirt pushes lifecycle events through its own event loop, which must be
registered before the first connection opens and then run in a thread. A
connection that closes (libvirtd restarted, host gone) is noticed through the
close callback and keepalives; the controller reconnects and resynchronises.
"""
from __future__ import annotations

import logging
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable

import defusedxml.ElementTree as DefusedET
import libvirt

log = logging.getLogger(__name__)

_event_loop_started = False
_event_loop_lock = threading.Lock()


def start_event_loop() -> None:
    global _event_loop_started
    with _event_loop_lock:
        if _event_loop_started:
            return
        libvirt.virEventRegisterDefaultImpl()
        # libvirt prints every error to stderr by default; ours are handled.
        libvirt.registerErrorHandler(lambda *_: None, None)

        def run() -> None:
            while True:
                libvirt.virEventRunDefaultImpl()

        threading.Thread(target=run, name="libvirt-events", daemon=True).start()
        _event_loop_started = True


# libvirt's domain states and their reasons as the appliance (and its metrics) name them.
STATES = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "stopping",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "pmsuspended",
}
REASONS = {
    libvirt.VIR_DOMAIN_SHUTOFF: {
        libvirt.VIR_DOMAIN_SHUTOFF_UNKNOWN: "",
        libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: "shutdown",
        libvirt.VIR_DOMAIN_SHUTOFF_DESTROYED: "destroyed",
        libvirt.VIR_DOMAIN_SHUTOFF_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_SHUTOFF_MIGRATED: "migrated",
        libvirt.VIR_DOMAIN_SHUTOFF_SAVED: "saved",
        libvirt.VIR_DOMAIN_SHUTOFF_FAILED: "failed",
        libvirt.VIR_DOMAIN_SHUTOFF_FROM_SNAPSHOT: "from-snapshot",
        libvirt.VIR_DOMAIN_SHUTOFF_DAEMON: "daemon",
    },
    libvirt.VIR_DOMAIN_PAUSED: {
        libvirt.VIR_DOMAIN_PAUSED_USER: "user",
        libvirt.VIR_DOMAIN_PAUSED_MIGRATION: "migration",
        libvirt.VIR_DOMAIN_PAUSED_SAVE: "save",
        libvirt.VIR_DOMAIN_PAUSED_DUMP: "dump",
        libvirt.VIR_DOMAIN_PAUSED_IOERROR: "io-error",
        libvirt.VIR_DOMAIN_PAUSED_WATCHDOG: "watchdog",
        libvirt.VIR_DOMAIN_PAUSED_SHUTTING_DOWN: "shutting-down",
        libvirt.VIR_DOMAIN_PAUSED_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_PAUSED_STARTING_UP: "starting-up",
        libvirt.VIR_DOMAIN_PAUSED_POSTCOPY: "postcopy",
    },
    libvirt.VIR_DOMAIN_RUNNING: {
        libvirt.VIR_DOMAIN_RUNNING_BOOTED: "booted",
        libvirt.VIR_DOMAIN_RUNNING_MIGRATED: "migrated",
        libvirt.VIR_DOMAIN_RUNNING_RESTORED: "restored",
        libvirt.VIR_DOMAIN_RUNNING_UNPAUSED: "unpaused",
        libvirt.VIR_DOMAIN_RUNNING_MIGRATION_CANCELED: "migration-canceled",
        libvirt.VIR_DOMAIN_RUNNING_WAKEUP: "wakeup",
        libvirt.VIR_DOMAIN_RUNNING_CRASHED: "crashed",
        libvirt.VIR_DOMAIN_RUNNING_POSTCOPY: "postcopy",
    },
    libvirt.VIR_DOMAIN_CRASHED: {libvirt.VIR_DOMAIN_CRASHED_PANICKED: "panicked"},
}


def describe_state(state: int, reason: int) -> tuple[str, str]:
    return STATES.get(state, "unknown"), REASONS.get(state, {}).get(reason, "")


class LibvirtHost:
    """A connection that knows when it died. `on_event(uuid, event, detail)` runs
    in libvirt's event thread: keep it short (the controller only queues)."""

    def __init__(self, name: str, uri: str, on_event: Callable[[str, int, int], None],
                 open_connection: Callable[[str], libvirt.virConnect] = libvirt.open):
        self.name = name
        self.uri = uri
        self.on_event = on_event
        self.open_connection = open_connection
        self.conn: libvirt.virConnect | None = None
        self._callbacks: list[int] = []
        self._closed = threading.Event()
        self._cpu: tuple | None = None  # (connection, CPU model) from the capabilities

    @property
    def connected(self) -> bool:
        if self.conn is None or self._closed.is_set():
            return False
        try:
            return bool(self.conn.isAlive())
        except libvirt.libvirtError:
            return False

    def connect(self) -> None:
        self.disconnect()
        self._closed.clear()
        conn = self.open_connection(self.uri)
        if self.uri.startswith("test:"):
            self.conn = conn
        else:
            try:
                conn.setKeepAlive(2, 3)
            except libvirt.libvirtError:
                pass  # local drivers without keepalive support
            conn.registerCloseCallback(lambda *_: self._closed.set(), None)
            self.conn = conn
        self._callbacks = [
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle, None
            ),
        ]

    def _lifecycle(self, _conn, dom, event, detail, _opaque) -> None:
        try:
            self.on_event(dom.UUIDString(), event, detail)
        except Exception:  # noqa: BLE001 - never let an exception into libvirt's loop
            log.exception("lifecycle callback failed")

    def disconnect(self) -> None:
        conn, self.conn = self.conn, None
        if conn is None:
            return
        for callback in self._callbacks:
            try:
                conn.domainEventDeregisterAny(callback)
            except libvirt.libvirtError:
                pass
        self._callbacks = []
        try:
            conn.unregisterCloseCallback()
        except (libvirt.libvirtError, AttributeError):
            pass
        try:
            conn.close()
        except libvirt.libvirtError:
            pass

    def lookup(self, vm_id: str) -> libvirt.virDomain | None:
        assert self.conn is not None  # noqa: S101 - narrows the type; callers hold a connection
        try:
            return self.conn.lookupByUUIDString(vm_id)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise

    def inventory(self) -> dict:
        assert self.conn is not None  # noqa: S101 - narrows the type; callers hold a connection
        arch, memory_mib, cpus, mhz, *_ = self.conn.getInfo()
        # the capabilities change only with the host
        if self._cpu is None or self._cpu[0] is not self.conn:
            self._cpu = (self.conn, *self._capabilities(self.conn))
        return {"arch": arch, "cpu_model": self._cpu[1], "guest_arches": self._cpu[2],
                "memory_mib": memory_mib, "cpus": cpus, "mhz": mhz,
                "free_memory_bytes": self.conn.getFreeMemory(), "hostname": self.conn.getHostname(),
                "libvirt_version": self.conn.getLibVersion()}

    def _capabilities(self, conn: libvirt.virConnect) -> tuple[str, list[str]]:
        """The CPU model, and the guest architectures QEMU can run here (with KVM
        or emulated), from the capabilities."""
        try:
            caps = DefusedET.fromstring(conn.getCapabilities())
        except (libvirt.libvirtError, ET.ParseError):
            return "", []
        model = caps.find("./host/cpu/model")
        vendor = caps.find("./host/cpu/vendor")
        cpu = " ".join(e.text for e in (vendor, model) if e is not None and e.text)
        arches = {name for g in caps.findall("./guest/arch") if (name := g.get("name"))}
        if self.uri.startswith("test:"):
            # libvirt's simulation driver lists only i686 but defines and "runs"
            # the appliance's x86_64 domains all the same.
            arches.add("x86_64")
        return cpu, sorted(arches)

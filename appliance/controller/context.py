"""What the controller's components share: the store, the settings, the clock,
the hosts' drivers (links) and a few in-memory sets. Components talk to each
other through the store and this object, as KubeVirt's controllers talk
through stored objects."""
from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from collections.abc import Callable

from appliance.config import Config
from appliance.errors import Failed, Unavailable
from appliance.model import OpKind
from appliance.store import Store
from appliance.virt.driver import DriverFactory, EventCallback, Guest, HostDriver

HOST_NAME = "local"  # the appliance's own libvirt (config.libvirt_uri), the first host by default
MIB = 1024 * 1024


class HostUnreachable(Unavailable):
    """The host an operation needs is not connected (it went away after the operation
    was dispatched): OperationRunner puts the operation back to pending (a 503 once
    that was done too often)."""


class HostLink:
    """One host as the controller sees it: its driver and what the controller
    remembers about it between loops."""

    def __init__(self, name: str, driver: HostDriver):
        self.name = name
        self.driver = driver
        self.was_up = False  # connected at the last look (for the host-down event)
        self.reported_down = False  # this outage has had its event
        self.next_attempt = 0.0
        self.down_since: float | None = None
        self.next_evacuation = 0.0
        self.connecting = False  # a connect is under way in the connector pool
        self.attempted = False  # a connect has finished once, up or not (not yet: unknown)
        self.added: float | None = None  # the host row's `created`: which row this link is for

    @property
    def uri(self) -> str:
        return self.driver.uri

    @property
    def connected(self) -> bool:
        return self.driver.connected

    @property
    def unknown(self) -> bool:
        """Not connected, and no connect has finished yet (just after a start): what
        the host holds is not known, unlike a host known unreachable."""
        return not self.attempted and not self.connected

    def lookup(self, vm_id: str) -> Guest | None:
        return self.driver.lookup(vm_id)


class Links:
    """The hosts the controller connects to, by name; follows the hosts table."""

    def __init__(self, make_driver: DriverFactory, on_event: Callable[[str, str, int, int], None]):
        self._make_driver = make_driver
        self._on_event = on_event
        self._links: dict[str, HostLink] = {}
        self._lock = threading.Lock()

    def sync(self, wanted: dict[str, str], added: dict[str, float | None] | None = None) -> None:
        """Connect to added hosts (name -> uri), drop removed or re-addressed ones, and
        those removed and added again since the last sync (added: name -> the row's
        `created`): a new row gets a link, and so a first connection attempt, of its own."""
        added = added or {}
        with self._lock:
            for name in list(self._links):
                link = self._links[name]
                if name not in wanted or wanted[name] != link.uri or added.get(name) != link.added:
                    self._links.pop(name).driver.disconnect()
            for name, uri in wanted.items():
                if name not in self._links:
                    driver = self._make_driver(name, uri, self._events_of(name))
                    self._links[name] = HostLink(name, driver)
                    self._links[name].added = added.get(name)

    def _events_of(self, host: str) -> EventCallback:
        """The driver's event callback for one host: the controller's, with the host named."""
        on_event = self._on_event
        return lambda vm_id, event, detail: on_event(host, vm_id, event, detail)

    def get(self, name: str | None) -> HostLink | None:
        with self._lock:
            return self._links.get(name) if name else None

    def all(self) -> list[HostLink]:
        with self._lock:
            return list(self._links.values())

    def connected(self, name: str | None) -> HostLink:
        """The host's link, which must be up."""
        link = self.get(name)
        if link is None:
            raise Failed(f"host {name!r} is not known")
        if not link.connected:
            raise HostUnreachable(f"host {name} is unreachable")
        return link

    def local(self) -> HostLink:
        """The appliance's own host (the only one before clusters)."""
        with self._lock:
            return self._links.get(HOST_NAME) or next(iter(self._links.values()))

    def disconnect_all(self) -> None:
        with self._lock:
            for link in self._links.values():
                link.driver.disconnect()


class Busy:
    """VM ids with an operation in a worker."""

    def __init__(self) -> None:
        self._ids: set[str] = set()
        self._lock = threading.Lock()

    def claim(self, vm_id: str) -> bool:
        with self._lock:
            if vm_id in self._ids:
                return False
            self._ids.add(vm_id)
            return True

    def release(self, vm_id: str) -> None:
        with self._lock:
            self._ids.discard(vm_id)

    def __contains__(self, vm_id: object) -> bool:
        with self._lock:
            return vm_id in self._ids


@dataclasses.dataclass
class Context:
    store: Store
    config: Config
    instance_id: str
    domain_type: str
    links: Links
    nudge: Callable[[], None]
    clock: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    busy: Busy = dataclasses.field(default_factory=Busy)
    migrating: set[str] = dataclasses.field(default_factory=set)  # VM ids in a live migration
    # VM id -> (failures, not before)
    backoff: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)
    # VM id -> (refusals, not before): operations refused for a job libvirt holds on the
    # domain (controller/runstrategy.py hold_back), forgotten when one succeeds
    job_held: dict[str, tuple[int, float]] = dataclasses.field(default_factory=dict)

    def has_open_ops(self, vm_id: str) -> bool:
        return self.store.has_open_operations(vm_id)

    def force_stop_waiting(self, vm_id: str) -> bool:
        return self.store.has_pending(vm_id, OpKind.FORCE_STOP)

    def op_cancelled(self, op: dict) -> bool:
        current = self.store.get_operation(op["id"])
        return current["status"] == "cancelled" or bool(current["params"].get("cancel"))

    def queue_op(self, row: dict, kind: str, why: str) -> None:
        """An operation the controller itself asks for (converging), with its reason as an event."""
        with self.store.transaction():
            op = self.store.add_operation(str(uuid.uuid4()), row, kind, {"by": "controller"})
            self.store.add_event("converging", why, row, op["id"])

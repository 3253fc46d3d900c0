"""No host overbooked by a start and a force-stop that race (issue 17, the soak's
concurrent part: 5 × 8 GiB claimed on a host with 36,158 MiB).

A start already running when a force-stop arrived was not superseded (only pending
ones are): the force-stop's desired state released the VM's claim, other starts were
admitted into its room, and then the VM booted anyway and was observed running. Here
three VMs fit the one enabled host; a start is caught at its boot point (libvirt's
create, or the start handler before it) while a force-stop and other starts arrive,
and the host's claims and what actually runs there are checked at every step."""
from __future__ import annotations

import pytest
from tests.unit.appliance.controller.controller_harness import settle

from appliance import placement
from appliance.controller.lifecycle import Lifecycle
from appliance.errors import Conflict
from appliance.virt.fake import FakeGuest

FITS = 3  # VMs of the size below that the local host holds


def capacity(store, clock) -> float:
    (local,) = [h for h in placement.host_states(store, clock(), 3600) if h.name == "local"]
    return local.memory_mib * local.ram_ratio - local.reserved_memory_mib


def overbooked(store, cloud, clock, memory: int) -> list[str]:
    """Hosts whose claims (what the scheduler reads), or whose running guests, exceed
    their RAM times its ratio (the soak's check, plus libvirt's side), and hosts whose
    running guests exceed their claims (the room the scheduler would give away)."""
    found = []
    for h in placement.host_states(store, clock(), 3600):
        room = h.memory_mib * h.ram_ratio - h.reserved_memory_mib
        if h.allocated_memory_mib > room:
            found.append(f"{h.name}: {h.allocated_memory_mib} MiB claimed of {room:.0f}")
        uri = store.get_host(h.name)["uri"]
        running = sum(1 for vm in store.list_vms() if uri in cloud.where(vm["id"]))
        if running * memory > room:
            found.append(f"{h.name}: {running} guests of {memory} MiB running in {room:.0f}")
        if running * memory > h.allocated_memory_mib:
            found.append(f"{h.name}: {running} guests of {memory} MiB running, "
                         f"{h.allocated_memory_mib} MiB claimed")
    return found


@pytest.fixture
def full(service, controller, store, cloud, clock):
    """One enabled host (b disabled: starts race for local's room), six stopped VMs of
    a third of its room each, two of them running: one slot left."""
    service.set_host_state("b", "disabled")
    memory = int(capacity(store, clock) // FITS) // 256 * 256
    assert (FITS + 1) * memory > capacity(store, clock)
    for i in range(6):
        service.create_vm({"name": f"v{i}", "memory": memory, "state": "stopped"})
    settle(controller, clock)
    for name in ("v0", "v1"):
        service.set_state(name, "running")
    settle(controller, clock)
    assert [store.get_vm(n)["observed_state"] for n in ("v0", "v1")] == ["running"] * 2
    return memory


class Watch:
    """Each call looks for an overbooked host (overbooked()); what it found is kept in seen."""

    def __init__(self, store, cloud, clock, memory: int) -> None:
        self.store, self.cloud, self.clock, self.memory = store, cloud, clock, memory
        self.seen: list[str] = []

    def __call__(self) -> None:
        self.seen.extend(overbooked(self.store, self.cloud, self.clock, self.memory))


@pytest.fixture
def checks(store, cloud, clock, full) -> Watch:
    return Watch(store, cloud, clock, full)


def start_others(service, checks) -> list[str]:
    """v3 and v4 asked to start; the names admitted (a 409 when no room)."""
    admitted = []
    for name in ("v3", "v4"):
        try:
            service.set_state(name, "running")
            admitted.append(name)
        except Conflict:
            pass
        checks()
    return admitted


def v2_stopped_then_v3_fits(service, controller, store, cloud, clock, checks, v2: dict) -> None:
    """v2 was seen stopped and its room freed: v3 now starts there, nothing overbooked."""
    assert store.get_vm("v2")["observed_state"] == "stopped"
    assert cloud.where(v2["id"]) == []
    service.set_state("v3", "running")
    settle(controller, clock)
    checks()
    assert checks.seen == []
    assert store.get_vm("v3")["observed_state"] == "running"
    assert store.claims_drift() == {}


def test_a_force_stop_at_the_boot_point_keeps_the_claim_until_the_vm_is_seen_stopped(
        service, controller, store, cloud, clock, checks, monkeypatch):
    seen = checks.seen
    v2 = store.get_vm("v2")
    original, admitted = FakeGuest.start, []

    def start_raced(guest: FakeGuest) -> None:
        if guest.uuid == v2["id"] and not admitted:  # v2's virDomainCreate, once
            service.set_state("v2", "force-stop")
            checks()
            admitted.extend(start_others(service, checks) or ["none"])
        original(guest)
        checks()

    monkeypatch.setattr(FakeGuest, "start", start_raced)
    service.set_state("v2", "running")  # admitted: the last slot
    checks()
    for _ in range(4):
        settle(controller, clock, passes=1)
        checks()
    assert seen == []
    assert admitted == ["none"]  # v2 still held its slot: no room for v3 or v4
    # the force-stop ran after the start: v2 stopped, and its room is free again
    v2_stopped_then_v3_fits(service, controller, store, cloud, clock, checks, v2)


def test_a_start_no_longer_wanted_at_the_boot_point_does_not_boot(
        service, controller, store, cloud, clock, checks, monkeypatch):
    seen = checks.seen
    v2 = store.get_vm("v2")
    original, admitted = Lifecycle._lookup, []

    def lookup_raced(self: Lifecycle, row: dict):
        guest = original(self, row)
        if row["id"] == v2["id"] and not admitted:  # v2's start handler, before its boot
            service.set_state("v2", "force-stop")
            checks()
            admitted.extend(start_others(service, checks) or ["none"])
        return guest

    monkeypatch.setattr(Lifecycle, "_lookup", lookup_raced)
    service.set_state("v2", "running")
    for _ in range(4):
        settle(controller, clock, passes=1)
        checks()
    assert seen == []
    assert admitted == ["v3"]  # v2's slot was free: its start had not booted it
    host = cloud.host(store.get_host("local")["uri"])
    assert f"start {v2['id']}" not in host.calls  # never booted, not booted and destroyed
    assert store.get_vm("v2")["observed_state"] == "stopped"
    assert store.get_vm("v3")["observed_state"] == "running"
    assert store.claims_drift() == {}


def test_a_start_asked_again_while_its_boot_runs_is_not_refused_for_the_room_it_holds(
        service, controller, store, cloud, clock, checks, monkeypatch):
    seen = checks.seen
    v2 = store.get_vm("v2")
    original, asked = FakeGuest.start, []

    def start_raced(guest: FakeGuest) -> None:
        if guest.uuid == v2["id"] and not asked:  # force-stop, then running again, at the create
            service.set_state("v2", "force-stop")
            asked.append(service.set_state("v2", "running"))  # no 409: its own slot is still its
            checks()
        original(guest)

    monkeypatch.setattr(FakeGuest, "start", start_raced)
    service.set_state("v2", "running")
    for _ in range(4):
        settle(controller, clock, passes=1)
        checks()
    assert asked and asked[0] is not None
    assert seen == []
    vm = store.get_vm("v2")
    assert (vm["observed_state"], vm["desired_state"], vm["host"]) == ("running", "running", "local")
    assert store.claims_drift() == {}


def test_a_start_requeued_after_its_boot_broke_and_then_superseded_keeps_the_claim(
        service, controller, store, cloud, clock, checks, monkeypatch):
    """A double fault: the connection to the host broke as libvirt started v2 (the guest
    runs, the start is requeued: the host answers again at once), then a force-stop
    superseded the pending start. Its booting mark ended with it while the guest ran:
    the room was given to v3. Now v2 is recorded starting until it is seen."""
    from appliance.controller.operations import OperationRunner
    from appliance.virt.driver import DriverError

    seen = checks.seen
    v2 = store.get_vm("v2")
    host = cloud.host(store.get_host("local")["uri"])
    original_start, original_requeue, broke = FakeGuest.start, OperationRunner._requeue_if_host_lost, []

    def start_broken(guest: FakeGuest) -> None:
        original_start(guest)
        if guest.uuid == v2["id"] and not broke:  # the create went through; the answer is lost
            broke.append(True)
            host.up = False
            raise DriverError("End of file while reading data: Input/output error")

    def requeue_then_back(self, op: dict, err: Exception) -> bool:
        requeued = original_requeue(self, op, err)
        host.up = True  # libvirtd back within the second: no heartbeat saw it down
        return requeued

    monkeypatch.setattr(FakeGuest, "start", start_broken)
    monkeypatch.setattr(OperationRunner, "_requeue_if_host_lost", requeue_then_back)
    start = service.set_state("v2", "running")
    settle(controller, clock, passes=1)
    assert broke and store.get_operation(start["id"])["status"] == "pending"
    assert cloud.where(v2["id"]) == [host.uri]
    service.set_state("v2", "force-stop")  # supersedes the requeued start
    assert store.get_operation(start["id"])["status"] == "cancelled"
    checks()
    admitted = start_others(service, checks)
    for _ in range(4):
        settle(controller, clock, passes=1)
        checks()
    assert seen == []
    assert admitted == []  # v2's guest held the room until it was seen and stopped
    assert [e for e in store.list_events(v2["id"]) if e["kind"] == "boot-unconfirmed"]
    v2_stopped_then_v3_fits(service, controller, store, cloud, clock, checks, v2)


def test_a_memory_revert_no_longer_wanted_running_does_not_start_the_vm(
        service, controller, store, cloud, clock, checks):
    """A revert to a snapshot with memory starts a stopped VM (libvirt's revert to a
    running snapshot). Admitted with the room it claims; a force-stop before it ran
    gave that room to v3. The revert now goes through the boot check: refused (409,
    nothing reverted), where it used to start v0 beside v3 (4 guests in room for 3)."""
    seen = checks.seen
    v0 = store.get_vm("v0")
    service.create_snapshot("v0", {"name": "m", "memory": True})
    settle(controller, clock)
    service.set_state("v0", "force-stop")
    settle(controller, clock)
    service.set_state("v2", "running")  # v1, v2 run: one slot left
    settle(controller, clock)
    checks()
    revert = service.revert_snapshot("v0", "m")  # admitted: the last slot
    service.set_state("v0", "force-stop")  # before the revert ran: the slot is free again
    admitted = start_others(service, checks)
    assert admitted == ["v3"]
    for _ in range(4):
        settle(controller, clock, passes=1)
        checks()
    assert seen == []
    done = store.get_operation(revert["id"])
    assert done["status"] == "failed" and "not reverted" in done["error"]
    assert done["error_field"] == "snapshot"  # a 409 to whoever waits on it
    host = cloud.host(store.get_host("local")["uri"])
    assert "snapshot-revert m" not in " ".join(host.calls)
    assert store.get_vm("v0")["observed_state"] == "stopped"
    assert store.get_vm("v3")["observed_state"] == "running"
    assert store.claims_drift() == {}

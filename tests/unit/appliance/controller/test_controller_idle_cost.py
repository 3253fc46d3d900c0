"""What the controller costs when nothing happens: a resync is one listing per
host and a fixed number of store queries whatever the number of VMs, and the
heartbeat keeps a host's record fresh however long a loop pass takes."""
from __future__ import annotations

import threading
import time

from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle

from appliance.controller import Controller


def stopped_vms(service, controller, clock, count: int, first: int = 0) -> None:
    for i in range(first, first + count):
        service.create_vm({"name": f"idle{i:03d}", "state": "stopped"})
    settle(controller, clock, passes=2)


def statements_in_one_resync(store, controller) -> list[str]:
    """The SQL the controller's thread runs during one resync (the test's thread here)."""
    seen: list[str] = []
    conn = store.db.conn
    conn.set_trace_callback(seen.append)
    try:
        controller.resync()
    finally:
        conn.set_trace_callback(None)
    return seen


def test_a_resync_costs_the_same_store_queries_for_10_or_40_stopped_vms(service, controller, cloud, clock):
    stopped_vms(service, controller, clock, 10)
    with_10 = statements_in_one_resync(service.store, controller)
    stopped_vms(service, controller, clock, 30, first=10)
    assert sum(1 for r in service.store.list_vms(with_xml=False) if r["observed_state"] == "stopped") == 40
    with_40 = statements_in_one_resync(service.store, controller)
    assert len(with_40) == len(with_10) <= 4, with_40
    assert not [s for s in with_40 if s.lstrip().upper().startswith(("UPDATE", "INSERT", "DELETE"))]


def test_a_resync_lists_each_host_once(service, controller, cloud, clock):
    stopped_vms(service, controller, clock, 5)
    for uri in (URI_A, URI_B):
        cloud.host(uri).calls.clear()
    controller.resync()
    assert cloud.host(URI_A).calls + cloud.host(URI_B).calls == ["list", "list"]


def test_a_vm_that_changed_is_still_observed_and_converged(service, controller, cloud, clock):
    """The fixed cost must not skip work: a guest that stopped behind the
    controller's back is recorded and, under Always, started again."""
    vm, _op = service.create_vm({"name": "web1", "run_strategy": "Always"})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    with cloud.lock:
        dom = next(h.domains[row["id"]] for h in cloud.hosts.values() if row["id"] in h.domains)
        dom.state, dom.reason = "stopped", "crashed"
    controller.resync()
    assert service.store.get_vm_by_id(row["id"])["observed_state"] == "stopped"
    assert [o["kind"] for o in service.list_operations(vm="web1") if o["status"] == "pending"] == ["start"]


def last_seen(store, name: str) -> float | None:
    return store.get_host(name)["last_seen"]


def test_a_long_loop_pass_does_not_let_the_heartbeat_go_stale(store, config, cloud):
    """A resync held up (thousands of VMs, a burst of creates) while the
    heartbeat thread keeps stamping both hosts: before it had a thread of its
    own, the heartbeat waited for the pass and a live host read as down."""
    in_resync, release = threading.Event(), threading.Event()
    controller = Controller(store, config, "unit-instance", "qemu", drivers=cloud.drivers(),
                            heartbeat_seconds=0.05)
    store.upsert_host({"name": "b", "uri": URI_B, "state": "enabled", "up": 0, "last_seen": None, "info": {},
                       "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0, "reserved_memory_mib": 0,
                       "labels": {}, "storage": "san1", "created": time.time()})
    real_resync = controller.vms.resync

    def slow_resync() -> None:
        in_resync.set()
        release.wait(10)
        real_resync()

    controller.vms.resync = slow_resync  # type: ignore[method-assign]
    controller.start()
    try:
        assert in_resync.wait(10), "the loop never reached its resync"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not all(store.get_host(n)["up"] for n in ("local", "b")):
            time.sleep(0.02)
        first = {n: last_seen(store, n) for n in ("local", "b")}
        time.sleep(0.5)  # ten heartbeat periods, the loop still inside the same pass
        assert not release.is_set()
        for name in ("local", "b"):
            host = store.get_host(name)
            assert host["up"] and first[name] is not None and host["last_seen"] > first[name], host
            assert time.time() - host["last_seen"] < 0.5, host
    finally:
        release.set()
        controller.stop()


def test_a_migration_ending_between_the_listing_and_the_rows_is_not_undefined(service, controller, cloud,
                                                                              clock):
    """A resync lists each host, then reads the rows. A migration that ends in
    between (seen over ssh, where a listing takes long) leaves a row on the target
    whose listing predates the domain: the VM is asked for again there rather than
    recorded as stopped (undefined), which the run strategy would act on."""
    vm, _op = service.create_vm({"name": "web1", "host": "local"})
    settle(controller, clock, passes=2)
    vm_id = vm["id"]
    assert service.store.get_vm_by_id(vm_id)["observed_state"] == "running"
    target = controller.ctx.links.get("b").driver
    real_list = target.list_ours

    def list_then_migration_ends(instance_id):
        listing = real_list(instance_id)  # without web1
        with cloud.lock:
            cloud.host(URI_B).domains[vm_id] = cloud.host(URI_A).domains.pop(vm_id)
        service.store.update_vm(vm_id, bump=False, host="b")
        return listing

    target.list_ours = list_then_migration_ends
    controller.resync()
    target.list_ours = real_list
    row = service.store.get_vm_by_id(vm_id)
    assert (row["host"], row["observed_state"]) == ("b", "running"), row

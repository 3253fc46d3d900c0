"""The bridge from the store to the scheduler: host states, claims, the guest architecture."""
from __future__ import annotations

import time

from appliance import placement
from tests.unit.conftest import TEST_HOST_INFO


def add_host(store, name, **info):
    store.upsert_host({"name": name, "uri": f"qemu+ssh://{name}/system", "state": "enabled", "up": 1,
                       "last_seen": time.time(), "info": {**TEST_HOST_INFO, **info}, "cpu_ratio": 16.0,
                       "ram_ratio": 1.5, "disk_ratio": 1.0, "reserved_memory_mib": 0, "labels": {},
                       "storage": "shared"})


def test_a_host_whose_qemu_cannot_run_x86_64_guests_is_rejected_by_arch(service, config):
    add_host(service.store, "arm1", arch="aarch64", guest_arches=["aarch64", "armv7l"])
    add_host(service.store, "emu1", arch="aarch64", guest_arches=["aarch64", "x86_64"])  # emulated (TCG)
    spec = service.get_vm(service.create_vm({"name": "a1", "state": "stopped"})[0]["name"])["spec"]
    decision = placement.place(service.store, config, spec, None, time.time(), only_hosts=frozenset(["arm1", "emu1"]))
    assert decision.host == "emu1"
    (rejection,) = [r for r in decision.rejected if r.host == "arm1"]
    assert rejection.filter == "ArchFilter" and "aarch64" in rejection.reason and "x86_64" in rejection.reason


def test_claims_count_placed_vms_and_moves_under_way(service):
    vm, op = service.create_vm({"name": "c1", "state": "stopped", "cpus": 2, "memory": 256})
    # What the controller records once the VM is defined (none runs here).
    service.store.update_operation(op["id"], status="succeeded")
    service.store.update_vm(vm["id"], bump=False, observed_state="stopped")
    add_host(service.store, "h2")
    assert placement.allocations(service.store)["local"][:2] == [2, 256]
    service.migrate_vm("c1", "h2")  # a pending move claims the target too
    used = placement.allocations(service.store)
    assert used["local"][:2] == [2, 256] and used["h2"][:2] == [2, 256]

"""The bridge from the store to the scheduler: host states, claims, the guest architecture."""
from __future__ import annotations

import time

import pytest

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
    # A stopped VM claims its disks only (its vCPUs and memory at start): the
    # move counts it so at both ends. Before issue 10 it claimed [2, 256] too.
    vm, op = service.create_vm({"name": "c1", "state": "stopped", "cpus": 2, "memory": 256})
    # What the controller records once the VM is defined (none runs here).
    service.store.update_operation(op["id"], status="succeeded")
    service.store.update_vm(vm["id"], bump=False, observed_state="stopped")
    add_host(service.store, "h2")
    disk = placement.allocations(service.store)["local"][2]
    assert placement.allocations(service.store)["local"] == [0, 0, disk] and disk > 0
    service.migrate_vm("c1", "h2")  # a pending move claims the target too
    used = placement.allocations(service.store)
    assert used["local"] == [0, 0, disk] and used["h2"] == [0, 0, disk]


def test_running_and_reserved_vms_claim_cpu_and_memory_and_moves_count_them_at_the_target(service):
    vm, op = service.create_vm({"name": "r1", "state": "running", "cpus": 2, "memory": 256})
    service.create_vm({"name": "k1", "state": "stopped", "cpus": 1, "memory": 64, "reserve_when_stopped": True})
    service.store.update_operation(op["id"], status="succeeded")
    service.store.update_vm(vm["id"], bump=False, observed_state="running")
    add_host(service.store, "h2")
    assert placement.allocations(service.store)["local"][:2] == [3, 320]
    service.migrate_vm("r1", "h2")  # a live migration claims both ends until it is done
    used = placement.allocations(service.store)
    assert used["local"][:2] == [3, 320] and used["h2"][:2] == [2, 256]


@pytest.mark.parametrize("desired, observed, reserve, claims", [
    ("running", "provisioning", False, True),
    ("paused", "paused", False, True),
    ("stopped", "running", False, True),  # still stopping: it holds them until it is off
    ("stopped", "migrating", False, True),
    ("stopped", "stopped", False, False),
    ("stopped", "crashed", False, False),
    ("deleted", "stopped", False, False),
    ("stopped", "stopped", True, True),
])
def test_claims_cpu_ram_in_python_is_the_sql_rule(service, desired, observed, reserve, claims):
    vm, _ = service.create_vm({"name": "s1", "state": "stopped", "cpus": 3, "memory": 96,
                               "reserve_when_stopped": reserve})
    service.store.update_vm(vm["id"], bump=False, desired_state=desired, observed_state=observed)
    row = service.store.get_vm("s1")
    assert placement.claims_cpu_ram(row) is claims
    assert placement.allocations(service.store)["local"][:2] == ([3, 96] if claims else [0, 0])

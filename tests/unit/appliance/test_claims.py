"""Claims of stopped VMs (issue 10): a stopped VM keeps its host and its disks,
and claims its vCPUs and memory when it starts (KubeVirt's, Incus's rule);
`reserve_when_stopped: true` keeps Nova's rule (claimed while stopped too).

As in test_cluster_api, no controller runs: a host is up once its heartbeat
and inventory are in the store, and operations stay pending; the tests check
what the service recorded and answered, through the REST API.
"""
from __future__ import annotations

import concurrent.futures
import threading

import pytest
from falcon import testing

from appliance import placement
from appliance.api.app import create_app
from appliance.errors import Conflict
from tests.unit.appliance.api.test_cluster_api import AUTH, NO_WAIT, TEXT, TOKEN, add_host, create_vm, settle

# The test driver's host has 16 CPUs and 3072 MiB: at a CPU ratio of 2, room for
# 32 running 1-vCPU VMs (its memory, 4608 MiB after overcommit, for 36 of 128 MiB).
ROOM = 32


@pytest.fixture
def client(service):
    return testing.TestClient(create_app(service, TOKEN), headers=AUTH)


def room_for(client, host: str, vcpus: int) -> None:
    resp = client.simulate_patch(f"/v1/hosts/{host}", json={"cpu_ratio": vcpus / 16})
    assert resp.status_code == 200, resp.text


def start(client, name: str):
    return client.simulate_put(f"/v1/vms/{name}/state", body="running", headers=TEXT, params=NO_WAIT)


def allocated(client, host: str) -> dict:
    return client.simulate_get(f"/v1/hosts/{host}").json["allocated"]


def test_forty_stopped_vms_fit_where_thirty_two_run_and_the_33rd_start_is_refused(client, store):
    room_for(client, "local", ROOM)
    for i in range(40):
        create_vm(client, f"vm{i:02}")  # stopped: before, the 33rd was refused here (CoreFilter)
    assert allocated(client, "local") == {**allocated(client, "local"), "cpus": 0, "memory_mib": 0, "vms": 40}
    assert allocated(client, "local")["disk_gib"] > 0  # the disks stay claimed
    for i in range(ROOM):
        assert start(client, f"vm{i:02}").status_code == 202
    assert allocated(client, "local")["cpus"] == ROOM
    resp = start(client, f"vm{ROOM}")
    assert resp.status_code == 409, resp.text
    assert resp.json["field"] == "host"
    assert "no host fits vm32: local by CoreFilter (needs 1 vCPUs, 0 free of 32" in resp.json["reason"]
    vm = client.simulate_get(f"/v1/vms/vm{ROOM}").json
    assert vm["desired_state"] == "stopped" and vm["host"] == "local"  # refused: nothing changed
    # A stop gives the claim back; the start then fits.
    settle(store, "vm00", "running")
    assert client.simulate_put("/v1/vms/vm00/state", body="stopped", headers=TEXT, params=NO_WAIT).status_code == 202
    settle(store, "vm00", "stopped")
    assert allocated(client, "local")["cpus"] == ROOM - 1
    assert start(client, f"vm{ROOM}").status_code == 202


def test_a_start_with_no_room_on_its_host_is_placed_on_a_host_that_fits(client, store, service):
    room_for(client, "local", 2)
    add_host(client, store, "h2")  # the same shared storage: it sees the VM's disks
    for name in ("a", "b", "c"):
        create_vm(client, name, host="local")
    assert start(client, "a").status_code == 202 and start(client, "b").status_code == 202
    resp = start(client, "c")
    assert resp.status_code == 202, resp.text
    vm = client.simulate_get("/v1/vms/c").json
    assert vm["host"] == "h2" and vm["desired_state"] == "running"
    assert (allocated(client, "local")["cpus"], allocated(client, "h2")["cpus"]) == (2, 1)
    (op,) = [o for o in service.list_operations(vm="c") if o["kind"] == "start"]
    assert op["params"] == {"from_host": "local"}
    (why,) = [e["message"] for e in service.list_events(vm="c") if e["kind"] == "scheduled"][1:]
    assert why.startswith("no room on host local to start it; placed c on h2")


def test_a_start_pinned_by_its_constraints_is_refused_with_every_hosts_reason(client, store):
    room_for(client, "local", 2)
    resp = client.simulate_patch("/v1/hosts/local", json={"labels": {"zone": "a"}})
    assert resp.status_code == 200, resp.text
    add_host(client, store, "h2", labels={"zone": "b"})  # does not match the selector
    add_host(client, store, "h3", storage="nfs1", labels={"zone": "a"})  # does not see the disks
    for name in ("a", "b", "c"):
        create_vm(client, name, host="local", node_selector={"zone": "a"})
    assert start(client, "a").status_code == 202 and start(client, "b").status_code == 202
    resp = start(client, "c")
    assert resp.status_code == 409, resp.text
    reason = resp.json["reason"]
    assert reason.startswith("no host fits c: ")
    assert "local by CoreFilter (needs 1 vCPUs, 0 free of 2" in reason
    assert "h2 by LabelsFilter" in reason and "h3 by StorageFilter" in reason
    assert client.simulate_get("/v1/vms/c").json["host"] == "local"


def test_reserve_when_stopped_keeps_the_claim(client):
    room_for(client, "local", 4)
    create_vm(client, "kept", cpus=2, memory=256, reserve_when_stopped=True)
    assert (allocated(client, "local")["cpus"], allocated(client, "local")["memory_mib"]) == (2, 256)
    assert client.simulate_get("/v1/vms/kept").json["spec"]["reserve_when_stopped"] is True
    create_vm(client, "also", cpus=2, reserve_when_stopped=True)
    resp = client.simulate_post("/v1/vms", json={"name": "third", "state": "stopped", "cpus": 2,
                                                 "reserve_when_stopped": True}, params=NO_WAIT)
    assert resp.status_code == 409 and "local by CoreFilter" in resp.json["reason"]
    create_vm(client, "plain", cpus=2)  # without the reservation it fits (stopped)...
    assert start(client, "plain").status_code == 409  # ...but cannot start
    assert start(client, "kept").status_code == 202  # its claim is held: the start needs nothing more
    # Asking for the reservation later is a claim too: refused when it does not fit.
    resp = client.simulate_patch("/v1/vms/plain", json={"reserve_when_stopped": True}, params=NO_WAIT)
    assert resp.status_code == 409 and resp.json["field"] == "cpus"
    resp = client.simulate_patch("/v1/vms/plain", json={"reserve_when_stopped": "yes"}, params=NO_WAIT)
    assert resp.status_code == 422 and resp.json["field"] == "reserve_when_stopped"


def test_concurrent_starts_take_exactly_the_free_slots(client, service):
    room, tries = 4, 12
    room_for(client, "local", room * 2)
    for i in range(tries):
        create_vm(client, f"vm{i:02}", cpus=2)
    barrier = threading.Barrier(tries)

    def start_one(name: str) -> bool:
        barrier.wait()  # every start reads the claims at once (each thread has its own connection)
        try:
            service.set_state(name, "running")
            return True
        except Conflict:
            return False

    with concurrent.futures.ThreadPoolExecutor(tries) as pool:
        started = list(pool.map(start_one, [f"vm{i:02}" for i in range(tries)]))
    assert started.count(True) == room
    assert placement.allocations(service.store)["local"][0] == room * 2
    assert sum(vm["desired_state"] == "running" for vm in service.list_vms()) == room

"""Concurrent clients (issue 17): 50 clients on shared VMs for a while, over HTTP.

The soak's `vmctl serve` (world.py: real QEMU domains that never boot) with 10 shared
VMs of 8 GiB each, so that the local host (its RAM times its ram_ratio) holds only a
few of them running: starts race for the room. 50 threads, for `seconds`, each in a
loop on a random VM: GET /v1/vms/NAME (60 %, timed), an increment of the VM's label
`counter` by read-modify-write with If-Match (25 %: GET, then PATCH with the ETag; a 412
is a conflict lost, tried again later), or a start or force-stop (15 %; 409 when there is
no room). Checked: no lost update (each VM's counter is the number of increments
acknowledged), no overbooked host (sampled every second from the store: what the VMs
claim within the host's CPUs and RAM times their ratios), no 5xx; and the p50/p99 of
GET /v1/vms/NAME.
"""
from __future__ import annotations

import random
import threading
import time
from collections import Counter

import requests

from tests.bench.common import pct
from tests.soak.world import SoakWorld

VMS = 10
VM_MEMORY_BIG = "8G"


def _counter(vm: dict) -> int:
    return int((vm.get("spec", {}).get("labels") or {}).get("counter", "0"))


def overbooked(world: SoakWorld) -> list[str]:
    from appliance import placement
    from appliance.store import Store

    store = Store(world.app.home / "appliance.db")
    try:
        found = []
        for h in placement.host_states(store, time.time(), 3600):
            ram = h.memory_mib * h.ram_ratio - h.reserved_memory_mib
            if h.allocated_memory_mib > ram or h.allocated_cpus > h.cpus * h.cpu_ratio:
                found.append(f"{h.name}: {h.allocated_memory_mib} MiB of {ram:.0f}, "
                             f"{h.allocated_cpus} vCPUs of {h.cpus * h.cpu_ratio:.0f}")
        return found
    finally:
        store.close()


def run_concurrent(world: SoakWorld, seconds: float, clients: int = 50, seed: int = 17) -> dict:
    world.delete_all_vms()
    app = world.app
    names = [f"cc-{i}" for i in range(VMS)]
    for name in names:
        app.api("POST", "/v1/vms", json={"name": name, "memory": VM_MEMORY_BIG, "state": "stopped",
                                         "labels": {"counter": "0"}}).raise_for_status()
    acked: Counter = Counter()
    unknown: Counter = Counter()  # increments whose answer never came
    statuses: Counter = Counter()
    get_times: list[float] = []
    errors: list[str] = []
    overbook: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client(cid: int) -> None:
        rng = random.Random(seed * 1000 + cid)
        http = requests.Session()
        http.headers["Authorization"] = f"Bearer {app.token}"
        while not stop.is_set():
            name = rng.choice(names)
            url = f"{app.url}/v1/vms/{name}"
            roll = rng.random()
            try:
                if roll < 0.6:
                    t0 = time.perf_counter()
                    resp = http.get(url, timeout=180)
                    took = time.perf_counter() - t0
                    with lock:
                        get_times.append(took)
                elif roll < 0.85:
                    vm = http.get(url, timeout=180)
                    labels = dict(vm.json()["spec"].get("labels") or {})
                    labels["counter"] = str(int(labels.get("counter", "0")) + 1)
                    try:
                        resp = http.patch(url, json={"labels": labels}, timeout=180,
                                          headers={"If-Match": vm.headers["ETag"]})
                    except requests.RequestException:
                        with lock:
                            unknown[name] += 1  # no answer: applied or not, either is fine
                        raise
                    if resp.status_code < 300:
                        with lock:
                            acked[name] += 1
                else:
                    verb = rng.choice(("running", "force-stop"))
                    resp = http.put(f"{url}/state", data=verb, timeout=180,
                                    headers={"Content-Type": "text/plain"})
            except requests.RequestException as err:
                with lock:
                    errors.append(f"{type(err).__name__}: {str(err)[:150]}")
                continue
            with lock:
                statuses[f"{resp.request.method} {resp.status_code}"] += 1
                if resp.status_code >= 500:
                    errors.append(f"{resp.request.method} {resp.url}: {resp.status_code} {resp.text[:200]}")

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in range(clients)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples = 0
    while time.monotonic() - t0 < seconds:
        time.sleep(1)
        samples += 1
        overbook += overbooked(world)
    stop.set()
    for t in threads:
        t.join(180)
    took = time.monotonic() - t0
    converged, vms = world.converge(120)
    overbook += overbooked(world)
    final = {vm["name"]: _counter(vm) for vm in vms}
    # lost: fewer than acknowledged; or more than acknowledged plus those whose answer never came
    lost = {n: f"{acked[n]} acknowledged (+{unknown[n]} unanswered), counter {final.get(n)}" for n in names
            if not acked[n] <= (final.get(n) or 0) <= acked[n] + unknown[n]}
    ordered = sorted(get_times)
    return {
        "clients": clients, "seconds": round(took, 1), "requests": sum(statuses.values()),
        "requests_per_s": round(sum(statuses.values()) / took, 1),
        "increments_acked": sum(acked.values()), "increments_unanswered": sum(unknown.values()),
        "conflicts_412": statuses.get("PATCH 412", 0),
        "lost_updates": len(lost), "lost_update_examples": list(lost.items())[:5],
        "overbooked_samples": len(overbook), "overbook_examples": overbook[:5], "samples": samples,
        "server_errors": sum(1 for e in errors if ": 5" in e), "errors": len(errors), "error_examples": errors[:8],
        "get_max_ms": round(ordered[-1] * 1000, 1) if ordered else None,
        "get_p50_ms": round(pct(ordered, 0.5) * 1000, 1) if ordered else None,
        "get_p99_ms": round(pct(ordered, 0.99) * 1000, 1) if ordered else None,
        "gets": len(ordered), "by_status": dict(statuses.most_common()),
        "converged_after": converged is not None,
        "failures": len(lost) + len(overbook) + sum(1 for e in errors if ": 5" in e) + (converged is None),
    }

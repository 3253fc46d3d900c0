"""Scheduler throughput: decisions per second at 10, 100 and 1,000 synthetic hosts.

    .venv/bin/python -m tests.bench.bench_scheduler [--rounds 5]

Pure CPU, no I/O. Three things are timed on the same hosts and request:

- ``decisions_per_s``: ``schedule()``, i.e. every filter on every host, the first
  failing filter kept for each rejected host, weighing, the pick;
- ``decisions_with_explain_per_s``: the same plus ``Decision.explain()``, the one-line
  text naming every rejected host with its filter and reason (what an event stores);
- ``naive_decisions_per_s``: a reference written the straightforward way, in the shape
  of nova's FilterScheduler (filter objects called host by host, one filter after the
  other over the surviving hosts, weigher objects, a full sort). It records which
  filter removed each host but writes no reason text, which favours it.

Each measurement is a round of at least ``MIN_ROUND_S`` of back-to-back decisions;
the median and the best of ``rounds`` rounds are reported.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable

from scheduler import Group, HostState, Policy, Request, schedule

SIZES = (10, 100, 1000)
GOAL_AT_1000 = 2000  # decisions/s
MIN_ROUND_S = 0.3


# -- synthetic data ------------------------------------------------------------------------------
def make_hosts(n: int, seed: int = 42) -> list[HostState]:
    """``n`` varied hosts: ~5% disabled, in maintenance or down, ~10% full, ~10% without
    the label the request selects, a few aarch64, allocations from empty to nearly full."""
    rnd = random.Random(seed)
    hosts = []
    for i in range(n):
        cpus = rnd.choice((4, 8, 16, 32, 64))
        memory = cpus * rnd.choice((2048, 4096, 8192))
        disk = float(rnd.choice((200, 500, 1000, 2000)))
        roll = rnd.random()
        state, up = "enabled", True
        if roll < 0.02:
            state = "disabled"
        elif roll < 0.04:
            state = "maintenance"
        elif roll < 0.05:
            up = False
        if rnd.random() < 0.10:  # full: RAM (mostly) or disk at capacity
            fill_mem, fill_disk = (1.0, 0.5) if rnd.random() < 0.7 else (0.5, 1.0)
        else:
            fill_mem, fill_disk = rnd.random() * 0.9, rnd.random() * 0.9
        labels = {"zone": f"z{i % 4}", "tier": "general" if rnd.random() < 0.9 else "gpu"}
        hosts.append(HostState(
            name=f"host{i:04d}", state=state, up=up,
            arch="aarch64" if rnd.random() < 0.02 else "x86_64",
            cpus=cpus, memory_mib=memory, disk_gib=disk,
            allocated_cpus=int(cpus * 16 * rnd.random() * 0.5),
            allocated_memory_mib=int(memory * 1.5 * fill_mem),
            allocated_disk_gib=round(disk * fill_disk, 1),
            labels=labels,
        ))
    return hosts


def make_request(hosts: list[HostState], seed: int = 7) -> Request:
    """2 vCPUs, 2 GiB, 10 GiB of disk, x86_64, tier=general, in a soft-anti-affinity
    group with 5 members already placed."""
    rnd = random.Random(seed)
    members: dict[str, int] = {}
    for h in rnd.sample(hosts, min(5, len(hosts))):
        members[h.name] = members.get(h.name, 0) + 1
    return Request(vm="web-17", cpus=2, memory_mib=2048, disk_gib=10.0, arch="x86_64",
                   node_selector={"tier": "general"},
                   group=Group("web", "soft-anti-affinity", members))


# -- the naive, nova-shaped reference ------------------------------------------------------------
class NaiveFilter:
    name = "BaseFilter"

    def host_passes(self, host: HostState, req: Request) -> bool:
        raise NotImplementedError

    def filter_all(self, hosts: list[HostState], req: Request, rejected: list):
        for host in hosts:
            if self.host_passes(host, req):
                yield host
            else:
                rejected.append((host.name, self.name))


class NaiveCompute(NaiveFilter):
    name = "ComputeFilter"

    def host_passes(self, host, req):
        return host.state == "enabled" and host.up


class NaiveRequested(NaiveFilter):
    name = "RequestedHostFilter"

    def host_passes(self, host, req):
        if host.name in req.ignore_hosts:
            return False
        return req.only_hosts is None or host.name in req.only_hosts


class NaiveArch(NaiveFilter):
    name = "ArchFilter"

    def host_passes(self, host, req):
        return req.arch is None or host.arch == req.arch


class NaiveLabels(NaiveFilter):
    name = "LabelsFilter"

    def host_passes(self, host, req):
        return all(host.labels.get(k) == v for k, v in req.node_selector.items())


class NaiveStorage(NaiveFilter):
    name = "StorageFilter"

    def host_passes(self, host, req):
        return req.storage is None or (host.storage or host.name) == req.storage


class NaiveCore(NaiveFilter):
    name = "CoreFilter"

    def host_passes(self, host, req):
        if not host.cpus:
            return False
        return host.cpus * host.cpu_ratio - host.allocated_cpus >= req.cpus


class NaiveRam(NaiveFilter):
    name = "RamFilter"

    def host_passes(self, host, req):
        if not host.memory_mib:
            return False
        usable = host.memory_mib * host.ram_ratio - host.reserved_memory_mib
        return usable - host.allocated_memory_mib >= req.memory_mib


class NaiveDisk(NaiveFilter):
    name = "DiskFilter"

    def host_passes(self, host, req):
        free = host.disk_gib * host.disk_ratio - host.allocated_disk_gib
        return req.disk_gib <= 0 or free >= req.disk_gib


class NaiveAffinity(NaiveFilter):
    name = "ServerGroupAffinityFilter"

    def host_passes(self, host, req):
        g = req.group
        if g is None or g.policy != "affinity":
            return True
        members = [h for h, n in g.members_by_host.items() if n > 0]
        return not members or host.name in members


class NaiveAntiAffinity(NaiveFilter):
    name = "ServerGroupAntiAffinityFilter"

    def host_passes(self, host, req):
        g = req.group
        return g is None or g.policy != "anti-affinity" or g.members_by_host.get(host.name, 0) <= 0


class NaiveWeigher:
    multiplier = 1.0

    def raw(self, host: HostState, req: Request) -> float:
        raise NotImplementedError

    def weigh_all(self, hosts: list[HostState], req: Request) -> list[float]:
        values = [self.raw(h, req) for h in hosts]
        lo, hi = min(values), max(values)
        if hi == lo:
            return [0.0] * len(values)
        return [self.multiplier * (v - lo) / (hi - lo) for v in values]


class NaiveRamWeigher(NaiveWeigher):
    def raw(self, host, req):
        usable = host.memory_mib * host.ram_ratio - host.reserved_memory_mib
        return usable - host.allocated_memory_mib


class NaiveCpuWeigher(NaiveWeigher):
    def raw(self, host, req):
        return host.cpus * host.cpu_ratio - host.allocated_cpus


class NaiveSoftAffinityWeigher(NaiveWeigher):
    def raw(self, host, req):
        g = req.group
        if g is None or not g.policy.startswith("soft"):
            return 0.0
        n = g.members_by_host.get(host.name, 0)
        return n if g.policy == "soft-affinity" else -n


NAIVE_FILTERS = [NaiveCompute(), NaiveRequested(), NaiveArch(), NaiveLabels(), NaiveStorage(),
                 NaiveCore(), NaiveRam(), NaiveDisk(), NaiveAffinity(), NaiveAntiAffinity()]
NAIVE_WEIGHERS = [NaiveRamWeigher(), NaiveCpuWeigher(), NaiveSoftAffinityWeigher()]


NAIVE_RANDOM = random.Random(0)


def naive_schedule(hosts: list[HostState], req: Request, subset_size: int = 1,
                   rng: random.Random = NAIVE_RANDOM):
    rejected: list[tuple[str, str]] = []
    remaining = list(hosts)
    for f in NAIVE_FILTERS:
        remaining = list(f.filter_all(remaining, req, rejected))
    if not remaining:
        return None, [], rejected
    totals = [0.0] * len(remaining)
    for w in NAIVE_WEIGHERS:
        totals = [t + x for t, x in zip(totals, w.weigh_all(remaining, req))]
    ranked = sorted(zip(remaining, totals), key=lambda p: -p[1])
    best = ranked[:subset_size]
    return rng.choice(best)[0].name, ranked, rejected


# -- timing --------------------------------------------------------------------------------------
def rate(fn: Callable[[], object], rounds: int) -> dict:
    """Decisions/s over ``rounds`` rounds of at least MIN_ROUND_S each: median and best."""
    fn()  # warm up
    rates = []
    for _ in range(rounds):
        count, start = 0, time.perf_counter()
        while True:
            for _ in range(10):
                fn()
            count += 10
            elapsed = time.perf_counter() - start
            if elapsed >= MIN_ROUND_S:
                break
        rates.append(count / elapsed)
    return {"median": round(statistics.median(rates), 1), "best": round(max(rates), 1)}


def run(rounds: int = 5) -> dict:
    """Measure every size; the JSON-able result (see the module docstring for the keys)."""
    policy = Policy.spread()
    rng = random.Random(1)
    out: dict = {"hosts": {}}
    for n in SIZES:
        hosts = make_hosts(n)
        req = make_request(hosts)
        d = schedule(hosts, req, policy, rng)
        _, naive_ranked, naive_rejected = naive_schedule(hosts, req)
        # Same hosts passing and the same filter for each rejected host, or the comparison is void.
        assert sorted(h for h, _ in d.ranked) == sorted(h.name for h, _ in naive_ranked)
        assert sorted((r.host, r.filter) for r in d.rejected) == sorted(naive_rejected)
        ours = rate(lambda h=hosts, r=req: schedule(h, r, policy, rng), rounds)
        with_explain = rate(lambda h=hosts, r=req: schedule(h, r, policy, rng).explain(), rounds)
        naive = rate(lambda h=hosts, r=req: naive_schedule(h, r), rounds)
        out["hosts"][str(n)] = {
            "passed": len(d.ranked),
            "rejected": len(d.rejected),
            "rejected_by": d.rejected_by(),
            "explain_chars": len(d.explain()),
            "decisions_per_s": ours["median"],
            "decisions_per_s_best": ours["best"],
            "decisions_with_explain_per_s": with_explain["median"],
            "decisions_with_explain_per_s_best": with_explain["best"],
            "naive_decisions_per_s": naive["median"],
            "ratio_ours_vs_naive": round(ours["median"] / naive["median"], 2),
            "us_per_host": round(1e6 / ours["median"] / n, 3),
        }
    h = out["hosts"]
    # How the cost of one decision grows from 100 to 1,000 hosts (10.0 = linear).
    out["growth_100_to_1000"] = round(h["100"]["decisions_per_s"] / h["1000"]["decisions_per_s"], 2)
    out["growth_100_to_1000_with_explain"] = round(
        h["100"]["decisions_with_explain_per_s"] / h["1000"]["decisions_with_explain_per_s"], 2)
    out["goal_decisions_per_s_at_1000"] = GOAL_AT_1000
    out["pass"] = h["1000"]["decisions_per_s"] >= GOAL_AT_1000
    out["rounds"] = rounds
    out["min_round_s"] = MIN_ROUND_S
    out["python"] = platform.python_version()
    out["cpus"] = os.cpu_count()
    out["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    result = run(args.rounds)
    print(json.dumps(result, indent=2))
    return 0 if result["pass"] else 1


if __name__ == "__main__":
    sys.exit(main())

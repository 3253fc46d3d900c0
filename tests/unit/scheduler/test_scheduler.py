"""scheduler/: filters, overcommit, weighers, the pick, the explanation. Synthetic hosts only."""
from __future__ import annotations

import dataclasses
import json
import random
from collections import Counter

import pytest

from scheduler import FILTERS, Decision, Group, HostState, NoValidHost, Policy, Request, schedule
from scheduler.engine import _pick
from scheduler.filters import first_failure, first_failures, reason
from scheduler.partition import partition
from scheduler.weighers import gather, soft_members, weigh

GIB = 1024


def host(name: str, **kw) -> HostState:
    """A roomy enabled host unless told otherwise: 8 CPUs, 16 GiB, 500 GiB."""
    kw.setdefault("cpus", 8)
    kw.setdefault("memory_mib", 16 * GIB)
    kw.setdefault("disk_gib", 500.0)
    return HostState(name=name, **kw)


def req(vm: str = "web1", cpus: int = 1, memory_mib: int = 1024, **kw) -> Request:
    return Request(vm=vm, cpus=cpus, memory_mib=memory_mib, **kw)


def only_rejection(decision: Decision, name: str):
    [r] = [r for r in decision.rejected if r.host == name]
    return r


# -- filters ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("kw, text", [
    ({"state": "disabled"}, "host is disabled"),
    ({"state": "maintenance"}, "host is in maintenance"),
    ({"up": False}, "host is down"),
])
def test_compute_filter(kw, text):
    d = schedule([host("h1"), host("h2", **kw)], req())
    assert d.host == "h1"
    r = only_rejection(d, "h2")
    assert (r.filter, r.reason) == ("ComputeFilter", text)


def test_compute_filter_comes_first():
    # Down AND full: the first failing filter is the one reported.
    d = schedule([host("h1", up=False, memory_mib=1024)], req(memory_mib=8 * GIB))
    assert d.rejected[0].filter == "ComputeFilter"


def test_core_filter_overcommit_16_per_cpu():
    h = host("h1", cpus=2, allocated_cpus=30)  # 32 vCPUs of capacity, 2 free
    assert schedule([h], req(cpus=2)).host == "h1"
    d = schedule([h], req(cpus=3))
    assert d.host is None
    r = d.rejected[0]
    assert r.filter == "CoreFilter"
    assert r.reason == "needs 3 vCPUs, 2 free of 32 (2 CPUs x ratio 16)"


def test_ram_filter_overcommit_1_5():
    # A 4 GiB host takes 6 GiB of VMs, not 6.1.
    h = host("h1", memory_mib=4 * GIB)
    assert h.capacity_memory_mib == 6 * GIB
    assert schedule([h], req(memory_mib=6 * GIB)).host == "h1"
    half = dataclasses.replace(h, allocated_memory_mib=3 * GIB)
    assert schedule([half], req(memory_mib=3 * GIB)).host == "h1"
    d = schedule([h], req(memory_mib=int(6.1 * GIB)))
    assert d.host is None
    r = d.rejected[0]
    assert r.filter == "RamFilter"
    assert "needs 6246 MiB" in r.reason and "6144 MiB free of 6144 MiB" in r.reason
    assert "ratio 1.5" in r.reason


def test_ram_filter_counts_reserved_memory():
    h = host("h1", memory_mib=4 * GIB, reserved_memory_mib=1024, allocated_memory_mib=1024)
    assert h.free_memory_mib == 6 * GIB - 2048
    r = schedule([h], req(memory_mib=5 * GIB)).rejected[0]
    assert r.filter == "RamFilter"
    assert r.reason == ("needs 5120 MiB, 4096 MiB free of 5120 MiB "
                        "(4096 MiB x ratio 1.5 - 1024 MiB reserved)")


def test_disk_filter_and_per_host_ratio():
    h = host("h1", disk_gib=100.0, allocated_disk_gib=95.0)
    r = schedule([h], req(disk_gib=10.0)).rejected[0]
    assert r.filter == "DiskFilter"
    assert r.reason == "needs 10 GiB, 5 GiB free of 100 GiB (100 GiB x ratio 1)"
    assert schedule([dataclasses.replace(h, disk_ratio=2.0)], req(disk_gib=10.0)).host == "h1"
    assert schedule([h], req(disk_gib=0.0)).host == "h1"  # no disk needed: no disk check


def test_per_host_ratios():
    h = host("h1", cpus=4, cpu_ratio=1.0, memory_mib=4 * GIB, ram_ratio=1.0)
    assert (h.capacity_cpus, h.capacity_memory_mib) == (4, 4 * GIB)
    assert schedule([h], req(cpus=5)).rejected[0].filter == "CoreFilter"
    assert schedule([h], req(memory_mib=4 * GIB + 1)).rejected[0].filter == "RamFilter"


@pytest.mark.parametrize("kw, filter_, text", [
    ({"cpus": 0}, "CoreFilter", "inventory unknown"),
    ({"memory_mib": 0}, "RamFilter", "inventory unknown"),
    ({"disk_gib": 0.0}, "DiskFilter", "inventory unknown"),
])
def test_unknown_inventory_is_rejected_not_a_crash(kw, filter_, text):
    d = schedule([host("h1", **kw)], req(cpus=0, memory_mib=0, disk_gib=1.0))
    assert d.host is None
    assert d.rejected[0].filter == filter_ and text in d.rejected[0].reason


def test_arch_filter():
    d = schedule([host("arm", arch="aarch64"), host("x86")], req(arch="x86_64"))
    assert d.host == "x86"
    r = only_rejection(d, "arm")
    assert (r.filter, r.reason) == ("ArchFilter", "host is aarch64, VM needs x86_64")
    assert schedule([host("arm", arch="aarch64")], req()).host == "arm"  # arch None: any


def test_labels_filter_node_selector():
    hosts = [host("a", labels={"zone": "eu-1", "ssd": "yes"}), host("b", labels={"zone": "us-2"}),
             host("c")]
    d = schedule(hosts, req(node_selector={"zone": "eu-1", "ssd": "yes"}))
    assert d.host == "a"
    rb, rc = only_rejection(d, "b"), only_rejection(d, "c")
    assert rb.filter == rc.filter == "LabelsFilter"
    assert "label ssd=yes missing" in rb.reason
    assert "label zone is 'us-2', wanted 'eu-1'" in rb.reason
    assert "label zone=eu-1 missing" in rc.reason


def test_labels_with_equals_signs_do_not_pass_for_others():
    hosts = [host("h1", labels={"a=b": "c"}), host("h2", labels={"a": "b=c"})]
    d = schedule(hosts, req(node_selector={"a": "b=c"}))
    assert d.host == "h2"
    assert only_rejection(d, "h1").filter == "LabelsFilter"


def test_storage_filter():
    hosts = [host("a", storage="nfs-1"), host("b", storage="nfs-2"), host("c")]
    d = schedule(hosts, req(storage="nfs-1"))
    assert d.host == "a"
    assert (only_rejection(d, "b").reason
            == "host sees storage 'nfs-2', the VM's disks are on 'nfs-1'")
    assert only_rejection(d, "c").filter == "StorageFilter"
    # A host's own local storage is named after the host.
    assert schedule(hosts, req(storage="c")).host == "c"


def test_requested_host_filter_ignore_and_only():
    hosts = [host("src"), host("h2"), host("h3")]
    d = schedule(hosts, req(ignore_hosts=frozenset({"src"})))
    assert d.host in ("h2", "h3")
    r = only_rejection(d, "src")
    assert r.filter == "RequestedHostFilter" and "excluded" in r.reason
    d = schedule(hosts, req(only_hosts=frozenset({"h3"})))
    assert d.host == "h3"
    assert {r.host for r in d.rejected} == {"src", "h2"}
    assert all(r.filter == "RequestedHostFilter" and "not the requested host (requested: h3)"
               in r.reason for r in d.rejected)


def test_affinity():
    hosts = [host("h1"), host("h2"), host("h3")]
    empty = Group("db", "affinity", {})
    assert schedule(hosts, req(group=empty)).host is not None  # first member: anywhere
    g = Group("db", "affinity", {"h2": 1})
    for seed in range(10):
        d = schedule(hosts, req(group=g), rng=random.Random(seed))
        assert d.host == "h2"
    r = only_rejection(d, "h1")
    assert r.filter == "ServerGroupAffinityFilter" and "members on h2" in r.reason
    # The group's host is full: nothing fits, rather than break the affinity.
    full = [host("h1"), host("h2", memory_mib=1024), host("h3")]
    d = schedule(full, req(memory_mib=4 * GIB, group=g))
    assert d.host is None


def test_strict_anti_affinity_spreads_then_refuses():
    hosts = {n: host(n) for n in ("h1", "h2", "h3")}
    group = Group("web", "anti-affinity", {})
    placed = []
    for i in range(3):
        r = req(f"web{i}", group=group)
        d = schedule(list(hosts.values()), r, rng=random.Random(i))
        assert d.host is not None, d.explain()
        placed.append(d.host)
        hosts[d.host] = hosts[d.host].claim(r)  # feed the claim back
        group = group.with_member(d.host)
    assert sorted(placed) == ["h1", "h2", "h3"]
    d = schedule(list(hosts.values()), req("web3", group=group))
    assert d.host is None
    assert {r.filter for r in d.rejected} == {"ServerGroupAntiAffinityFilter"}
    assert "already has 1 member here" in d.rejected[0].reason
    with pytest.raises(NoValidHost) as exc:
        d.raise_if_none()
    assert exc.value.decision is d
    assert str(exc.value).startswith("no host fits web3: ")


def test_claim_feeds_back_allocations():
    h = host("h1", cpus=1, memory_mib=2 * GIB, disk_gib=10.0)  # 16 vCPUs, 3 GiB, 10 GiB
    r = req(cpus=1, memory_mib=1024, disk_gib=5.0)
    h = h.claim(r).claim(r)
    assert (h.allocated_cpus, h.allocated_memory_mib, h.allocated_disk_gib) == (2, 2048, 10.0)
    assert h.free_memory_mib == 1024 and h.free_disk_gib == 0.0
    assert schedule([h], r).rejected[0].filter == "DiskFilter"


# -- weighers --------------------------------------------------------------------------------------
def test_spread_prefers_most_free_pack_the_least():
    hosts = [host("empty"), host("half", allocated_memory_mib=12 * GIB, allocated_cpus=64),
             host("full", allocated_memory_mib=22 * GIB, allocated_cpus=120)]
    assert schedule(hosts, req(), Policy.spread()).host == "empty"
    assert schedule(hosts, req(), Policy.pack()).host == "full"
    assert Policy.named("pack") == Policy.pack()
    d = schedule(hosts, req(), Policy.spread())
    assert [h for h, _ in d.ranked] == ["empty", "half", "full"]
    # Normalised per weigher to 0..1, times its multiplier, summed: 2, ~0.95, 0.
    weights = dict(d.ranked)
    assert weights["empty"] == pytest.approx(2.0) and weights["full"] == pytest.approx(0.0)
    assert d.weight == pytest.approx(2.0)


def test_weights_are_normalised_ram_only():
    hosts = [host("a", allocated_memory_mib=0), host("b", allocated_memory_mib=6 * GIB),
             host("c", allocated_memory_mib=12 * GIB)]
    d = schedule(hosts, req(), Policy(ram_weight=2.0, cpu_weight=0.0))
    assert dict(d.ranked) == pytest.approx({"a": 2.0, "b": 1.0, "c": 0.0})


def test_soft_affinity_and_soft_anti_affinity_weigh():
    hosts = [host("h1"), host("h2"), host("h3")]
    members = {"h2": 2, "h3": 1}
    policy = Policy(ram_weight=0.0, cpu_weight=0.0, soft_affinity_weight=1.0)
    d = schedule(hosts, req(group=Group("g", "soft-affinity", members)), policy)
    assert d.host == "h2"
    assert dict(d.ranked) == pytest.approx({"h1": 0.0, "h2": 1.0, "h3": 0.5})
    d = schedule(hosts, req(group=Group("g", "soft-anti-affinity", members)), policy)
    assert d.host == "h1"
    assert dict(d.ranked) == pytest.approx({"h1": 1.0, "h2": 0.0, "h3": 0.5})
    # Soft: nothing is rejected for it, only weighed.
    assert d.rejected == []


def test_soft_affinity_outweighs_free_ram_when_weighed_more():
    hosts = [host("roomy"), host("busy", allocated_memory_mib=8 * GIB)]
    g = Group("g", "soft-affinity", {"busy": 1})
    assert schedule(hosts, req(group=g), Policy(soft_affinity_weight=0.5)).host == "roomy"
    assert schedule(hosts, req(group=g), Policy(soft_affinity_weight=5.0)).host == "busy"


# -- the pick --------------------------------------------------------------------------------------
def test_random_pick_among_subset_size():
    hosts = [host("best"), host("second", allocated_memory_mib=2 * GIB, allocated_cpus=8),
             host("third", allocated_memory_mib=8 * GIB, allocated_cpus=64)]
    rng = random.Random(1234)
    picks = Counter(schedule(hosts, req(), Policy(subset_size=2), rng=rng).host for _ in range(400))
    assert set(picks) == {"best", "second"}
    assert min(picks.values()) > 100
    picks = Counter(schedule(hosts, req(), Policy(), rng=rng).host for _ in range(50))
    assert picks == {"best": 50}


def test_ties_at_the_top_are_picked_at_random():
    hosts = [host("a"), host("b"), host("c", allocated_memory_mib=GIB)]
    rng = random.Random(7)
    picks = Counter(schedule(hosts, req(), rng=rng).host for _ in range(200))
    assert set(picks) == {"a", "b"}
    hosts = [host(n) for n in "abcde"]  # five tied, subset of 2: any of the five
    picks = Counter(schedule(hosts, req(), Policy(subset_size=2), rng=rng).host
                    for _ in range(500))
    assert set(picks) == set("abcde")


def test_seeded_rng_is_reproducible():
    hosts = [host(f"h{i}") for i in range(10)]
    a = [schedule(hosts, req(), Policy(subset_size=3), random.Random(5)).host for _ in range(5)]
    b = [schedule(hosts, req(), Policy(subset_size=3), random.Random(5)).host for _ in range(5)]
    assert a == b


# -- the explanation -------------------------------------------------------------------------------
def test_explain_names_chosen_and_each_rejected_with_its_filter():
    hosts = [host("h1", allocated_memory_mib=4 * GIB), host("h2"),
             host("h3", memory_mib=1024), host("h4", state="maintenance")]
    d = schedule(hosts, req(memory_mib=2048))
    text = d.explain()
    assert text.startswith("placed web1 on h2 (weight ")
    assert "; also h1 " in text
    assert "rejected: h3 by RamFilter (needs 2048 MiB, 1536 MiB free of 1536 MiB" in text
    assert "h4 by ComputeFilter (host is in maintenance)" in text
    assert "\n" not in text
    short = d.explain(max_rejected=1)
    assert "h3 by RamFilter" in short and "and 1 more (1 by ComputeFilter)" in short
    assert d.rejected_by() == {"RamFilter": 1, "ComputeFilter": 1}


def test_explain_lists_the_three_runners_up_in_ranked_order():
    hosts = [host(f"h{i}", allocated_memory_mib=i * GIB, allocated_cpus=0) for i in range(6)]
    rng = random.Random(3)
    for _ in range(20):
        d = schedule(hosts, req(), Policy(cpu_weight=0.0, subset_size=3), rng=rng)
        weights = dict(d.ranked)
        assert d.weight == pytest.approx(weights[d.host])
        others = [f"{h} {w:.2f}" for h, w in d.ranked if h != d.host][:3]
        assert f"; also {', '.join(others)} and 2 more)" in d.explain()


def test_explain_when_nothing_fits():
    hosts = [host("h1", memory_mib=1024), host("h2", up=False)]
    d = schedule(hosts, req(memory_mib=4096))
    assert d.host is None and d.weight is None and d.ranked == []
    text = d.explain()
    assert text.startswith("no host fits web1: h1 by RamFilter (needs 4096 MiB")
    assert "; h2 by ComputeFilter (host is down)" in text
    assert schedule([], req()).explain() == "no host fits web1: no hosts known"
    assert schedule([host("h1")], req()).raise_if_none().host == "h1"


def test_as_dict_is_json_serialisable():
    hosts = [host("h1"), host("h2", state="disabled"), host("h3", allocated_cpus=8)]
    d = schedule(hosts, req(group=Group("g", "soft-anti-affinity", {"h1": 1})))
    data = json.loads(json.dumps(d.as_dict()))
    assert data["host"] == d.host and data["vm"] == "web1"
    assert [r["host"] for r in data["ranked"]] == [h for h, _ in d.ranked]
    assert data["rejected"] == [{"host": "h2", "filter": "ComputeFilter",
                                 "reason": "host is disabled"}]
    assert json.dumps(schedule([], req()).as_dict())


def test_filters_list_and_inputs_are_hashable():
    assert FILTERS[0] == "ComputeFilter" and FILTERS[9] == "ServerGroupAntiAffinityFilter"
    assert FILTERS[10:] == ("DedicatedCpuFilter", "HugepagesFilter")  # issue 14, part F
    assert len(FILTERS) == 12
    hash(host("h1", labels={"a": "b"}))
    hash(req(node_selector={"a": "b"}, group=Group("g", "affinity", {"h1": 1})))
    with pytest.raises(ValueError):
        Group("g", "sticky", {})
    with pytest.raises(ValueError):
        Policy(subset_size=0)


# -- the fast path agrees with the definition ------------------------------------------------------
def random_host(rnd: random.Random, i: int) -> HostState:
    """Mostly usable hosts near their limits, so that every filter both passes and rejects."""
    cpus = rnd.choice((0, 1, 2, 4, 4, 4))
    memory = rnd.choice((0, 1024, 2048, 4096, 4096, 4096))
    disk = rnd.choice((0.0, 10.0, 20.0, 20.0))
    return HostState(
        name=f"h{i}", state="enabled" if rnd.random() < 0.9 else rnd.choice(("disabled",
                                                                             "maintenance")),
        up=rnd.random() > 0.05, arch="x86_64" if rnd.random() < 0.9 else "aarch64",
        cpus=cpus, memory_mib=memory, disk_gib=disk,
        cpu_ratio=rnd.choice((1.0, 16.0)), ram_ratio=rnd.choice((1.0, 1.5)),
        reserved_memory_mib=rnd.choice((0, 0, 512)),
        allocated_cpus=rnd.randint(0, 40), allocated_memory_mib=rnd.randint(0, 5000),
        allocated_disk_gib=rnd.choice((0.0, 5.0, 15.0)),
        labels=rnd.choice(({"zone": "a"}, {"zone": "a", "ssd": "1"}, {"zone": "b"}, {})),
        storage=rnd.choice(("", "nfs", "nfs")),
        dedicated_cpus=min(cpus, rnd.choice((0, 0, 1, 2))),
        allocated_dedicated_cpus=rnd.choice((0, 0, 1)),
        hugepages_mib=rnd.choice((0.0, 0.0, 1024.0)), allocated_hugepages_mib=rnd.choice((0.0, 512.0)),
    )


def random_request(rnd: random.Random, names: list[str]) -> Request:
    policy = rnd.choice(("affinity", "anti-affinity", "soft-affinity", "soft-anti-affinity"))
    members = {n: rnd.randint(0, 2) for n in rnd.sample(names, rnd.randint(0, 4))}
    return Request(
        vm="vm", cpus=rnd.randint(0, 6), memory_mib=rnd.choice((0, 512, 2048)),
        disk_gib=rnd.choice((0.0, 5.0, 12.5)),
        arch=rnd.choice((None, None, "x86_64", "aarch64")),
        node_selector=rnd.choice(({}, {}, {"zone": "a"}, {"zone": "a", "ssd": "1"})),
        group=rnd.choice((None, Group("g", policy, members))),
        ignore_hosts=frozenset(rnd.sample(names, rnd.choice((0, 0, 1)))),
        only_hosts=rnd.choice((None, None, None, frozenset(rnd.sample(names, 6)))),
        storage=rnd.choice((None, None, "nfs", names[0])),
        dedicated_cpus=rnd.choice((0, 0, 0, 1, 2)),
        hugepages_mib=rnd.choice((0, 0, 0, 256, 1024)),
    )


def plain(request: Request) -> Request:
    """``request`` without the filters few requests use (partition's plain loop takes it)."""
    g = request.group
    if g is not None and g.policy in ("affinity", "anti-affinity"):
        g = dataclasses.replace(g, policy="soft-" + g.policy)
    return dataclasses.replace(request, ignore_hosts=frozenset(), only_hosts=None, storage=None,
                               dedicated_cpus=0, hugepages_mib=0, group=g)


def test_partition_agrees_with_first_failure():
    rnd = random.Random(2024)
    seen = Counter()
    for n in range(1000):
        hosts = [random_host(rnd, i) for i in range(12)]
        request = random_request(rnd, [h.name for h in hosts])
        if n % 2:  # half of them plain: both of partition's loops
            request = plain(request)
        expected = first_failures(hosts, request)
        assert expected == [first_failure(h, request) for h in hosts]
        policy = Policy(soft_affinity_weight=float(n % 2))  # with and without the members
        members = soft_members(request, policy)
        passed, rejected, failed, ranges = partition(hosts, request, members)
        assert passed == [h for h, i in zip(hosts, expected, strict=True) if i is None]
        assert rejected == [h for h, i in zip(hosts, expected, strict=True) if i is not None]
        assert failed == [i for i in expected if i is not None]
        # what the loop gathers for the weighers is what the straightforward way computes
        assert ranges == (gather(passed, members) if passed else None)
        seen.update(expected)
        d = schedule(hosts, request, rng=rnd)
        assert len(d.ranked) + len(d.rejected) == len(hosts)
        assert (d.host is None) == (not d.ranked)
        d.explain()
    # Every filter rejected some host, and some hosts passed them all.
    assert set(seen) == {None, *range(len(FILTERS))}


def test_decisions_match_the_straightforward_path():
    """schedule() (one fast loop, gathered ranges) against the plain way: each host through
    the filters' definition, weigh() gathering its own ranges, the same seeded pick."""
    rnd = random.Random(77)
    for n in range(400):
        hosts = [random_host(rnd, i) for i in range(rnd.randint(6, 20))]
        request = random_request(rnd, [h.name for h in hosts])
        policy = Policy(ram_weight=rnd.choice((1.0, -1.0, 0.0)), cpu_weight=rnd.choice((1.0, 2.0)),
                        soft_affinity_weight=float(n % 3), subset_size=rnd.choice((1, 1, 3)))
        seed = rnd.random()
        d = schedule(hosts, request, policy, random.Random(seed))
        index = {h.name: first_failure(h, request) for h in hosts}
        assert [(r.host, r.filter, r.reason) for r in d.rejected] == [
            (h.name, FILTERS[index[h.name]], reason(index[h.name], h, request))
            for h in hosts if index[h.name] is not None]
        passed = [h for h in hosts if index[h.name] is None]
        scores, offset = weigh(passed, request, policy)
        ranked = sorted(((h.name, s + offset) for h, s in zip(passed, scores, strict=True)),
                        key=lambda p: (-p[1], p[0]))
        assert d.ranked == ranked
        chosen = _pick(passed, scores, policy.subset_size, random.Random(seed)) if passed else None
        assert d.host == (None if chosen is None else passed[chosen].name)


def plain_first_failure(h: HostState, r: Request) -> int | None:
    """The filters written the plain way, with none of first_failures' shortcuts (flags that
    skip unused filters, `in` for one label, the request's numbers as floats): the reference
    that first_failures must agree with."""
    selector = {f"{len(k)}:{k}={v}" for k, v in r.node_selector.items()}
    g = r.group
    members = g.hosts if g is not None else frozenset()
    checks = [
        h.state == "enabled" and h.up,
        h.name not in r.ignore_hosts and (r.only_hosts is None or h.name in r.only_hosts),
        r.arch is None or h.arch == r.arch,
        all(h.labels.get(k) == v for k, v in r.node_selector.items()) and selector <= h.traits,
        r.storage is None or (h.storage or h.name) == r.storage,
        h.cpus > 0 and h.free_cpus >= r.cpus,
        h.memory_mib > 0 and h.free_memory_mib >= r.memory_mib,
        r.disk_gib <= 0 or h.free_disk_gib >= r.disk_gib,
        g is None or g.policy != "affinity" or not members or h.name in members,
        g is None or g.policy != "anti-affinity" or h.name not in members,
        r.dedicated_cpus <= 0 or h.free_dedicated_cpus >= r.dedicated_cpus,
        r.hugepages_mib <= 0 or h.free_hugepages_mib >= r.hugepages_mib,
    ]
    return next((i for i, ok in enumerate(checks) if not ok), None)


def test_first_failures_agrees_with_the_plain_filters():
    rnd = random.Random(31)
    seen = Counter()
    for _ in range(3000):
        hosts = [random_host(rnd, i) for i in range(8)]
        request = random_request(rnd, [h.name for h in hosts])
        expected = [plain_first_failure(h, request) for h in hosts]
        assert first_failures(hosts, request) == expected
        seen.update(expected)
    assert set(seen) == {None, *range(len(FILTERS))}


def test_pick_is_the_first_of_the_best_or_random_among_the_tied():
    """_pick's one loop against max() and index(): the same host, the same random draw."""
    rnd = random.Random(5)
    for _ in range(3000):
        weights = [rnd.choice((-1.0, 0.0, 0.25, 0.5, 1.0, 2.0)) + rnd.choice((0.0, 0.0, 1e-9))
                   for _ in range(rnd.randint(1, 12))]
        seed = rnd.random()
        top = max(weights)
        tied = [i for i, w in enumerate(weights) if w == top]
        expected = tied[0] if len(tied) == 1 else random.Random(seed).choice(tied)
        assert _pick([host(f"h{i}") for i in range(len(weights))], weights, 1,
                     random.Random(seed)) == expected


# -- dedicated CPUs and hugepages (issue 14, part F) -----------------------------------------------
def test_dedicated_cpus_are_apart_from_the_shared_capacity():
    # 8 CPUs, 4 dedicated: 4 x ratio 16 = 64 shared vCPUs; the dedicated ones are never overcommitted
    h = host("h1", cpus=8, dedicated_cpus=4, allocated_dedicated_cpus=3)
    assert h.capacity_cpus == 64 and h.free_dedicated_cpus == 1
    d = schedule([h], req(cpus=0, dedicated_cpus=2))
    assert d.host is None
    assert d.rejected[0].filter == "DedicatedCpuFilter"
    assert d.rejected[0].reason == ("needs 2 dedicated CPUs, 1 free of 4 "
                                    "(dedicated CPUs are not overcommitted)")
    assert schedule([h], req(cpus=0, dedicated_cpus=1)).host == "h1"
    # a host without a dedicated set takes shared VMs only
    plain = host("h2", cpus=8)
    d = schedule([plain], req(cpus=0, dedicated_cpus=1))
    assert d.rejected[0].reason == ("needs 1 dedicated CPUs, the host has none "
                                    "(its cpu_dedicated_set is empty)")
    assert schedule([plain, h], req(cpus=0, dedicated_cpus=1)).host == "h1"


def test_a_claim_counts_dedicated_cpus_and_hugepages():
    h = host("h1", cpus=4, dedicated_cpus=2, hugepages_mib=1024.0)
    after = h.claim(req(cpus=0, dedicated_cpus=2, hugepages_mib=512))
    assert after.free_dedicated_cpus == 0 and after.free_hugepages_mib == 512
    assert after.free_cpus == h.free_cpus  # the shared capacity is untouched


def test_hugepages_must_be_free():
    none = host("h1")
    d = schedule([none], req(memory_mib=256, hugepages_mib=256))
    assert d.rejected[0].filter == "HugepagesFilter"
    assert d.rejected[0].reason == "needs 256 MiB of hugepages, the host has none"
    some = host("h2", hugepages_mib=512.0, allocated_hugepages_mib=384.0)
    d = schedule([none, some], req(memory_mib=256, hugepages_mib=256))
    assert d.host is None and d.rejected[1].reason == (
        "needs 256 MiB of hugepages, 128 MiB free of 512 MiB")
    assert schedule([none, some], req(memory_mib=128, hugepages_mib=128)).host == "h2"

"""The fast pass of a decision: which hosts pass every filter, in one loop over the hosts.

``scheduler.filters.first_failures`` is the definition of the filters, host by host;
``partition`` gives the same pass/fail and the same first failing filter for a whole
list of hosts, written for speed (the unit tests check that the two agree on random
hosts and requests). For the usual request (none of RequestedHost, Storage, the hard
group policies, dedicated CPUs, hugepages: ``_plain``) the loop tests the filters in
their order, so it names the filter itself; for the others (``_general``) only the
hosts it rejects go through ``first_failures``, to learn which filter to name.

Why one loop: at 1,000 hosts a decision is about a thousand times the cost per host,
and in CPython every extra pass over the hosts (a list of flags, two ``compress``,
one list per weigher, ``min``/``max`` of each) costs about as much as a filter. So
the same loop also gathers what the weighers need from the passing hosts (their
lowest and highest free RAM and vCPUs, the positions of the soft group's members:
``weighers.Ranges``), which ``weighers.gather`` computes the straightforward way.

How the loop is kept cheap, per host:
- fields precomputed in HostState (``usable_free_cpus``: free vCPUs, -inf when the host
  is not usable; ``free_*``, ``traits``), read from slots; the request's values held
  in locals;
- the request's numbers as floats, like the hosts' free capacities, so that CPython
  compares two floats directly (a float against an int takes a slower path);
- filters the request does not use cost one test of a local flag (``plain``, ...).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple, cast

from scheduler.filters import first_failures
from scheduler.model import HostState, Request, exact_float, label_trait
from scheduler.weighers import Ranges

_INF = float("inf")


class Partition(NamedTuple):
    passed: list[HostState]  # in the order given
    rejected: list[HostState]  # in the order given
    failed: list[int]  # for each rejected host, the index in FILTERS of its first failing filter
    ranges: Ranges | None  # gathered over ``passed``; None when nothing passed


class _Wanted(NamedTuple):
    """The request as the loops read it, prepared once per decision."""

    c: float  # vCPUs, memory, disk as exact floats (disk -inf when none is asked)
    m: float
    d: float
    arch: str | None
    selector: frozenset[str]  # the node selector as label traits
    label: str  # its one trait when it has exactly one (`in` is cheaper than a subset test)
    group_hosts: frozenset[str]  # the soft group's members' hosts, when weighed
    soft: bool


def partition(hosts: Sequence[HostState], request: Request,
              members: Mapping[str, int] | None = None) -> Partition:
    """Split ``hosts`` into those that pass every filter for ``request`` and the others,
    with the first filter each of the others failed (as ``first_failures`` gives it).

    ``members``: the soft group's members by host (``weighers.soft_members``), whose
    positions among the passing hosts go into the ranges; None when not weighed.
    """
    d = request.disk_gib
    selector = frozenset(label_trait(k, v) for k, v in request.node_selector.items())
    # The members' host names as a frozenset: `in` on it is a little cheaper than on the
    # dict (valgrind: ~20 instructions less), and it runs for every passing host.
    want = _Wanted(exact_float(request.cpus), exact_float(request.memory_mib),
                   exact_float(d) if d > 0 else -_INF,  # DiskFilter passes all for no disk
                   request.arch, selector, next(iter(selector)) if len(selector) == 1 else "",
                   frozenset(members or ()), members is not None)
    # The filters a request rarely uses (RequestedHost, Storage, the hard group
    # policies, dedicated CPUs, hugepages): a request using none takes the plain loop.
    g = request.group
    if (not request.ignore_hosts and request.only_hosts is None and request.storage is None
            and (g is None or g.policy not in ("affinity", "anti-affinity") or not g.hosts)
            and request.dedicated_cpus <= 0 and request.hugepages_mib <= 0):
        return _plain(hosts, want, request)
    return _general(hosts, want, request)


def _plain(hosts: Sequence[HostState], want: _Wanted, request: Request) -> Partition:
    """The usual request: the tests in the order of FILTERS (ComputeFilter and CoreFilter
    first, in one comparison), so the test a host fails names its filter and the rejected
    hosts need not go through first_failures (callgrind: ~1,100 instructions per rejected
    host). The one exception: a host failing the first test (not usable, or too few vCPUs)
    may fail a filter before CoreFilter (ArchFilter for a host with no inventory), so
    first_failures names those: marked -1 here, and few."""
    c, m, d, arch, selector, label, group_hosts, soft = want
    any_arch, any_labels, single = arch is None, not selector, len(selector) == 1
    passed: list[HostState] = []
    rejected: list[HostState] = []
    failed: list[int] = []
    slow: list[int] = []  # positions in rejected of the hosts marked -1
    with_members: list[int] = []
    # Running lowest/highest with strict comparisons keep the first of equal values, as
    # min() and max() do. (The same lines in _general: a function call per passing host
    # would cost more than what it gathers.)
    ram_lo = cpu_lo = _INF
    ram_hi = cpu_hi = -_INF
    for h in hosts:
        if h.usable_free_cpus < c:  # ComputeFilter, or CoreFilter, or another: see above
            slow.append(len(rejected))
            rejected.append(h)
            failed.append(-1)
        elif not (any_arch or h.arch == arch):
            rejected.append(h)
            failed.append(2)  # ArchFilter
        elif not (any_labels or (label in h.traits if single else selector <= h.traits)):
            rejected.append(h)
            failed.append(3)  # LabelsFilter
        elif h.free_memory_mib < m:
            rejected.append(h)
            failed.append(6)  # RamFilter
        elif h.free_disk_gib < d:
            rejected.append(h)
            failed.append(7)  # DiskFilter
        else:
            if soft and h.name in group_hosts:
                with_members.append(len(passed))
            passed.append(h)
            x = h.free_memory_mib
            if x < ram_lo:
                ram_lo = x
            if x > ram_hi:
                ram_hi = x
            x = h.free_cpus
            if x < cpu_lo:
                cpu_lo = x
            if x > cpu_hi:
                cpu_hi = x
    if slow:
        for i, index in zip(slow, _named([rejected[i] for i in slow], request), strict=True):
            failed[i] = index
    if not passed:
        return Partition(passed, rejected, failed, None)
    return Partition(passed, rejected, failed, Ranges(ram_lo, ram_hi, cpu_lo, cpu_hi, with_members))


def _general(hosts: Sequence[HostState], want: _Wanted, request: Request) -> Partition:
    """Any request: one `and` of every filter per host; first_failures names the filter
    of each rejected host."""
    c, m, d, arch, selector, label, group_hosts, soft = want
    any_arch, any_labels, single = arch is None, not selector, len(selector) == 1
    ignore, only, storage = request.ignore_hosts, request.only_hosts, request.storage
    dedicated, hugepages = request.dedicated_cpus, request.hugepages_mib
    g = request.group
    affinity = g.hosts if g is not None and g.policy == "affinity" else frozenset()
    anti_affinity = g.hosts if g is not None and g.policy == "anti-affinity" else frozenset()
    passed: list[HostState] = []
    rejected: list[HostState] = []
    with_members: list[int] = []
    ram_lo = cpu_lo = _INF
    ram_hi = cpu_hi = -_INF
    for h in hosts:
        if (h.usable_free_cpus >= c and h.free_memory_mib >= m and h.free_disk_gib >= d
                and (any_arch or h.arch == arch)
                and (any_labels or (label in h.traits if single else selector <= h.traits))
                and h.name not in ignore and (only is None or h.name in only)
                and (storage is None or h.storage_name == storage)
                and (not affinity or h.name in affinity) and h.name not in anti_affinity
                and (dedicated <= 0 or h.free_dedicated_cpus >= dedicated)
                and (hugepages <= 0 or h.free_hugepages_mib >= hugepages)):
            if soft and h.name in group_hosts:
                with_members.append(len(passed))
            passed.append(h)
            x = h.free_memory_mib
            if x < ram_lo:
                ram_lo = x
            if x > ram_hi:
                ram_hi = x
            x = h.free_cpus
            if x < cpu_lo:
                cpu_lo = x
            if x > cpu_hi:
                cpu_hi = x
        else:
            rejected.append(h)
    failed = _named(rejected, request) if rejected else []
    if not passed:
        return Partition(passed, rejected, failed, None)
    return Partition(passed, rejected, failed, Ranges(ram_lo, ram_hi, cpu_lo, cpu_hi, with_members))


def _named(rejected: list[HostState], request: Request) -> list[int]:
    """first_failures of hosts that were rejected: each index is an int (a None is a bug:
    the loop above and the definition disagree)."""
    indexes = first_failures(rejected, request)
    # Tested on a set: `None in indexes` compares None with every int the generic, slow way.
    if None in set(indexes):
        host = rejected[indexes.index(None)].name
        raise RuntimeError(f"scheduler: the fast filter rejected {host}, no filter does")
    return cast(list[int], indexes)

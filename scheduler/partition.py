"""The fast pass of a decision: which hosts pass every filter, in one loop over the hosts.

``scheduler.filters.first_failures`` is the definition of the filters, host by host;
``partition`` gives the same pass/fail for a whole list of hosts, written for speed
(the unit tests check that the two agree on random hosts and requests). Only the hosts
it rejects go through ``first_failures``, to learn which filter to name.

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
from typing import NamedTuple

from scheduler.model import HostState, Request, exact_float, label_trait
from scheduler.weighers import Ranges

_INF = float("inf")


class Partition(NamedTuple):
    passed: list[HostState]  # in the order given
    rejected: list[HostState]  # in the order given
    ranges: Ranges | None  # gathered over ``passed``; None when nothing passed


def partition(hosts: Sequence[HostState], request: Request,
              members: Mapping[str, int] | None = None) -> Partition:
    """Split ``hosts`` into those that pass every filter for ``request`` and the others.

    ``members``: the soft group's members by host (``weighers.soft_members``), whose
    positions among the passing hosts go into the ranges; None when not weighed.
    """
    c, m = exact_float(request.cpus), exact_float(request.memory_mib)
    d = request.disk_gib
    d = exact_float(d) if d > 0 else -_INF  # DiskFilter passes every host for no disk
    arch = request.arch
    any_arch = arch is None
    selector = frozenset(label_trait(k, v) for k, v in request.node_selector.items())
    any_labels = not selector
    # One label (the usual selector): `in` on the host's traits, ~40% cheaper than a subset
    # test (CPython compares two sets through the generic rich comparison).
    single = len(selector) == 1
    label = next(iter(selector)) if single else ""
    # The filters a request rarely uses (RequestedHost, Storage, the hard group
    # policies, dedicated CPUs, hugepages): skipped at once when none is in use.
    ignore, only, storage = request.ignore_hosts, request.only_hosts, request.storage
    dedicated, hugepages = request.dedicated_cpus, request.hugepages_mib
    g = request.group
    affinity = g.hosts if g is not None and g.policy == "affinity" else frozenset()
    anti_affinity = g.hosts if g is not None and g.policy == "anti-affinity" else frozenset()
    plain = (not ignore and only is None and storage is None and not affinity
             and not anti_affinity and dedicated <= 0 and hugepages <= 0)
    soft = members is not None
    # The members' host names as a frozenset: `in` on it is a little cheaper than on the
    # dict (valgrind: ~20 instructions less), and it runs for every passing host.
    group_hosts = frozenset(members or ())

    passed: list[HostState] = []
    rejected: list[HostState] = []
    with_members: list[int] = []
    # Running lowest/highest with strict comparisons keep the first of equal values,
    # as min() and max() do.
    ram_lo = cpu_lo = _INF
    ram_hi = cpu_hi = -_INF
    for h in hosts:
        if (h.usable_free_cpus >= c and h.free_memory_mib >= m and h.free_disk_gib >= d
                and (any_arch or h.arch == arch)
                and (any_labels or (label in h.traits if single else selector <= h.traits))
                and (plain or (
                    h.name not in ignore and (only is None or h.name in only)
                    and (storage is None or h.storage_name == storage)
                    and (not affinity or h.name in affinity) and h.name not in anti_affinity
                    and (dedicated <= 0 or h.free_dedicated_cpus >= dedicated)
                    and (hugepages <= 0 or h.free_hugepages_mib >= hugepages)))):
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
    if not passed:
        return Partition(passed, rejected, None)
    return Partition(passed, rejected, Ranges(ram_lo, ram_hi, cpu_lo, cpu_hi, with_members))

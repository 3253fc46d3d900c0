"""The weighers: how good each passing host is, as nova's weighers do it.

Each weigher gives every passing host a raw value; the values are normalised across
the passing hosts to 0..1 (min-max; all equal -> all 0), multiplied by the weigher's
multiplier from the Policy, and summed. The host with the highest sum is the best.

- RAMWeigher: free RAM in MiB after overcommit (multiplier ``ram_weight``; < 0 packs).
- CPUWeigher: free vCPUs after overcommit (multiplier ``cpu_weight``; < 0 packs).
- ServerGroupSoftAffinityWeigher: members of the request's group on the host, for a
  soft-affinity group; minus that for soft-anti-affinity (``soft_affinity_weight``).
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import NamedTuple

from scheduler.model import HostState, Policy, Request

WEIGHERS: tuple[str, ...] = ("RAMWeigher", "CPUWeigher", "ServerGroupSoftAffinityWeigher")

_SOFT_POLICIES = ("soft-affinity", "soft-anti-affinity")


class Ranges(NamedTuple):
    """What weighing needs from a pass over the passing hosts: the lowest and highest
    free RAM and free vCPUs, and the indexes of the hosts holding members of a soft
    group (``soft_members``). ``gather`` computes it; the engine's filter pass gathers
    the same while it filters (scheduler.filters.partition), saving passes over the hosts.
    """

    ram_lo: float
    ram_hi: float
    cpu_lo: float
    cpu_hi: float
    with_members: list[int]


def soft_members(request: Request, policy: Policy) -> Mapping[str, int] | None:
    """The group's members by host when the soft-affinity weigher applies, else None."""
    group = request.group
    if (policy.soft_affinity_weight and group is not None and group.members_by_host
            and group.policy in _SOFT_POLICIES):
        return group.members_by_host
    return None


def gather(hosts: Sequence[HostState], members: Mapping[str, int] | None) -> Ranges:
    """Ranges of ``hosts`` (not empty), the straightforward way."""
    ram = [h.free_memory_mib for h in hosts]
    cpu = [h.free_cpus for h in hosts]
    with_members = [] if members is None else [
        i for i, h in enumerate(hosts) if h.name in members]
    return Ranges(min(ram), max(ram), min(cpu), max(cpu), with_members)


def _scale(lo: float, hi: float, multiplier: float) -> float:
    """The factor k so that ``(v - lo) * k`` is the weighed, normalised v."""
    if hi == lo:
        return 0.0
    return multiplier / (hi - lo)


def weigh(hosts: Sequence[HostState], request: Request, policy: Policy,
          ranges: Ranges | None = None) -> tuple[list[float], float]:
    """The weights of ``hosts`` (all of which passed the filters), in their order, as
    ``(scores, offset)``: host i's weight is ``scores[i] + offset``.

    The offset is the same for every host, so the pick compares scores alone and the
    offset is added only when weights are shown (a subtraction per host saved: this
    runs over every passing host of every decision). ``ranges``: ``gather(hosts, ...)``
    when the caller has it already.
    """
    if not hosts:
        return [], 0.0
    members = soft_members(request, policy)
    if ranges is None:
        ranges = gather(hosts, members)
    # Each weigher's weighed, normalised value is (raw - lo) * k = raw * k - lo * k.
    ram_k = _scale(ranges.ram_lo, ranges.ram_hi, policy.ram_weight)
    cpu_k = _scale(ranges.cpu_lo, ranges.cpu_hi, policy.cpu_weight)
    # One comprehension of plain attribute reads and float arithmetic: the fastest way
    # through every passing host in CPython.
    scores = [h.free_memory_mib * ram_k + h.free_cpus * cpu_k for h in hosts]
    offset = -(ranges.ram_lo * ram_k + ranges.cpu_lo * cpu_k)

    group = request.group
    if members is not None and group is not None:
        # The raw value is the count of the group's members on the host (minus that count
        # for soft-anti-affinity). Members sit on few hosts: count 0 everywhere else,
        # so only the hosts with members get a score of their own.
        sign = 1 if group.policy == "soft-affinity" else -1
        raw = {i: sign * members[hosts[i].name] for i in ranges.with_members}
        lo = min(raw.values(), default=0)
        hi = max(raw.values(), default=0)
        if len(raw) < len(hosts):  # some host is not in members: raw 0 is among the values
            lo, hi = min(lo, 0), max(hi, 0)
        if hi != lo:
            k = policy.soft_affinity_weight / (hi - lo)
            for i, value in raw.items():
                scores[i] += value * k
            offset -= lo * k
    return scores, offset

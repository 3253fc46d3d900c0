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

from collections.abc import Sequence

from scheduler.model import HostState, Policy, Request

WEIGHERS: tuple[str, ...] = ("RAMWeigher", "CPUWeigher", "ServerGroupSoftAffinityWeigher")


def _scale(values: list[float], multiplier: float) -> tuple[float, float]:
    """(lowest value, factor) so that ``(v - lowest) * factor`` is the weighed, normalised v."""
    lo, hi = min(values), max(values)
    if hi == lo:
        return lo, 0.0
    return lo, multiplier / (hi - lo)


def weigh(hosts: Sequence[HostState], request: Request,
          policy: Policy) -> tuple[list[float], float]:
    """The weights of ``hosts`` (all of which passed the filters), in their order, as
    ``(scores, offset)``: host i's weight is ``scores[i] + offset``.

    The offset is the same for every host, so the pick compares scores alone and the
    offset is added only when weights are shown (a subtraction per host saved: this
    runs over every passing host of every decision).
    """
    if not hosts:
        return [], 0.0
    # Raw values, one list per weigher (list comprehensions of plain attribute reads are
    # the fastest way to pull them out of the HostStates). Each weigher's weighed,
    # normalised value is (raw - lo) * k = raw * k - lo * k.
    ram = [h.free_memory_mib for h in hosts]
    cpu = [h.free_cpus for h in hosts]
    ram_lo, ram_k = _scale(ram, policy.ram_weight)
    cpu_lo, cpu_k = _scale(cpu, policy.cpu_weight)
    scores = [r * ram_k + c * cpu_k for r, c in zip(ram, cpu, strict=True)]
    offset = -(ram_lo * ram_k + cpu_lo * cpu_k)

    group = request.group
    if (policy.soft_affinity_weight and group is not None and group.members_by_host
            and group.policy in ("soft-affinity", "soft-anti-affinity")):
        # The raw value is the count of the group's members on the host (minus that count
        # for soft-anti-affinity). Members sit on few hosts: count 0 everywhere else,
        # so only the hosts with members get a score of their own.
        members = group.members_by_host
        with_members = [i for i, h in enumerate(hosts) if h.name in members]
        sign = 1 if group.policy == "soft-affinity" else -1
        raw = {i: sign * members[hosts[i].name] for i in with_members}
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

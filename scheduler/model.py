"""What the scheduler is given: host states, a request, a server group, a weighing policy.

All of these are frozen dataclasses built by the caller (the service) from its own
records; the scheduler never reads anything else. A placement's claim is fed back by
building a new HostState (``host.claim(request)``), so a decision is a pure function
of its inputs.

Derived capacities are computed once, when a HostState is built, because the
scheduler's hot loop compares them for every host of every decision.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# The vocabulary and Nova's overcommit defaults are the appliance's domain model's
# (plain constants and enums, no I/O): re-exported here for the scheduler's callers.
from appliance.model import (
    DEFAULT_CPU_RATIO,
    DEFAULT_DISK_RATIO,
    DEFAULT_RAM_RATIO,
    GROUP_POLICIES,
    HOST_STATES,
    HostAdminState,
)

# a plain string: compared for every host of every decision
_ENABLED: str = HostAdminState.ENABLED.value

__all__ = [
    "DEFAULT_CPU_RATIO",
    "DEFAULT_DISK_RATIO",
    "DEFAULT_RAM_RATIO",
    "GROUP_POLICIES",
    "HOST_STATES",
    "Group",
    "HostState",
    "Policy",
    "Request",
    "exact_float",
    "label_trait",
]



def label_trait(key: str, value: str) -> str:
    """A label as one string of HostState.traits: "<len(key)>:key=value". The length
    prefix keeps any two different labels apart, even with "=" in a key."""
    return f"{len(str(key))}:{key}={value}"


def exact_float(x: float) -> float:
    """``x`` as a float when that is exact (any int of a sane request), else ``x``.

    The filters compare the request's numbers with the hosts' free capacities, which are
    floats: CPython compares two floats directly (a specialised bytecode), a float with
    an int through the generic comparison, several times slower. Same results either way.
    """
    try:
        f = float(x)
    except OverflowError:
        return x
    return f if f == x else x


# slots=True: the hot loops read a few fields of every host. A slot is read directly;
# without slots, an instance with this many attributes (30 since issue 14's) no longer
# shares its keys with its class in CPython 3.11 but gets a dict of its own, and every
# read was a dict lookup (LOAD_ATTR_WITH_HINT instead of LOAD_ATTR_INSTANCE_VALUE).
@dataclass(frozen=True, slots=True)
class HostState:
    """One host as the scheduler sees it: inventory, overcommit ratios, current claims.

    ``cpus == 0`` or ``memory_mib == 0`` means the inventory is not known yet: such a
    host is rejected by the resource filters ("inventory unknown"), never chosen.
    ``labels`` is read as a mapping and must not be changed after construction.
    """

    name: str
    state: str = _ENABLED  # enabled | disabled | maintenance (HostAdminState)
    up: bool = True
    arch: str = "x86_64"
    cpus: int = 0  # physical CPUs
    memory_mib: int = 0  # physical RAM
    disk_gib: float = 0.0  # storage where VM disks go
    cpu_ratio: float = DEFAULT_CPU_RATIO
    ram_ratio: float = DEFAULT_RAM_RATIO
    disk_ratio: float = DEFAULT_DISK_RATIO
    reserved_memory_mib: int = 0  # kept for the host itself (nova's reserved_host_memory_mb)
    allocated_cpus: int = 0  # sums over the VMs placed here (claims)
    allocated_memory_mib: int = 0
    allocated_disk_gib: float = 0.0
    # hash=False: a dict is not hashable, the rest of the host still is.
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    storage: str = ""  # storage the host sees for VM disks ("" = its own local storage)
    # Dedicated CPUs (Nova's cpu_dedicated_set): kept out of the shared capacity,
    # one vCPU of a dedicated VM each, never overcommitted.
    dedicated_cpus: int = 0
    allocated_dedicated_cpus: int = 0
    hugepages_mib: float = 0.0  # the host's 2 MiB hugepages, in MiB
    allocated_hugepages_mib: float = 0.0  # claimed by VMs with hugepages placed here

    # -- derived in __post_init__ (not constructor arguments) --------------------------------
    capacity_cpus: float = field(init=False, repr=False, compare=False)
    capacity_memory_mib: float = field(init=False, repr=False, compare=False)
    capacity_disk_gib: float = field(init=False, repr=False, compare=False)
    free_cpus: float = field(init=False, repr=False, compare=False)
    free_memory_mib: float = field(init=False, repr=False, compare=False)
    free_disk_gib: float = field(init=False, repr=False, compare=False)
    free_dedicated_cpus: int = field(init=False, repr=False, compare=False)
    free_hugepages_mib: float = field(init=False, repr=False, compare=False)
    # True when ComputeFilter passes and the CPU/RAM inventory is known: the fast path
    # of the filters tests this one flag instead of four attributes.
    usable: bool = field(init=False, repr=False, compare=False)
    # free_cpus when usable, else -inf (below any request): the fast loop
    # (scheduler.partition) tests usable and CoreFilter's capacity with one comparison;
    # a test fewer for every host of every decision (~100 instructions each, callgrind).
    usable_free_cpus: float = field(init=False, repr=False, compare=False)
    # The labels as one frozenset of strings (label_trait), so that the filters test a
    # node selector with one subset test. Strings, not (key, value) tuples, because a
    # str caches its hash: the test is ~1.5x faster.
    traits: frozenset[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        cap_cpus = (self.cpus - self.dedicated_cpus) * self.cpu_ratio
        cap_mem = self.memory_mib * self.ram_ratio - self.reserved_memory_mib
        cap_disk = self.disk_gib * self.disk_ratio
        # A frozen dataclass only lets __post_init__ set fields through object.__setattr__.
        set_ = object.__setattr__
        set_(self, "capacity_cpus", cap_cpus)
        set_(self, "capacity_memory_mib", cap_mem)
        set_(self, "capacity_disk_gib", cap_disk)
        set_(self, "free_cpus", cap_cpus - self.allocated_cpus)
        set_(self, "free_memory_mib", cap_mem - self.allocated_memory_mib)
        set_(self, "free_disk_gib", cap_disk - self.allocated_disk_gib)
        set_(self, "free_dedicated_cpus", self.dedicated_cpus - self.allocated_dedicated_cpus)
        set_(self, "free_hugepages_mib", self.hugepages_mib - self.allocated_hugepages_mib)
        usable = self.state == _ENABLED and self.up and self.cpus > 0 and self.memory_mib > 0
        set_(self, "usable", usable)
        set_(self, "usable_free_cpus", cap_cpus - self.allocated_cpus if usable else -math.inf)
        set_(self, "traits", frozenset([label_trait(k, v) for k, v in self.labels.items()]))

    @property
    def storage_name(self) -> str:
        """The storage this host sees: its shared storage, or its local one named after it."""
        return self.storage or self.name

    def claim(self, request: Request) -> HostState:
        """This host after placing ``request`` on it (allocations added)."""
        return dataclasses.replace(
            self,
            allocated_cpus=self.allocated_cpus + request.cpus,
            allocated_memory_mib=self.allocated_memory_mib + request.memory_mib,
            allocated_disk_gib=self.allocated_disk_gib + request.disk_gib,
            allocated_dedicated_cpus=self.allocated_dedicated_cpus + request.dedicated_cpus,
            allocated_hugepages_mib=self.allocated_hugepages_mib + request.hugepages_mib,
        )


@dataclass(frozen=True)
class Group:
    """A server group: ``members_by_host`` counts the OTHER members on each host now."""

    name: str
    policy: str  # affinity | anti-affinity | soft-affinity | soft-anti-affinity
    members_by_host: Mapping[str, int] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if self.policy not in GROUP_POLICIES:
            raise ValueError(f"group {self.name!r}: unknown policy {self.policy!r} "
                             f"(one of {', '.join(GROUP_POLICIES)})")

    @property
    def hosts(self) -> frozenset[str]:
        """Hosts where the group has at least one member."""
        return frozenset(h for h, n in self.members_by_host.items() if n > 0)

    def with_member(self, host: str) -> Group:
        """This group after one more member was placed on ``host``."""
        members = dict(self.members_by_host)
        members[host] = members.get(host, 0) + 1
        return dataclasses.replace(self, members_by_host=members)


@dataclass(frozen=True)
class Request:
    """What is to be placed: one VM's needs and constraints."""

    vm: str  # VM name, for the explanation
    cpus: int
    memory_mib: int
    disk_gib: float = 0.0
    arch: str | None = None  # None = any
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    group: Group | None = None
    ignore_hosts: frozenset[str] = frozenset()  # e.g. a migration's source host
    # why an ignored host is (its name -> the reason the explanation gives); a host
    # without one is "excluded by the request"
    ignore_reasons: Mapping[str, str] = field(default_factory=dict, hash=False)
    only_hosts: frozenset[str] | None = None  # a migration's requested target(s)
    storage: str | None = None  # disks live there: the host must see it (HostState.storage_name)
    dedicated_cpus: int = 0  # vCPUs each wanting a dedicated host CPU (then `cpus` is 0)
    hugepages_mib: int = 0  # memory backed by hugepages (also counted in memory_mib)


@dataclass(frozen=True)
class Policy:
    """How passing hosts are weighed and picked.

    A weight > 0 prefers the host with the most free RAM / vCPUs (spread); < 0 prefers
    the fullest (pack). ``subset_size`` is nova's host_subset_size: the pick is random
    among the best that many hosts; hosts tied at the top are always picked at random.
    """

    ram_weight: float = 1.0
    cpu_weight: float = 1.0
    soft_affinity_weight: float = 1.0
    subset_size: int = 1

    def __post_init__(self) -> None:
        if self.subset_size < 1:
            raise ValueError(f"subset_size must be >= 1, not {self.subset_size}")

    @classmethod
    def spread(cls, **overrides: Any) -> Policy:
        """Prefer the emptiest host (nova's default)."""
        return cls(**{"ram_weight": 1.0, "cpu_weight": 1.0, **overrides})

    @classmethod
    def pack(cls, **overrides: Any) -> Policy:
        """Prefer the fullest host that still fits, keeping other hosts empty."""
        return cls(**{"ram_weight": -1.0, "cpu_weight": -1.0, **overrides})

    @classmethod
    def named(cls, mode: str, **overrides: Any) -> Policy:
        """``Policy.named("spread")`` / ``Policy.named("pack")``, for configuration files."""
        if mode not in ("spread", "pack"):
            raise ValueError(f"placement mode must be 'spread' or 'pack', not {mode!r}")
        return cls.spread(**overrides) if mode == "spread" else cls.pack(**overrides)

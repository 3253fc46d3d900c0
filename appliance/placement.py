"""From the store to the scheduler and back: host states, requests and claims.

The scheduler (scheduler/) is pure; this module reads what it needs from the
store and must be called inside the transaction that records the decision.
A VM's claim on a host is its `host` column, plus, while it migrates or moves,
the target named by its open operation. Its disks are claimed always; its vCPUs
and memory only while it is active (`claims_cpu_ram`): desired running or
paused, or still running, starting, stopping or migrating. A stopped VM keeps
its host and its disks but not its CPUs and RAM (KubeVirt's, Incus's and
Proxmox's rule); its spec's `reserve_when_stopped: true` keeps them claimed
(Nova's rule: an instance keeps its allocation until it is shelved). A start
therefore claims, inside the transaction that records it (service.set_state). Since
every writer holds SQLite's write lock (BEGIN IMMEDIATE) from reading the allocations
to recording the claim, two concurrent placements cannot both take the last free slot
on a host.
"""
from __future__ import annotations

import random
from collections.abc import Mapping

from appliance.access.principal import DEFAULT_PROJECT
from appliance.config import Config
from appliance.metadata import reach
from appliance.metrics_scheduler import timed_placement
from appliance.model import (
    DEFAULT_CPU_RATIO,
    DEFAULT_DISK_RATIO,
    DEFAULT_RAM_RATIO,
    HostAdminState,
)
from appliance.model.cpu import HOST_LABEL, hugepages_of, is_dedicated, parse_cpuset

# Desired and observed states in which a VM holds its vCPUs and memory; a
# shelved VM claims nothing on the host its record names (where its disks stay,
# defined nowhere), not even with reserve_when_stopped (Nova's rule: an instance
# keeps its allocation until it is shelved), its unshelve claims the host the
# scheduler chose, through its operation, as a move does; a suspended VM's
# memory lies in a file on its host (libvirt's managed save): its disk claim
# counts it, while its RAM is free. In model/states.py: the store's triggers
# keep the per-host totals with this rule (store/claims.py).
from appliance.model.states import (  # noqa: F401 - re-exported: the rule's names here
    CLAIMING_DESIRED_STATES,
    CLAIMING_OBSERVED_STATES,
    SAVED_OBSERVED_STATES,
    UNPLACED_OBSERVED_STATES,
)
from appliance.store import Store
from scheduler import Decision, Group, HostState, Policy, Request, schedule

GIB = 1024 ** 3
# Hosts with this storage see the appliance's own folders (images, VM disks) at
# the same paths; any other name is storage of their own, reached through libvirt.
APPLIANCE_STORAGE = "shared"
# The architecture of the guests the domain builder makes (appliance/virt/domain.py).
GUEST_ARCH = "x86_64"


def guest_arch(info: dict) -> str:
    """What the host offers ArchFilter: GUEST_ARCH when its QEMU can run such
    guests (natively or emulated), else its own architecture. An inventory
    recorded before the guest architectures were (older store) counts as able."""
    arches = info.get("guest_arches")
    if arches is None or GUEST_ARCH in arches:
        return GUEST_ARCH
    return info.get("arch") or ""

def claims_cpu_ram(row: dict, spec: dict | None = None) -> bool:
    """Whether this VM (a store row; `spec` instead of the row's) holds vCPUs and
    memory on its host. The same rule the store's per-host totals keep (host_claims),
    which count besides a VM that an operation is booting (ServiceBase._claims_cpu_ram)."""
    spec = row["spec"] if spec is None else spec
    if row["observed_state"] in UNPLACED_OBSERVED_STATES:
        return False
    return (row["desired_state"] in CLAIMING_DESIRED_STATES
            or row["observed_state"] in CLAIMING_OBSERVED_STATES
            or bool(spec.get("reserve_when_stopped")))


# Soft (anti-)affinity outweighs the free-RAM and free-CPU weighers together
# (each at most 1.0 after normalisation): a soft policy is kept whenever the
# filters allow it. Nova's multiplier of 1.0 lets spreading override
# soft-affinity, a known surprise for its users.
SOFT_AFFINITY_WEIGHT = 3.0


def policy(config: Config) -> Policy:
    sign = -1.0 if config.placement == "pack" else 1.0
    return Policy(ram_weight=sign, cpu_weight=sign, soft_affinity_weight=SOFT_AFFINITY_WEIGHT,
                  subset_size=max(1, config.host_subset_size))


def allocations(store: Store) -> dict[str, list[float]]:
    """host -> [vCPUs, MiB, disk bytes] claimed by the VMs placed there or moving there.

    The one computation of claims: the scheduler's host states, GET /v1/hosts,
    hosts/NAME/allocated and the exporter's allocation families all read it.
    The store keeps the totals with the rule claims_cpu_ram states for one VM
    (store/claims.py): O(hosts), not O(VMs)."""
    return {host: claims[:3] for host, claims in store.host_claims().items()}


def vms_by_host(store: Store) -> dict[str, int]:
    """host -> how many VMs are placed there, running or not."""
    return store.vms_by_host()


def host_is_up(host: dict, now: float, heartbeat_age: float) -> bool:
    return (
        bool(host["up"])
        and host["last_seen"] is not None
        and now - host["last_seen"] < heartbeat_age
    )


def pinning_allocations(store: Store) -> dict[str, list[float]]:
    """host -> [dedicated vCPUs, hugepage MiB] claimed there (part of allocations())."""
    return {host: claims[3:5] for host, claims in store.host_claims().items()}


def dedicated_set(host: dict) -> tuple[int, ...]:
    """The host CPUs kept for dedicated VMs (hosts.cpu_dedicated_set)."""
    return parse_cpuset(host.get("cpu_dedicated_set") or "")


def host_states(store: Store, now: float, heartbeat_age: float) -> list[HostState]:
    claimed = store.host_claims()  # one read for both: allocations() and pinning_allocations()
    states = []
    for host in store.list_hosts():
        info = host["info"] or {}
        cpus, memory, disk, dedicated, hugepages = claimed.get(host["name"], (0, 0, 0, 0, 0))
        states.append(
            HostState(
                name=host["name"],
                state=host["state"] or HostAdminState.ENABLED,
                up=host_is_up(host, now, heartbeat_age),
                arch=guest_arch(info),
                cpus=int(info.get("cpus") or 0),
                memory_mib=int(info.get("memory_mib") or 0),
                disk_gib=float(info.get("disk_bytes") or 0) / GIB,
                cpu_ratio=host["cpu_ratio"] or DEFAULT_CPU_RATIO,
                ram_ratio=host["ram_ratio"] or DEFAULT_RAM_RATIO,
                disk_ratio=host["disk_ratio"] or DEFAULT_DISK_RATIO,
                reserved_memory_mib=int(host["reserved_memory_mib"] or 0),
                allocated_cpus=int(cpus - dedicated),  # the shared vCPUs
                allocated_memory_mib=int(memory),
                allocated_disk_gib=disk / GIB,
                # every host answers to its own name (a VM pinned to one host)
                labels={**(host["labels"] or {}), HOST_LABEL: host["name"]},
                storage=host["storage"] or "",
                # ids beyond the host's CPUs (set before its inventory was known) count not
                dedicated_cpus=len([c for c in dedicated_set(host)
                                    if c < int(info.get("cpus") or 0)]),
                allocated_dedicated_cpus=int(dedicated),
                hugepages_mib=float(info.get("hugepages_mib") or 0),
                allocated_hugepages_mib=float(hugepages),
            )
        )
    return states


def disk_bytes(store: Store, spec: dict) -> int:
    disks = sum(d["size"] for d in spec["disks"]) * 1024 * 1024
    return store.image_virtual_size(spec["image"]) + disks


def group_of(store: Store, spec: dict, vm_id: str | None, project: str) -> Group | None:
    """The server group the spec names: the VM's project's group of that name."""
    name = spec.get("group")
    if not name:
        return None
    group = store.get_group(project, name)
    # A member on its way somewhere counts there too.
    members = store.group_members_by_host(name, vm_id, project)
    return Group(name=name, policy=group["policy"], members_by_host=members)


@timed_placement
def place(store: Store, config: Config, spec: dict, vm_id: str | None, now: float,
          ignore_hosts: frozenset[str] = frozenset(), only_hosts: frozenset[str] | None = None,
          storage: str | None = None, rng: random.Random | None = None, cpu_ram: bool = True,
          disk: bool = True, project: str = DEFAULT_PROJECT,
          ignore_reasons: Mapping[str, str] | None = None) -> Decision:
    """One scheduling decision for a VM of this spec; the caller records the claim.

    `cpu_ram` False places a VM that will not claim vCPUs and memory there (a
    stopped one, see claims_cpu_ram): only its disks must fit. `disk` False
    asks for vCPUs and memory alone, on a host that holds its disks already.
    `project`: the VM's, whose server group the spec's `group` names."""
    dedicated = is_dedicated(spec)
    if reach.wants_it(spec):  # only on a host whose guests the metadata service reaches
        far = reach.unserved(config, store.list_hosts())
        ignore_hosts = ignore_hosts | far.keys()
        ignore_reasons = {**{h: f"{reach.FIELD} metadata: {why}" for h, why in far.items()},
                          **(ignore_reasons or {})}
    request = Request(
        vm=spec["name"],
        cpus=spec["cpus"] if cpu_ram and not dedicated else 0,
        dedicated_cpus=spec["cpus"] if cpu_ram and dedicated else 0,
        hugepages_mib=spec["memory"] if cpu_ram and hugepages_of(spec) else 0,
        memory_mib=spec["memory"] if cpu_ram else 0,
        disk_gib=disk_bytes(store, spec) / GIB if disk else 0.0,
        arch=GUEST_ARCH,
        node_selector=spec.get("node_selector") or {},
        group=group_of(store, spec, vm_id, project),
        ignore_hosts=ignore_hosts,
        ignore_reasons=ignore_reasons or {},
        only_hosts=only_hosts,
        storage=storage,
    )
    return schedule(host_states(store, now, config.heartbeat_age), request, policy(config), rng)


def place_start(store: Store, config: Config, row: dict, now: float) -> Decision:
    """Where a VM that holds no vCPUs and memory yet (see claims_cpu_ram) can
    start: its own host when they fit there; else the host the scheduler picks
    among those that see the storage its disks are on (the record then follows,
    as for a VM whose host is gone). When none fits, the decision names every
    host's reason, its own included; its other constraints (node selector,
    group, arch) pin it as they did at create."""
    project = row.get("project") or DEFAULT_PROJECT
    own = place(
        store, config, row["spec"], row["id"], now, only_hosts=frozenset([row["host"]]), disk=False,
        project=project,
    )
    if own.host is not None:
        return own
    host = store.get_host(row["host"])
    return place(
        store, config, row["spec"], row["id"], now, storage=host["storage"] or host["name"],
        project=project,
    )

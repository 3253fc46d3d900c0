"""The filters: which hosts can take a request, and why the others cannot.

The filters run in the order of ``FILTERS``; a rejected host is reported with the
FIRST filter it fails. ``first_failures(hosts, request)`` is the definition, host by
host: an if-chain, one test per filter, giving the index of the first failing filter
or None. A decision does not run it on every host: ``scheduler.partition`` finds the
passing hosts in one fast loop (the unit tests check that the two agree on random
hosts), and only the hosts it rejects go through ``first_failures``.

The human text of a rejection (``reason``), with numbers, is written only when asked.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

from appliance.model import HostAdminState
from scheduler.model import HostState, Request, exact_float, label_trait

# Plain strings for the hot loop (an enum member is a class attribute lookup each time).
_ENABLED: str = HostAdminState.ENABLED.value
_MAINTENANCE: str = HostAdminState.MAINTENANCE.value


def _num(x: float) -> str:
    """A number for a message: 12288.0 -> '12288', 1.5 -> '1.5', 0.1 + 0.2 -> '0.3'."""
    if isinstance(x, float):
        if x.is_integer():
            return str(int(x))
        return f"{x:.2f}".rstrip("0").rstrip(".")
    return str(x)


# -- ComputeFilter ------------------------------------------------------------------------------
def _compute_reason(h: HostState, r: Request) -> str:
    if h.state == _MAINTENANCE:
        return "host is in maintenance"
    if h.state != _ENABLED:
        return f"host is {h.state}"  # "host is disabled"
    return "host is down"


# -- RequestedHostFilter ------------------------------------------------------------------------
def _requested_reason(h: HostState, r: Request) -> str:
    if h.name in r.ignore_hosts:
        return r.ignore_reasons.get(h.name) or \
            "host is excluded by the request (e.g. a migration's source)"
    wanted = ", ".join(sorted(r.only_hosts or ())) or "none"
    return f"not the requested host (requested: {wanted})"


# -- ArchFilter ---------------------------------------------------------------------------------
def _arch_reason(h: HostState, r: Request) -> str:
    return f"host is {h.arch}, VM needs {r.arch}"


# -- LabelsFilter (node selector) ---------------------------------------------------------------
def _labels_reason(h: HostState, r: Request) -> str:
    wrong = []
    for key, want in sorted(r.node_selector.items()):
        have = h.labels.get(key)
        if have is None:
            wrong.append(f"label {key}={want} missing")
        elif have != want:
            wrong.append(f"label {key} is {have!r}, wanted {want!r}")
    # The filter compares labels as text (HostState.traits), this the objects: values equal
    # as objects but not as text (True vs 1) are rejected with nothing found above.
    return ", ".join(wrong) or "labels do not match the node selector"


# -- StorageFilter ------------------------------------------------------------------------------
def _storage_reason(h: HostState, r: Request) -> str:
    sees = f"storage {h.storage!r}" if h.storage else "only its local storage"
    return f"host sees {sees}, the VM's disks are on {r.storage!r}"


# -- CoreFilter, RamFilter, DiskFilter (capacity after overcommit) -----------------------------
def _core_reason(h: HostState, r: Request) -> str:
    if h.cpus <= 0:
        return "inventory unknown (host reports 0 CPUs)"
    return (f"needs {r.cpus} vCPUs, {_num(h.free_cpus)} free of {_num(h.capacity_cpus)} "
            f"({h.cpus} CPUs x ratio {_num(h.cpu_ratio)})")


def _ram_reason(h: HostState, r: Request) -> str:
    if h.memory_mib <= 0:
        return "inventory unknown (host reports 0 MiB of RAM)"
    reserved = f" - {h.reserved_memory_mib} MiB reserved" if h.reserved_memory_mib else ""
    return (f"needs {r.memory_mib} MiB, {_num(h.free_memory_mib)} MiB free of "
            f"{_num(h.capacity_memory_mib)} MiB ({h.memory_mib} MiB x ratio "
            f"{_num(h.ram_ratio)}{reserved})")


def _disk_reason(h: HostState, r: Request) -> str:
    if h.disk_gib <= 0:
        return f"needs {_num(r.disk_gib)} GiB, inventory unknown (host reports 0 GiB of disk)"
    return (f"needs {_num(r.disk_gib)} GiB, {_num(h.free_disk_gib)} GiB free of "
            f"{_num(h.capacity_disk_gib)} GiB ({_num(h.disk_gib)} GiB x ratio "
            f"{_num(h.disk_ratio)})")


# -- ServerGroupAffinityFilter, ServerGroupAntiAffinityFilter -----------------------------------
def _affinity_reason(h: HostState, r: Request) -> str:
    g = r.group
    assert g is not None  # noqa: S101 - narrows the type; the filter runs only for requests with a group
    return (f"group {g.name} (affinity) has its members on {', '.join(sorted(g.hosts))}, "
            "not here")


def _anti_affinity_reason(h: HostState, r: Request) -> str:
    g = r.group
    assert g is not None  # noqa: S101 - narrows the type; the filter runs only for requests with a group
    n = g.members_by_host.get(h.name, 0)
    return f"group {g.name} (anti-affinity) already has {n} member{'s' if n != 1 else ''} here"


# The order is the order of evaluation and of reporting.
# -- DedicatedCpuFilter (Nova's cpu_policy=dedicated: no overcommit) ---------------------------
def _dedicated_reason(h: HostState, r: Request) -> str:
    if h.dedicated_cpus <= 0:
        return (f"needs {r.dedicated_cpus} dedicated CPUs, the host has none "
                "(its cpu_dedicated_set is empty)")
    return (f"needs {r.dedicated_cpus} dedicated CPUs, {h.free_dedicated_cpus} free of "
            f"{h.dedicated_cpus} (dedicated CPUs are not overcommitted)")


# -- HugepagesFilter ----------------------------------------------------------------------------
def _hugepages_reason(h: HostState, r: Request) -> str:
    if h.hugepages_mib <= 0:
        return f"needs {r.hugepages_mib} MiB of hugepages, the host has none"
    return (f"needs {r.hugepages_mib} MiB of hugepages, {_num(h.free_hugepages_mib)} MiB free "
            f"of {_num(h.hugepages_mib)} MiB")


FILTERS: tuple[str, ...] = (
    "ComputeFilter",  # 0: state "enabled" and up
    "RequestedHostFilter",  # 1: not in ignore_hosts; in only_hosts when given
    "ArchFilter",  # 2
    "LabelsFilter",  # 3: every node_selector key=value among the host's labels
    "StorageFilter",  # 4: the host sees the storage the disks are on
    "CoreFilter",  # 5: vCPUs after overcommit; inventory known
    "RamFilter",  # 6: RAM after overcommit and reservation; inventory known
    "DiskFilter",  # 7: disk after overcommit
    "ServerGroupAffinityFilter",  # 8: policy affinity: on a host of the group, if any
    "ServerGroupAntiAffinityFilter",  # 9: policy anti-affinity: not on a host of the group
    "DedicatedCpuFilter",  # 10: free dedicated host CPUs for a dedicated VM's vCPUs
    "HugepagesFilter",  # 11: free hugepages for a VM backed by them
)

# The text of each filter's rejection, in the order of FILTERS.
REASONS: tuple[Callable[[HostState, Request], str], ...] = (
    _compute_reason, _requested_reason, _arch_reason, _labels_reason, _storage_reason,
    _core_reason, _ram_reason, _disk_reason, _affinity_reason, _anti_affinity_reason,
    _dedicated_reason, _hugepages_reason,
)


def first_failures(hosts: Sequence[HostState], r: Request) -> list[int | None]:
    """For each host, the index in FILTERS of the first filter it fails for request ``r``,
    or None if it passes them all. This if-chain is the definition of the filters.

    The request's parts are read once, before the loop over the hosts, and a filter the
    request does not use is skipped by testing a local first (``requested``, ``selector``,
    ``anti_affinity``...): a test of a local is much cheaper than an ``in`` on an empty set.
    """
    ignore, only, arch, storage = r.ignore_hosts, r.only_hosts, r.arch, r.storage
    requested = bool(ignore) or only is not None
    # The selector as label traits: a host matches when they are among its traits. One
    # label (the usual selector) is tested with `in`, cheaper than a subset test.
    selector = frozenset(label_trait(k, v) for k, v in r.node_selector.items())
    single = len(selector) == 1
    label = next(iter(selector)) if single else ""
    # As floats when exact, like the hosts' free capacities (model.exact_float: faster).
    c, m, d = exact_float(r.cpus), exact_float(r.memory_mib), exact_float(r.disk_gib)
    any_disk = d > 0
    dedicated, hugepages = r.dedicated_cpus, r.hugepages_mib
    g = r.group
    affinity = g.hosts if g is not None and g.policy == "affinity" else frozenset()
    anti_affinity = g.hosts if g is not None and g.policy == "anti-affinity" else frozenset()
    out: list[int | None] = []
    for h in hosts:
        if h.state != _ENABLED or not h.up:
            out.append(0)  # ComputeFilter
        elif requested and (h.name in ignore or (only is not None and h.name not in only)):
            out.append(1)  # RequestedHostFilter
        elif arch is not None and h.arch != arch:
            out.append(2)  # ArchFilter
        elif selector and not (label in h.traits if single else selector <= h.traits):
            out.append(3)  # LabelsFilter
        elif storage is not None and h.storage_name != storage:
            out.append(4)  # StorageFilter
        elif h.cpus <= 0 or h.free_cpus < c:
            out.append(5)  # CoreFilter
        elif h.memory_mib <= 0 or h.free_memory_mib < m:
            out.append(6)  # RamFilter
        elif any_disk and h.free_disk_gib < d:
            out.append(7)  # DiskFilter
        elif affinity and h.name not in affinity:
            out.append(8)  # ServerGroupAffinityFilter (no member yet: anywhere)
        elif anti_affinity and h.name in anti_affinity:
            out.append(9)  # ServerGroupAntiAffinityFilter
        elif dedicated > 0 and h.free_dedicated_cpus < dedicated:
            out.append(10)  # DedicatedCpuFilter
        elif hugepages > 0 and h.free_hugepages_mib < hugepages:
            out.append(11)  # HugepagesFilter
        else:
            out.append(None)
    return out


def first_failure(host: HostState, request: Request) -> int | None:
    """``first_failures`` for one host."""
    return first_failures((host,), request)[0]


def reason(index: int, host: HostState, request: Request) -> str:
    """The text for a rejection by filter ``FILTERS[index]``."""
    return REASONS[index](host, request)

"""What a VM's domain gets from its host's CPUs (issue 14, part F): the
cluster's CPU model, the host's shared CPUs, and for a dedicated VM the host
CPUs its vCPUs are pinned to (chosen here, recorded in vms.pinned_cpus).

The scheduler counts dedicated CPUs per host; the concrete CPUs are chosen
when the VM is defined on its host, in one store transaction (SQLite's write
lock), among the host's dedicated set minus those pinned by the other VMs that
claim their vCPUs there (placement.claims_cpu_ram): a stopped, deleted or
migrated-away VM's pins therefore count no more."""
from __future__ import annotations

import dataclasses

from appliance import placement
from appliance.controller.cluster_cpu import cluster_cpu_xml
from appliance.controller.context import Context
from appliance.errors import Failed, Invalid
from appliance.model.cpu import cpuset_text, is_dedicated, parse_cpuset
from appliance.virt.domain import DomainPlan


def _pinned(row: dict) -> tuple[int, ...]:
    try:
        return parse_cpuset(row.get("pinned_cpus") or "")
    except Invalid:  # not ours to judge here: such pins count as none
        return ()


def fill(ctx: Context, row: dict, host: str, plan: DomainPlan) -> DomainPlan:
    """The plan for `row` on `host`, with its CPU model and pinning."""
    store = ctx.store
    with store.transaction():
        host_row = store.get_host(host)
        cpus = int((host_row["info"] or {}).get("cpus") or 0)
        dedicated = tuple(c for c in placement.dedicated_set(host_row) if c < cpus)
        shared = tuple(c for c in range(cpus) if c not in dedicated) if dedicated else None
        pinned = None
        if is_dedicated(row["spec"]):
            pinned = _choose(ctx, row, host, dedicated)
    return dataclasses.replace(plan, cluster_cpu=cluster_cpu_xml(store), pinned_cpus=pinned,
                               shared_cpus=shared)


def _choose(ctx: Context, row: dict, host: str, dedicated: tuple[int, ...]) -> tuple[int, ...]:
    """N free dedicated CPUs for the VM's N vCPUs (its own pins kept when still valid)."""
    wanted = int(row["spec"]["cpus"])
    taken: set[int] = set()
    for other in ctx.store.vms_on_host(host):
        if other["id"] != row["id"] and placement.claims_cpu_ram(other):
            taken.update(_pinned(other))
    free = [c for c in dedicated if c not in taken]
    own = _pinned(row)
    if row.get("host") == host and len(own) == wanted and set(own) <= set(free):
        return own
    if len(free) < wanted:
        raise Failed(f"host {host} has {len(free)} free dedicated CPUs of "
                     f"{len(dedicated)}; the VM needs {wanted}")
    chosen = tuple(free[:wanted])
    ctx.store.update_vm(row["id"], bump=False, pinned_cpus=cpuset_text(chosen))
    return chosen

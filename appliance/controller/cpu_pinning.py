"""What a VM's domain gets from its host's CPUs (issue 14, part F): the
cluster's CPU model, the host's shared CPUs, and for a dedicated VM the host
CPUs its vCPUs are pinned to (chosen here, recorded in vms.pinned_cpus).

The scheduler counts dedicated CPUs per host; the concrete CPUs are chosen
when the VM is defined on its host, in one store transaction (SQLite's write
lock), among the host's dedicated set minus those pinned by the other VMs that
claim their vCPUs there (placement.claims_cpu_ram), are suspended there (the
saved domain resumes with its pins) or migrate there now: a stopped, deleted
or migrated-away VM's pins therefore count no more.

A live migration gives the target its own pins (for_migration): chosen there
in one transaction as at define time, kept in the operation's params (the
claim while it runs; a re-run after a crash keeps them) and recorded in
vms.pinned_cpus when the guest has moved. The domain's XML is re-pinned for
the target (virt/cpu_xml.repin, libvirt's VIR_MIGRATE_PARAM_DEST_XML)."""
from __future__ import annotations

import dataclasses

from appliance import placement
from appliance.controller.cluster_cpu import cluster_cpu_xml
from appliance.controller.context import Context
from appliance.errors import Failed, Invalid
from appliance.model import VMState
from appliance.model.cpu import cpuset_text, is_dedicated, parse_cpuset
from appliance.virt.domain import DomainPlan
from appliance.virt.driver import CpuPins


def _parsed(text: str | None) -> tuple[int, ...]:
    try:
        return parse_cpuset(text or "")
    except Invalid:  # not ours to judge here: such pins count as none
        return ()


def _pinned(row: dict) -> tuple[int, ...]:
    return _parsed(row.get("pinned_cpus"))


def _host_cpus(host_row: dict) -> tuple[tuple[int, ...], tuple[int, ...] | None]:
    """(dedicated, shared) CPUs of a host; shared None: it has no dedicated set."""
    cpus = int((host_row["info"] or {}).get("cpus") or 0)
    dedicated = tuple(c for c in placement.dedicated_set(host_row) if c < cpus)
    shared = tuple(c for c in range(cpus) if c not in dedicated) if dedicated else None
    return dedicated, shared


def fill(ctx: Context, row: dict, host: str, plan: DomainPlan) -> DomainPlan:
    """The plan for `row` on `host`, with its CPU model and pinning."""
    store = ctx.store
    with store.transaction():
        dedicated, shared = _host_cpus(store.get_host(host))
        pinned = None
        if is_dedicated(row["spec"]):
            own = _pinned(row) if row.get("host") == host else ()
            pinned = _choose(ctx, row, host, dedicated, own)
            if pinned != own:
                store.update_vm(row["id"], bump=False, pinned_cpus=cpuset_text(pinned))
    return dataclasses.replace(plan, cluster_cpu=cluster_cpu_xml(store), pinned_cpus=pinned,
                               shared_cpus=shared)


def for_migration(ctx: Context, op: dict, row: dict) -> CpuPins:
    """The target's pins for a live migration of `row` (op["params"]["target"]).
    A dedicated VM gets free dedicated CPUs there, recorded in the operation's
    params as "pinned_cpus" (refused with the reason when the target has too
    few); a shared VM the target's shared CPUs (None: the target pins nothing)."""
    target = op["params"]["target"]
    store = ctx.store
    with store.transaction():
        dedicated, shared = _host_cpus(store.get_host(target))
        if not is_dedicated(row["spec"]):
            return CpuPins(None, shared)
        kept = _parsed(op["params"].get("pinned_cpus"))
        pinned = _choose(ctx, row, target, dedicated, kept)
        store.update_operation(op["id"], params={**op["params"],
                                                 "pinned_cpus": cpuset_text(pinned)})
    op["params"]["pinned_cpus"] = cpuset_text(pinned)
    return CpuPins(pinned, shared)


def _choose(ctx: Context, row: dict, host: str, dedicated: tuple[int, ...],
            own: tuple[int, ...]) -> tuple[int, ...]:
    """N free dedicated CPUs of `host` for the VM's N vCPUs (`own`, its pins
    there already, kept when still valid). Runs in the caller's transaction."""
    wanted = int(row["spec"]["cpus"])
    taken: set[int] = set()
    for other in ctx.store.vms_on_host(host):
        # A suspended VM claims nothing, but its saved domain resumes with its pins.
        if other["id"] != row["id"] and (placement.claims_cpu_ram(other)
                                         or other["observed_state"] == VMState.SUSPENDED):
            taken.update(_pinned(other))
    for vm_id, pins in ctx.store.pins_moving_to(host).items():  # migrating here now
        if vm_id != row["id"]:
            taken.update(_parsed(pins))
    free = [c for c in dedicated if c not in taken]
    if len(own) == wanted and set(own) <= set(free):
        return own
    if len(free) < wanted:
        raise Failed(f"host {host} has {len(free)} free dedicated CPUs of "
                     f"{len(dedicated)}; the VM needs {wanted}")
    return tuple(free[:wanted])

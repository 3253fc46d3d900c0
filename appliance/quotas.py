"""Project quotas: what a limit may be, what a project uses, and the check a
create or a growing change must pass.

What counts: every VM of the project that exists and whose deletion has not
been asked for, running or stopped (as Nova counts instances: a stopped VM
keeps its disks and may start at any time, so a start never needs a check,
and what a quota promises the admin is a ceiling on what the project *has*).
A VM being deleted no longer counts: its deletion cannot be undone, and the
host keeps its claim (the scheduler's, not the quota's) until it is gone.

  vms         how many VMs
  cpus        the sum of their vCPUs
  memory_mib  the sum of their memory, MiB
  disk_gib    the sum of their disks, GiB: the image's virtual size plus the
              extra blank disks (as the scheduler claims them on a host)

A limit is null (unlimited, the default) or a whole number from 0. The check
runs inside the caller's transaction (BEGIN IMMEDIATE: SQLite's write lock is
held from the usage query to the insert), so concurrent creates in any number
of processes cannot overshoot a limit. A limit lowered below the usage is
accepted (the admin's choice); it refuses every create and every growth of
the resource until the usage is back under it, and says so.
"""
from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from appliance.errors import Conflict, Invalid
from appliance.jsonio import shown
from appliance.model.values import parse_size_mib
from appliance.store import Store

RESOURCES = ("vms", "cpus", "memory_mib", "disk_gib")
GIB = 1024 ** 3
MIB = 1024 ** 2
# The largest limit of each resource (far above any appliance; keeps them exact
# in SQLite's 64-bit integers and in Prometheus's doubles).
MAX_LIMITS = {"vms": 1_000_000, "cpus": 100_000_000, "memory_mib": 2 ** 40, "disk_gib": 2 ** 30}
UNITS = {"vms": "VMs", "cpus": "vCPUs", "memory_mib": "MiB of memory", "disk_gib": "GiB of disk"}
_DIGITS = re.compile(r"\s*[0-9]{1,12}\s*")

Usage = dict[str, int]
Quota = dict[str, int | None]


def parse_limit(resource: str, value: Any) -> int | None:
    """One limit: null is unlimited; vms and cpus a whole number; memory_mib a
    size as the spec takes it (2048, "512M", "16G"; a bare number is MiB);
    disk_gib a whole number of GiB, or a size in whole GiB ("200G", "1T")."""
    field = f"quota.{resource}"
    if value is None:
        return None
    top = MAX_LIMITS[resource]
    if isinstance(value, bool):
        raise Invalid("must be a whole number, or null for unlimited", field)
    if resource == "memory_mib":
        return parse_size_mib(value, field, 0, top)
    if resource == "disk_gib" and isinstance(value, str) and not _DIGITS.fullmatch(value):
        mib = parse_size_mib(value, field, 0, top * 1024)
        if mib % 1024:
            raise Invalid(f"{shown(value.strip())} is not a whole number of GiB", field)
        return mib // 1024
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if not isinstance(value, int):
        raise Invalid("must be a whole number, or null for unlimited", field)
    if not 0 <= value <= top:
        raise Invalid(f"must be between 0 and {top}, or null for unlimited", field)
    return value


def parse_quota(body: Any, current: Mapping[str, int | None] | None = None) -> Quota:
    """A quota object merged into the current one (JSON merge patch: a key
    absent is unchanged, null is unlimited)."""
    if not isinstance(body, dict):
        raise Invalid(f"must be an object of {', '.join(RESOURCES)}", "quota")
    unknown = set(body) - set(RESOURCES)
    if unknown:
        raise Invalid(f"unknown resource; known: {', '.join(RESOURCES)}",
                      f"quota.{sorted(map(str, unknown))[0]}")
    quota: Quota = {r: (current or {}).get(r) for r in RESOURCES}
    for resource, value in body.items():
        quota[resource] = parse_limit(resource, value)
    return quota


def _in_units(vms: int, cpus: int, memory_mib: int, disk_bytes: int) -> dict[str, int]:
    return {"vms": vms, "cpus": cpus, "memory_mib": memory_mib, "disk_bytes": disk_bytes}


def usage_of(figures: Mapping[str, int]) -> Usage:
    """Usage as shown (GET /v1/projects/P): disk in whole GiB, rounded up, so that
    a shown usage above a limit is exactly a usage the check finds above it."""
    return {"vms": figures["vms"], "cpus": figures["cpus"], "memory_mib": figures["memory_mib"],
            "disk_gib": math.ceil(figures["disk_bytes"] / GIB)}


def project_usage(store: Store, project: str, excluding: str | None = None) -> dict[str, int]:
    """vms, cpus, memory_mib and disk_bytes of the project (without the VM `excluding`)."""
    vms, cpus, memory, disk = store.usage_by_project(project, excluding).get(project, (0, 0, 0, 0))
    return _in_units(vms, cpus, memory, disk)


def vm_figures(store: Store, spec: Mapping[str, Any]) -> dict[str, int]:
    """What one VM of this spec uses."""
    disk = store.image_virtual_size(spec["image"])
    disk += sum(d["size"] for d in spec.get("disks") or []) * MIB
    return _in_units(1, spec["cpus"], spec["memory"], disk)


def _limit_in_units(resource: str, limit: int) -> int:
    return limit * GIB if resource == "disk_gib" else limit


def _amount(resource: str, figures: Mapping[str, int]) -> int:
    return figures["disk_bytes"] if resource == "disk_gib" else figures[resource]


def _shown(resource: str, amount: int) -> str:
    if resource == "disk_gib":
        return f"{amount / GIB:.4g}"
    return str(amount)


def check(store: Store, project: str, quota: Mapping[str, int | None],
          new: Mapping[str, Any], old: Mapping[str, Any] | None = None,
          vm_id: str | None = None, count: int = 1) -> None:
    """Conflict (409, field "quota") unless the project's usage with a VM of spec
    `new` (replacing `old`, the VM `vm_id`'s spec before a change) stays within
    every limit that the change grows; `count` new VMs of that spec at once (a
    pool's scale-up). In the caller's transaction."""
    limited: dict[str, int] = {  # in this order: the first exceeded is the one said
        r: limit for r in RESOURCES if (limit := quota.get(r)) is not None}
    if not limited:
        return
    after = {k: v * (count if old is None else 1) for k, v in vm_figures(store, new).items()}
    before = vm_figures(store, old) if old is not None else None
    grows = [r for r in limited
             if before is None or _amount(r, after) > _amount(r, before)]
    if not grows:
        return
    others = project_usage(store, project, excluding=vm_id)
    for resource in grows:
        limit = limited[resource]
        used = _amount(resource, others) + (0 if before is None else _amount(resource, before))
        wanted = _amount(resource, others) + _amount(resource, after)
        if wanted <= _limit_in_units(resource, limit):
            continue
        above = " (usage is already above the limit)" if (
            used > _limit_in_units(resource, limit)) else ""
        need = "this change" if before is not None else (
            "a new VM" if count == 1 else f"{count} new VMs")
        raise Conflict(
            f"quota exceeded in project {project}: {UNITS[resource]} used {_shown(resource, used)}"
            f", limit {limit}{above}; {need} would make it {_shown(resource, wanted)}", "quota")

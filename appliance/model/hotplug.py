"""A VM's live shape (issue 14): how far its vCPUs and memory may grow while it
runs, and what it still waits for until its next boot.

The maxima are spec fields (`max_cpus`, `max_memory`); None means "the
default": HOTPLUG_FACTOR times the boot value, capped by MAX_CPUS and by what
the host has (resolved when the domain is defined, since only then is the
host known). A domain is built with its maxima (the vCPUs and the memory
area it can ever have) and boots with `cpus` and `memory`; a change within
the maxima is applied live (controller/hotplug.py), anything else waits.

Plain Python (no pydantic): the service, the controller, the exporter and the
CLI read it.
"""
from __future__ import annotations

import json
from typing import Any

from appliance.model.defaults import LIVE_FIELDS, MAX_CPUS, MAX_MEMORY_MIB

# Default maxima: this many times the boot vCPUs and memory (KubeVirt's default
# maxSockets ratio is 4; its memory hotplug default is 4x the guest's memory too).
HOTPLUG_FACTOR = 4
# virtio-mem plugs memory in blocks of this size (QEMU's default on x86: the
# transparent huge page size); the hot-pluggable area is a multiple of it.
MEMORY_BLOCK_MIB = 2


def resolve_max_cpus(spec: dict[str, Any], host_cpus: int | None) -> int:
    """The vCPUs the domain can ever have: the spec's max_cpus, else cpus when
    the spec gives a CPU topology or dedicated CPUs, else min(4 x cpus, MAX_CPUS, the host's CPUs),
    never below cpus."""
    wanted = spec.get("max_cpus")
    cpu = spec.get("cpu") or {}
    if wanted is None and any(cpu.get(k) for k in ("sockets", "cores", "threads")):
        # A topology the user gave is of the vCPUs it counts (the spec checks its
        # product against max_cpus or cpus): no room beyond it unless max_cpus says so.
        wanted = spec["cpus"]
    if wanted is None and cpu.get("dedicated"):
        # A dedicated VM's vCPUs are pinned at boot, one host CPU each: a hot-added
        # one would run on the shared CPUs (Nova resizes dedicated VMs by reboot).
        wanted = spec["cpus"]
    if wanted is None:
        wanted = min(HOTPLUG_FACTOR * spec["cpus"], MAX_CPUS, host_cpus or MAX_CPUS)
    return max(int(wanted), int(spec["cpus"]))


def resolve_max_memory(spec: dict[str, Any], host_memory_mib: int | None) -> int:
    """The memory (MiB) the domain can ever have: the spec's max_memory, else
    4 x memory capped by the host's memory, never below memory; the hot-pluggable
    part above memory is a whole number of virtio-mem blocks."""
    wanted = spec.get("max_memory")
    if wanted is None:
        wanted = min(HOTPLUG_FACTOR * spec["memory"], MAX_MEMORY_MIB,
                     host_memory_mib or MAX_MEMORY_MIB)
    memory = int(spec["memory"])
    extra = max(0, int(wanted) - memory)
    return memory + extra - extra % MEMORY_BLOCK_MIB


def with_maxima(spec: dict[str, Any], host_cpus: int | None,
                host_memory_mib: int | None) -> dict[str, Any]:
    """A copy of the spec whose max_cpus and max_memory are resolved (what the
    domain XML is built from)."""
    return {**spec, "max_cpus": resolve_max_cpus(spec, host_cpus),
            "max_memory": resolve_max_memory(spec, host_memory_mib)}


def running_spec(row: dict[str, Any]) -> dict[str, Any]:
    """What the VM's running domain has; a VM booted before this was recorded
    counts as running its spec (its restart_required flag still says if not)."""
    raw = row.get("running_spec")
    return json.loads(raw) if raw else dict(row["spec"])


def pending_fields(row: dict[str, Any]) -> list[str]:
    """The spec fields a running VM waits to have until its next boot."""
    running = running_spec(row)
    return sorted(
        key for key, value in row["spec"].items()
        if key not in LIVE_FIELDS and running.get(key) != value
    )


def restart_message(pending: list[str]) -> str:
    """The RestartRequired condition's message (for a VM that shows it)."""
    if not pending:
        return "changes wait for the next restart"
    return f"waiting for the next restart: {', '.join(pending)}"

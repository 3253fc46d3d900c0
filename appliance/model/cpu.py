"""A VM's CPU (issue 14, part F): which CPU model the guest sees, its topology,
and whether its vCPUs get host CPUs of their own.

- mode "cluster" (the default): the baseline of every host's CPU, computed by
  libvirt (baselineHypervisorCPU) and kept in the store, so that a live
  migration to any host of the cluster cannot fail on a missing CPU feature.
- mode "host-model": libvirt's copy of the host's CPU (migrates to hosts with
  the same or a newer CPU).
- mode "host-passthrough": the host's CPU as it is; a VM with it can only run
  where it started, so it must be pinned to one host (node_selector naming
  HOST_LABEL, the label every host carries with its own name).

sockets x cores x threads must equal the VM's maximum vCPUs; null fields
are 1, and a topology left out entirely is one socket of that many cores.
`dedicated` is Nova's cpu_policy=dedicated: each vCPU pinned to a host CPU
of the host's dedicated set, which no other VM uses (no overcommit).
"""
from __future__ import annotations

import re
from collections.abc import Iterable
from enum import StrEnum
from typing import Annotated, Any

from pydantic import Field

from appliance.errors import Invalid
from appliance.model.defaults import MAX_CPUS
from appliance.model.fields import Flag, one_of, says, stored_as_value, whole
from appliance.model.parts import _LeavesOutUnset


class CpuMode(StrEnum):
    CLUSTER = "cluster"
    HOST_MODEL = "host-model"
    HOST_PASSTHROUGH = "host-passthrough"


CPU_MODES: tuple[str, ...] = tuple(CpuMode)
DEFAULT_CPU_MODE = CpuMode.CLUSTER
# Every host carries this label with its own name (as Kubernetes' nodes carry
# kubernetes.io/hostname): a node_selector on it pins a VM to that one host.
HOST_LABEL = "appliance/host"

TopologyCount = Annotated[
    int, whole(1, MAX_CPUS), says(f"must be a whole number from 1 to {MAX_CPUS}")
]


class Cpu(_LeavesOutUnset):
    """The guest's CPU model, topology and pinning."""

    not_an_object = "must be an object (mode, sockets, cores, threads, dedicated)"
    mode: Annotated[CpuMode, says(one_of(CPU_MODES)), Field(description=(
        "cluster: the baseline of the cluster's hosts (migrates anywhere); host-model; "
        "host-passthrough: only for a VM pinned to one host (node_selector "
        f"{HOST_LABEL}=NAME)"))] = stored_as_value(DEFAULT_CPU_MODE)
    sockets: TopologyCount | None = None
    cores: TopologyCount | None = None
    threads: TopologyCount | None = None
    dedicated: Flag = Field(False, description=(
        "pin each vCPU to a host CPU of the host's cpu_dedicated_set, used by no "
        "other VM (Nova's cpu_policy=dedicated)"))


DEFAULT_CPU: dict[str, Any] = {"mode": DEFAULT_CPU_MODE.value, "dedicated": False}


def cpu_of(spec: dict[str, Any]) -> dict[str, Any]:
    """A stored spec's cpu object (specs stored before issue 14 have none)."""
    return spec.get("cpu") or DEFAULT_CPU


def max_vcpus(spec: dict[str, Any]) -> int:
    """The VM's maximum vCPUs: max_cpus when set (issue 14, part A), else cpus."""
    return int(spec.get("max_cpus") or spec["cpus"])


def topology(cpu: dict[str, Any], vcpus: int) -> tuple[int, int, int]:
    """(sockets, cores, threads): as given (null fields 1), or one socket of
    `vcpus` cores when none is given."""
    given = [cpu.get(key) for key in ("sockets", "cores", "threads")]
    if all(value is None for value in given):
        return 1, vcpus, 1
    sockets, cores, threads = (value or 1 for value in given)
    return sockets, cores, threads


def topology_fault(cpu: dict[str, Any], vcpus: int) -> str | None:
    """Why the topology does not fit `vcpus`, or None."""
    sockets, cores, threads = topology(cpu, vcpus)
    if sockets * cores * threads != vcpus:
        return (f"sockets x cores x threads ({sockets} x {cores} x {threads} = "
                f"{sockets * cores * threads}) must equal the VM's maximum vCPUs ({vcpus})")
    return None


def passthrough_fault(cpu: dict[str, Any], node_selector: dict[str, str]) -> str | None:
    """host-passthrough needs a VM pinned to one host: a live migration to a
    host with another CPU would fail (or the guest would crash)."""
    if cpu.get("mode") == CpuMode.HOST_PASSTHROUGH and HOST_LABEL not in node_selector:
        return (f"host-passthrough needs the VM pinned to one host (node_selector "
                f"{HOST_LABEL}=NAME): a live migration to another CPU could fail")
    return None


def hugepages_of(spec: dict[str, Any]) -> bool:
    return bool(spec.get("hugepages"))


def is_dedicated(spec: dict[str, Any]) -> bool:
    return bool(cpu_of(spec).get("dedicated"))


# -- host CPU sets (a host's cpu_dedicated_set, a VM's pinned CPUs) ------------------------------
MAX_HOST_CPU = 4095  # libvirt's cpuset bound (VIR_DOMAIN_CPUMASK_LEN is 1024 bits; ample)
_CPUSET_PART = re.compile(r"\s*(\d{1,4})\s*(?:-\s*(\d{1,4})\s*)?")


def parse_cpuset(text: object, field: str = "cpu_dedicated_set") -> tuple[int, ...]:
    """Host CPU ids from libvirt's (and Nova's) cpuset text "0-3,6" (a list of
    ints is taken too); '' or None: none. Bounded: ids 0..MAX_HOST_CPU."""
    if text is None or text == "":
        return ()
    if isinstance(text, list) and all(isinstance(i, int) and not isinstance(i, bool)
                                      for i in text):
        text = ",".join(str(i) for i in text)
    if not isinstance(text, str) or len(text) > 4096:
        raise Invalid('must be host CPU ids like "2-3,6" (libvirt cpuset)', field)
    cpus: set[int] = set()
    for part in text.split(","):
        match = _CPUSET_PART.fullmatch(part)
        if match is None:
            raise Invalid(f'{part.strip()!r} is not a CPU id or range like "2-3"', field)
        low = int(match.group(1))
        high = int(match.group(2)) if match.group(2) else low
        if low > high or high > MAX_HOST_CPU:
            raise Invalid(f"{part.strip()!r}: CPU ids go from 0 to {MAX_HOST_CPU}, "
                          "ranges low-high", field)
        cpus.update(range(low, high + 1))
    return tuple(sorted(cpus))


def cpuset_text(cpus: Iterable[int]) -> str:
    """libvirt's cpuset text: 0-3,6."""
    runs: list[list[int]] = []  # [first, last] of each run of consecutive CPUs
    for cpu in sorted(set(cpus)):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)

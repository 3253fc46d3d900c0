"""Defaults and bounds, each defined once: the spec model, the store's
migrations, placement, the exporter, the CLI's help and the OpenAPI document
read them from here."""
from __future__ import annotations

from typing import NamedTuple

from appliance.model.states import Graphics, NetworkType, RunStrategy


class Bounded(NamedTuple):
    """A number with its default and the range a user may set."""

    default: float
    low: float
    high: float


# -- hosts: overcommit (Nova's cpu_allocation_ratio, ram_allocation_ratio, disk_allocation_ratio)
DEFAULT_CPU_RATIO = 16.0
DEFAULT_RAM_RATIO = 1.5
DEFAULT_DISK_RATIO = 1.0
HOST_RATIOS: dict[str, Bounded] = {
    "cpu_ratio": Bounded(DEFAULT_CPU_RATIO, 0.1, 1000.0),
    "ram_ratio": Bounded(DEFAULT_RAM_RATIO, 0.1, 100.0),
    "disk_ratio": Bounded(DEFAULT_DISK_RATIO, 0.1, 100.0),
}

# -- hosts: liveness
HEARTBEAT_SECONDS = 2.0  # how often the controller records that a host's libvirt answers
HEARTBEAT_AGE = 10.0  # a heartbeat older than this means the controller lost the host
EVACUATE_AFTER = 60.0  # a host dead this long has its VMs restarted elsewhere (shared disks)

# -- VM specs (a create that names no template gets the built-in one: these)
DEFAULT_IMAGE = "demo"
DEFAULT_NETWORK_TYPE = NetworkType.USER
DEFAULT_CPUS = 1
DEFAULT_MEMORY_MIB = 128
DEFAULT_RUN_STRATEGY = RunStrategy.ALWAYS
DEFAULT_GRAPHICS = Graphics.VNC
MIN_MEMORY_MIB = 32
MAX_MEMORY_MIB = 4 * 1024 * 1024
MAX_CPUS = 256
MAX_DISK_MIB = 64 * 1024 * 1024
MAX_DISKS = 16
MAX_PORT_FORWARDS = 64
# Spec fields a running VM takes without its guest seeing anything (the controller
# just records them); appliance/controller/live.py applies the hot-pluggable ones.
LIVE_FIELDS = frozenset({
    "name", "labels", "run_strategy", "termination_grace_period", "node_selector", "group",
    "reserve_when_stopped",
    "backup",  # read by the controller's backup schedule, never by the guest
    "firewall",  # the VM's nwfilter, redefined by every update (controller/firewall.py)
})
# Spec fields a running VM may take live, when the guest and the maximums allow
# (issue 14): the service does not announce a restart for these; the controller
# tries, and sets RestartRequired only for what it could not apply.
HOTPLUG_FIELDS = frozenset({"cpus", "memory", "disks", "cdroms", "networks"})
# ACPI shutdown first; after this many seconds the plug is pulled (Kubernetes' default).
TERMINATION_GRACE_PERIOD = 30
MAX_TERMINATION_GRACE_PERIOD = 3600
MAX_LABELS = 64
# Cloud-init parts, bounded (issue 9, finding 6: 30 MB of meta_data was stored
# and returned by every GET /v1/vms). user_data: 64 KiB, OpenStack Nova's limit
# (EC2 allows 16 KiB); meta_data and network_config: 16 KiB each as JSON.
MAX_USER_DATA = 64 * 1024
MAX_CLOUD_INIT_PART = 16 * 1024
MAX_CLOUD_INIT_DEPTH = 16
# Probe timings: KubeVirt's (and Kubernetes') defaults and names, in snake case.
PROBE_TIMINGS: dict[str, tuple[int, int, int]] = {  # name: (default, low, high)
    "initial_delay_seconds": (0, 0, 3600),
    "period_seconds": (10, 1, 3600),
    "timeout_seconds": (1, 1, 600),
    "failure_threshold": (3, 1, 100),
    "success_threshold": (1, 1, 100),
}

"""The state vocabulary, in one place (as Nova's vm_states.py and task_states.py).

Every enum is a `StrEnum`: a member *is* its string, so `VMState.RUNNING ==
"running"`, it is stored in SQLite and sent as JSON unchanged, and code that
still compares bare strings keeps working while it moves over to these names.
The tuples below are what validation and the OpenAPI document enumerate.
"""
from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any


class VMState(StrEnum):
    """A VM's observed state: what libvirt reports (appliance/virt/host.py maps
    its states onto these), plus the appliance's own while it has no domain."""

    PROVISIONING = "provisioning"  # recorded, not defined on its host yet
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    STOPPING = "stopping"  # libvirt's SHUTDOWN: the guest is powering off
    STOPPED = "stopped"
    CRASHED = "crashed"
    SUSPENDED = "suspended"  # memory saved to disk (libvirt's managed save), RAM freed
    PMSUSPENDED = "pmsuspended"  # libvirt's PMSUSPENDED: the guest put itself to sleep (S3)
    SHELVED = "shelved"  # stopped, no host claim; disks kept (Nova's shelve)
    MIGRATING = "migrating"
    LOST = "lost"  # its host is gone and the domain is nowhere to be seen
    UNKNOWN = "unknown"
    DELETING = "deleting"  # shown (never stored) while the desired state is deleted


class DesiredState(StrEnum):
    """What the user (or the run strategy) wants; the controller converges on it."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    SUSPENDED = "suspended"  # memory saved to disk, RAM freed; "running" resumes it
    SHELVED = "shelved"  # stopped, host claim released; "running" places it again
    DELETED = "deleted"


class StateVerb(StrEnum):
    """What `PUT .../state` and `echo VERB > vms/NAME/state` accept."""

    RUNNING = "running"
    STOPPED = "stopped"
    PAUSED = "paused"
    REBOOT = "reboot"
    FORCE_STOP = "force-stop"
    SUSPENDED = "suspended"
    SHELVED = "shelved"


STATE_VERBS: tuple[StateVerb, ...] = tuple(StateVerb)
# Words people type for the verbs (vmctl's subcommands among them).
STATE_ALIASES: dict[str, StateVerb] = {
    "start": StateVerb.RUNNING, "stop": StateVerb.STOPPED, "pause": StateVerb.PAUSED,
    "resume": StateVerb.RUNNING, "restart": StateVerb.REBOOT, "shutdown": StateVerb.STOPPED,
    "suspend": StateVerb.SUSPENDED, "shelve": StateVerb.SHELVED, "unshelve": StateVerb.RUNNING,
}
# The desired state each verb records.
VERB_DESIRED_STATE: dict[StateVerb, DesiredState] = {
    StateVerb.RUNNING: DesiredState.RUNNING, StateVerb.STOPPED: DesiredState.STOPPED,
    StateVerb.PAUSED: DesiredState.PAUSED, StateVerb.REBOOT: DesiredState.RUNNING,
    StateVerb.FORCE_STOP: DesiredState.STOPPED,
    StateVerb.SUSPENDED: DesiredState.SUSPENDED, StateVerb.SHELVED: DesiredState.SHELVED,
}
# Observed states in which a VM occupies its domain: it must stop before it is deleted.
ACTIVE_STATES: tuple[VMState, ...] = (VMState.RUNNING, VMState.PAUSED, VMState.STARTING,
                                      VMState.STOPPING, VMState.MIGRATING)


class OpKind(StrEnum):
    """What an operation does; the controller runs `_op_<kind>` for each."""

    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    START = "start"
    STOP = "stop"
    PAUSE = "pause"
    RESUME = "resume"
    REBOOT = "reboot"
    FORCE_STOP = "force-stop"
    CONVERGE = "converge"
    MIGRATE = "migrate"  # live, between hosts
    MOVE = "move"  # offline: a stopped VM's record and disks go to another host
    # Snapshots and backups (issue 13)
    SNAPSHOT = "snapshot"  # take one (params: name, memory, description)
    SNAPSHOT_DELETE = "snapshot-delete"  # params: name
    REVERT = "revert"  # to a snapshot (params: name)
    BACKUP = "backup"  # params: backup (its id), target, kind
    RESTORE = "restore"  # in place, into a stopped VM (params: backup)
    # Live shapes (issue 14)
    SUSPEND = "suspend"  # managed save: memory to disk, RAM freed
    SHELVE = "shelve"  # stop, release the host claim, keep the disks
    UNSHELVE = "unshelve"  # place again (the scheduler), move disks if needed, start
    REBUILD = "rebuild"  # reimage the root disk (params: image), keep name, MAC, data disks


# A new desired state cancels the pending operations of these kinds that it replaces.
STATE_CHANGE_OPS: tuple[OpKind, ...] = (OpKind.START, OpKind.STOP, OpKind.PAUSE, OpKind.RESUME,
                                        OpKind.REBOOT, OpKind.FORCE_STOP, OpKind.SUSPEND,
                                        OpKind.SHELVE, OpKind.UNSHELVE)


# Operations a running job does for a while, that a cancel aborts (the controller
# aborts the libvirt job or the copy, then finishes the operation as cancelled).
CANCELLABLE_WHILE_RUNNING: tuple[OpKind, ...] = (OpKind.MIGRATE, OpKind.BACKUP, OpKind.RESTORE)


def copies_a_source(op: Mapping[str, Any]) -> bool:
    """A CREATE that fills the new VM's disks from a source (a clone, a restore
    into a new VM: its params' "source"): a copy as long as a backup's, which a
    cancel aborts, where a plain create runs to its end."""
    return op["kind"] == OpKind.CREATE and bool((op.get("params") or {}).get("source"))


def cancellable_while_running(op: Mapping[str, Any]) -> bool:
    """Whether a cancel of this running operation is passed on to its handler
    (which polls it, aborts, cleans up and ends the operation cancelled)."""
    return op["kind"] in CANCELLABLE_WHILE_RUNNING or copies_a_source(op)


class OpStatus(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


OPEN_OP_STATES: tuple[OpStatus, ...] = (OpStatus.PENDING, OpStatus.RUNNING)
FINAL_OP_STATES: tuple[OpStatus, ...] = (OpStatus.SUCCEEDED, OpStatus.FAILED, OpStatus.CANCELLED)

# Who claims what on a host (placement.py says why; store/claims.py keeps the
# per-host totals with this rule, in triggers). A VM holds its vCPUs and memory
# while desired in one of these or observed in one of those (or its spec's
# reserve_when_stopped); observed shelved it claims nothing where its record
# is; observed suspended its disk claim counts its memory's save file; an open
# operation of a moving kind claims the VM again on its params' target. An open
# operation whose params say BOOTING claims it on its host too: the controller marks
# it so, in the transaction that finds the VM still wanted running, just before it
# boots the guest (controller/lifecycle.py Lifecycle.boot), and the claim lasts until
# the operation ends, after the VM was observed (running: it claims then as such).
CLAIMING_DESIRED_STATES: tuple[str, ...] = (DesiredState.RUNNING, DesiredState.PAUSED)
CLAIMING_OBSERVED_STATES: tuple[str, ...] = (
    VMState.RUNNING, VMState.PAUSED, VMState.STARTING, VMState.STOPPING, VMState.MIGRATING)
UNPLACED_OBSERVED_STATES: tuple[str, ...] = (VMState.SHELVED,)
SAVED_OBSERVED_STATES: tuple[str, ...] = (VMState.SUSPENDED,)
# An unshelve claims its target as a move does, until the record follows (controller/shapes.py).
MOVING_OP_KINDS: tuple[str, ...] = (OpKind.MIGRATE, OpKind.MOVE, OpKind.UNSHELVE)
BOOTING = "booting"  # the params key of an operation that boots the guest (above)
# The params key of an operation failed because its host's connection was lost (the host's
# name): answered 503 (errors.Unavailable), not 500 (controller/operations.py).
UNREACHABLE = "unreachable"
# The params key of an operation libvirt refused because a job holds the domain (its state
# change lock: virt/driver.py DomainLocked): answered 503 as well, naming the VM.
JOB_HELD = "job-held"


class RunStrategy(StrEnum):
    """KubeVirt's run strategies, with its names."""

    ALWAYS = "Always"  # restarted whenever it stops
    RERUN_ON_FAILURE = "RerunOnFailure"  # restarted unless the guest shut down itself
    MANUAL = "Manual"  # never restarted by the appliance
    HALTED = "Halted"  # kept stopped


RUN_STRATEGIES: tuple[RunStrategy, ...] = tuple(RunStrategy)


class HostAdminState(StrEnum):
    """A host's administrative state (Nova's service enabled/disabled, plus maintenance)."""

    ENABLED = "enabled"
    DISABLED = "disabled"  # no new VMs
    MAINTENANCE = "maintenance"  # no new VMs, and its VMs leave


HOST_STATES: tuple[HostAdminState, ...] = tuple(HostAdminState)
# A host's observed state is its administrative state, or this when its libvirt is lost.
HOST_DOWN = "down"


class GroupPolicy(StrEnum):
    """Nova's server group policies."""

    AFFINITY = "affinity"
    ANTI_AFFINITY = "anti-affinity"
    SOFT_AFFINITY = "soft-affinity"
    SOFT_ANTI_AFFINITY = "soft-anti-affinity"


GROUP_POLICIES: tuple[GroupPolicy, ...] = tuple(GroupPolicy)


class NetworkType(StrEnum):
    NONE = "none"
    USER = "user"  # QEMU user mode (slirp), with port forwards on the host's loopback
    NETWORK = "network"  # a libvirt network


NETWORK_TYPES: tuple[NetworkType, ...] = tuple(NetworkType)


class Graphics(StrEnum):
    """A VM's display: a video device with a VNC server that listens nowhere
    (reached only through libvirt's openGraphicsFD, proxied by the appliance),
    or no display at all (no screenshots, no VNC)."""

    VNC = "vnc"
    NONE = "none"


GRAPHICS: tuple[Graphics, ...] = tuple(Graphics)


class Protocol(StrEnum):
    TCP = "tcp"
    UDP = "udp"


PROTOCOLS: tuple[Protocol, ...] = tuple(Protocol)


class Outbound(StrEnum):
    """What a user-mode (slirp) guest may reach on its own: "internet" is QEMU's
    default (the outside world, and the host's loopback as 10.0.2.2); "none" is
    QEMU's restrict=on (nothing; port forwards into the guest still work)."""

    INTERNET = "internet"
    NONE = "none"


OUTBOUND: tuple[Outbound, ...] = tuple(Outbound)


class ProbeKind(StrEnum):
    TCP_SOCKET = "tcp_socket"
    CONSOLE = "console"
    GUEST_AGENT_PING = "guest_agent_ping"


PROBE_KINDS: tuple[ProbeKind, ...] = tuple(ProbeKind)


class SnapshotState(StrEnum):
    """A snapshot's life: recorded before libvirt takes it (the store first), ready
    once taken, deleting while libvirt merges it away; failed keeps the reason."""

    CREATING = "creating"
    READY = "ready"
    DELETING = "deleting"
    FAILED = "failed"


class BackupKind(StrEnum):
    FULL = "full"
    INCREMENTAL = "incremental"


class BackupStatus(StrEnum):
    """running: being written into TARGET/.../ID.partial; good: complete, its
    manifest written and the folder renamed; failed: nothing of it is kept."""

    RUNNING = "running"
    GOOD = "good"
    FAILED = "failed"

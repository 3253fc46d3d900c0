"""The seam between the controller and a hypervisor host, as Nova's `ComputeDriver`.

The controller never calls libvirt: it asks a `HostDriver` (one per host,
holding that host's connection) and the `Guest`s it hands out (Nova's
`virt/libvirt/guest.py`). `LibvirtDriver` (libvirt_driver.py) is the real one;
`FakeDriver` (fake.py) keeps a whole cluster in memory for controller unit
tests. Every failure crosses the seam as a `DriverError`, whose `reason` is
safe to show API users (libvirt's own text can quote host files: reasons.py).
"""
from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable
from pathlib import Path

from appliance.virt.domain import DomainPlan
from appliance.virt.driver_values import (  # noqa: F401 (re-exported: callers import them from driver)
    CpuPins,
    DiskDevice,
    HotplugMemory,
    MigrationRequest,
)
from appliance.virt.host_networks import HostNetworks

MAX_REASON = 300

# on_event(vm_id, event, detail): called from the hypervisor's event thread.
EventCallback = Callable[[str, int, int], None]


def shorten(text: str) -> str:
    """One line (events are one line each), cut to MAX_REASON characters."""
    text = " ".join(text.split())
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 1] + "…"


class DriverError(Exception):
    """A hypervisor call failed. str() is the full message (for the server log);
    `reason` is what an operation's error, its event and last_error may say."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason if reason is not None else shorten(message)


class DomainGone(DriverError):
    """The domain does not exist (or was undefined between two calls)."""


class JobBusy(DriverError):
    """The domain is held by another job of its host's libvirtd (an earlier migration
    still being finished or cancelled there): nothing was done; ask again once it ends."""


class DomainLocked(DriverError):
    """libvirt did not get the domain's state change lock within its own wait (30 s): a
    job holds the domain, one still running or one left owned by no one (a libvirtd
    SIGKILLed while it started the domain: README "A wedged domain"). Nothing was done;
    the operation is answered 503 (EAGAIN in the mount), and the run strategy backs off."""


class IncrementalImpossible(DriverError):
    """An incremental backup cannot start from the checkpoint asked for (gone
    with its bitmaps, or its bitmaps inconsistent); `reason` says which. The
    backup handler makes a full backup instead."""


class Unreachable(DriverError):
    """The host's hypervisor could not be reached; `reason` is a fixed text."""


def failure_reason(err: BaseException) -> str:
    """What an operation's failure says to API users."""
    return err.reason if isinstance(err, DriverError) else shorten(str(err))


def _unsupported(what: str) -> DriverError:
    return DriverError(f"{what}: not supported by this driver",
                       f"{what}: not supported on this host")


class Guest(abc.ABC):
    """One domain on one host."""

    uuid: str

    @abc.abstractmethod
    def name(self) -> str: ...

    @abc.abstractmethod
    def state(self) -> tuple[str, str]:
        """(state, reason) in the appliance's words: running, paused, stopped, ..."""

    @abc.abstractmethod
    def is_active(self) -> bool: ...

    @abc.abstractmethod
    def xml(self) -> str: ...

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def destroy(self) -> None:
        """Power off at once; a guest that is off already is left as it is."""

    @abc.abstractmethod
    def shutdown(self) -> None:
        """Ask the guest to power off (ACPI)."""

    @abc.abstractmethod
    def suspend(self) -> None: ...

    @abc.abstractmethod
    def resume(self) -> None: ...

    @abc.abstractmethod
    def undefine(self, with_metadata: bool = False) -> None:
        """Forget the definition; `with_metadata` also drops managed saves,
        snapshot metadata and NVRAM (a VM's delete)."""

    @abc.abstractmethod
    def interface_addresses(self, source: str) -> list[dict] | None:
        """Addresses from "lease" (the network's DHCP) or "agent"; None when the
        source cannot answer. Rows: interface, mac, address, prefix."""

    @abc.abstractmethod
    def apply_port_forwards(self, forwards: list[dict]) -> None:
        """Add the user-mode NIC's forwards not yet in place (safe to repeat)."""

    @abc.abstractmethod
    def migrate(self, request: MigrationRequest) -> None:
        """Live-migrate, peer to peer; blocks until libvirt is done."""

    @abc.abstractmethod
    def job_running(self) -> bool:
        """Whether a job (a migration) is in progress on this domain (False once
        the domain is gone: a migration's end undefines it on the source)."""

    @abc.abstractmethod
    def job_progress(self) -> tuple[int, int] | None:
        """(bytes processed, bytes total) of the running job, if known; None when
        there is none or the domain is gone (never an error: polled while it ends)."""

    @abc.abstractmethod
    def abort_job(self) -> None: ...

    # -- for probes -----------------------------------------------------------------------
    @abc.abstractmethod
    def monitor_command(self, command: str) -> str:
        """A QEMU human monitor command's output (`info usernet`)."""

    @abc.abstractmethod
    def agent_command(self, command: str, timeout: int) -> str:
        """A qemu-guest-agent command (JSON) and its answer."""

    # -- snapshots (issue 13): libvirt internal snapshots; not abstract, so a
    # driver without them refuses with a reason instead of failing to load ------------------
    def snapshot_create(self, name: str, description: str, memory: bool) -> str:
        """Take an internal snapshot of every writable disk (and with `memory`, of
        RAM and device state: the domain must run); libvirt's XML of it."""
        raise _unsupported("snapshots")

    def snapshot_redefine(self, xml: str, current: bool = False) -> None:
        """Give libvirt back the metadata of a snapshot its disks already hold."""
        raise _unsupported("snapshots")

    def snapshot_names(self) -> list[str]:
        """The domain's snapshots as libvirt knows them, parents before children."""
        raise _unsupported("snapshots")

    def snapshot_xml(self, name: str) -> str:
        raise _unsupported("snapshots")

    def snapshot_revert(self, name: str, keep_memory: bool = True) -> None:
        """Revert the disks (and with `keep_memory`, a memory snapshot's RAM: the
        guest resumes as it was); without, the domain ends shut off on the
        snapshot's disks."""
        raise _unsupported("snapshots")

    def snapshot_delete(self, name: str, metadata_only: bool = False) -> None:
        """Delete the snapshot (its data in the disks too, unless `metadata_only`)."""
        raise _unsupported("snapshots")

    def checkpoint_names(self) -> list[str]:
        """The domain's checkpoints (dirty bitmaps), parents before children."""
        raise _unsupported("checkpoints")

    def checkpoint_delete(self, name: str, metadata_only: bool = False) -> None:
        raise _unsupported("checkpoints")

    def disks_allocated(self) -> int:
        """Bytes the domain's writable disks take on their storage (a snapshot's
        size is how much this grew while it was taken)."""
        raise _unsupported("disk allocation")

    # -- suspend to disk (issue 14): libvirt's managed save (libvirt_saves.py); not
    # abstract, so a driver without it refuses with a reason -----------------------------
    def managed_save(self) -> None:
        """Save the guest's memory to the host's disk and end its QEMU (RAM freed);
        the next start() restores it."""
        raise _unsupported("suspend")

    def has_managed_save(self) -> bool:
        return False

    def discard_managed_save(self) -> None:  # noqa: B027 - nothing saved where nothing can be
        """Drop the save image: the next start boots afresh."""
    # -- disks and media of a running domain (issue 14: libvirt_devices.py, fake_devices.py);
    # not abstract, so a driver without them makes the change wait for a restart ------------
    def disk_devices(self) -> list[DiskDevice]:
        """The running domain's disks and CD-ROM drives (its live XML)."""
        raise _unsupported("disk hotplug")

    def attach_device(self, xml: str) -> None:
        raise _unsupported("disk hotplug")

    def update_device(self, xml: str) -> None:
        """Change a device in place (a CD-ROM's media)."""
        raise _unsupported("changing media")

    def detach_disk(self, xml: str, target: str) -> bool:
        """Ask the guest to release the disk; True once the domain no longer has it."""
        raise _unsupported("disk hotplug")

    def block_resize(self, target: str, size_bytes: int) -> None:
        """Grow a disk of the running domain (never shrink it)."""
        raise _unsupported("disk resize")

    def block_capacity(self, target: str) -> int:
        """A disk's size in bytes, as the running domain has it."""
        raise _unsupported("disk resize")

    def nic_macs(self) -> list[str]:
        """The MACs of the running domain's NICs (its live XML)."""
        raise _unsupported("NIC hotplug")

    def attach_nic(self, xml: str) -> None:
        raise _unsupported("NIC hotplug")

    def detach_nic(self, mac: str) -> bool:
        """Ask the guest to release the NIC; True once the domain no longer has it."""
        raise _unsupported("NIC hotplug")

    # -- backups (issue 13): libvirt push backups (libvirt_backups.py); not abstract,
    # so a driver without them refuses with a reason ---------------------------------
    def backup_begin(self, files: dict[str, Path], incremental: str | None,
                     checkpoint: str | None, made: bool = False) -> None:
        """Start a push backup of the named disks ("root", data disk names) into
        new qcow2 files (`made`: files the caller made, of backup_sizes' sizes);
        since checkpoint `incremental` only (IncrementalImpossible when it cannot
        be), creating checkpoint `checkpoint` (None: none)."""
        raise DriverError("backups: not supported by this driver",
                          "backups are not supported on this host")

    def backup_sizes(self, names: list[str]) -> dict[str, int]:
        """The named disks' sizes in bytes, as the running domain has them."""
        raise DriverError("backups: not supported by this driver",
                          "backups are not supported on this host")

    def backup_finished(self) -> bool | None:
        """None while the backup job runs; True when it succeeded; DriverError if it failed."""
        raise DriverError("backups: not supported by this driver",
                          "backups are not supported on this host")

    def fs_freeze(self) -> int:
        """Freeze the guest's file systems through its agent: how many it froze.
        Once it returned (even 0: the agent then counts itself frozen), fs_thaw
        must follow. DriverError (its reason says why) without an agent or when
        the agent could not freeze (it thawed what it had frozen)."""
        raise DriverError("fs freeze: not supported by this driver",
                          "no guest agent on this driver")

    def fs_thaw(self) -> None:  # noqa: B027 - nothing to thaw where nothing froze
        """Thaw what fs_freeze froze."""

    def start_paused(self) -> None:
        """Start the domain with its CPUs paused (a stopped VM's backup)."""
        raise DriverError("start paused: not supported by this driver",
                          "starting paused is not supported on this host")

    # -- live resize (issue 14: controller/hotplug.py); not abstract, so a driver
    # without it refuses with a reason ------------------------------------------------
    def live_vcpus(self) -> tuple[int, int]:
        """(vCPUs the running domain has, the most it can have)."""
        raise _unsupported("vCPU hotplug")

    def set_live_vcpus(self, count: int) -> None:
        """Plug vCPUs into the running domain (the guest has to online them)."""
        raise _unsupported("vCPU hotplug")

    def live_memory(self) -> HotplugMemory | None:
        """The running domain's hot-pluggable memory; None without a virtio-mem device."""
        raise _unsupported("memory hotplug")

    def request_live_memory(self, requested_mib: int) -> None:
        """Ask the guest to take (or give back) this much of its virtio-mem area."""
        raise _unsupported("memory hotplug")


@dataclasses.dataclass(frozen=True)
class Listed:
    """One of the appliance's domains as a host's bulk listing saw it: the
    resync reads every state from one call per host, not one call per domain."""

    guest: Guest
    state: str  # as Guest.state() says it, at the time of the listing
    reason: str


class HostDriver(HostNetworks):
    """One host's hypervisor, behind its connection (its networks: host_networks.py)."""

    name: str
    uri: str

    # -- the connection ------------------------------------------------------------------
    @property
    @abc.abstractmethod
    def connected(self) -> bool: ...

    @abc.abstractmethod
    def connect(self) -> None:
        """(Re)connect; raises Unreachable."""

    @abc.abstractmethod
    def disconnect(self) -> None: ...

    @abc.abstractmethod
    def inventory(self) -> dict:
        """arch, cpus, memory_mib, ... as the scheduler reads them."""

    # -- domains -----------------------------------------------------------------------------
    @abc.abstractmethod
    def lookup(self, vm_id: str) -> Guest | None: ...

    def paused_arrivals_keep_disks_inactive(self) -> bool:
        """Whether a guest that arrives here paused by live migration keeps its disks
        inactive until it runs: QEMU before 10.0 activates them only at `cont`, so its
        next migration asserts (bdrv_inactivate_recurse) and snapshots are refused.
        QEMU 10 activates them itself (libvirt 11 with blockdev-set-active)."""
        return False

    @abc.abstractmethod
    def list_ours(self, instance_id: str) -> dict[str, Listed]:
        """Every domain on the host that carries this appliance's id, by uuid,
        with its state: one call to the host, whatever the number of domains."""

    @abc.abstractmethod
    def define(self, plan: DomainPlan) -> Guest:
        """Define (or redefine) the domain; an existing definition under another
        name is renamed first (refused while it runs)."""

    @abc.abstractmethod
    def forget(self, vm_id: str) -> None:
        """Drop what the driver remembers of a domain that was undefined elsewhere."""

    @abc.abstractmethod
    def check_ports_free(self, forwards: list[dict]) -> None:
        """Raise Failed if a forward's host port is taken (where that can be known)."""

    # -- fixed IPs ---------------------------------------------------------------------------
    @abc.abstractmethod
    def reserve_address(self, store, row: dict) -> None: ...

    @abc.abstractmethod
    def release_address(self, store, row: dict) -> None: ...

    # -- storage of its own (hosts that do not see the appliance's folders) ------------------
    @abc.abstractmethod
    def images_space(self) -> tuple[int, int]:
        """(capacity, available) bytes where the host keeps the appliance's images."""

    @abc.abstractmethod
    def ensure_vm_files(self, plan: DomainPlan, image: dict, disks: list[tuple[str, int]]) -> None:
        """The VM's pool with its root overlay (on the image, uploaded once per
        host), its disks (name, bytes) and the seed; safe to repeat."""

    @abc.abstractmethod
    def prepare_incoming_disks(self, plan: DomainPlan, disks: list[tuple[Path, int]]) -> None:
        """Empty volumes (path, bytes) for a copying migration to fill, and the seed."""

    @abc.abstractmethod
    def upload_image(self, path: Path) -> None:
        """A base image into the host's image pool (once)."""

    @abc.abstractmethod
    def download_volume(self, plan: DomainPlan, name: str, dest: Path) -> bool:
        """A VM volume into a local file; False when the volume is missing."""

    @abc.abstractmethod
    def upload_volume(self, plan: DomainPlan, name: str, source: Path) -> None: ...

    @abc.abstractmethod
    def remove_vm_storage(self, vm_id: str) -> None: ...

    def volume_names(self, plan: DomainPlan) -> list[str]:
        """The names of the VM's volumes on the host's own storage."""
        raise DriverError("listing volumes: not supported by this driver",
                          "listing volumes: not supported on this host")

    def grow_volume(self, plan: DomainPlan, name: str, size_bytes: int) -> None:
        """Grow a stopped VM's volume to size_bytes (a larger one is left as it is)."""
        raise DriverError("growing volumes: not supported by this driver",
                          "growing disks: not supported on this host")

    def delete_volumes(self, plan: DomainPlan, prefix: str) -> list[str]:
        """The VM's volumes whose names start with `prefix` deleted (the host's
        copies of a backup); the names deleted. A pool that is gone holds none."""
        raise DriverError("deleting volumes: not supported by this driver",
                          "deleting volumes: not supported on this host")

    # -- the host's CPU (issue 14, part F; libvirt_cpu.py): not abstract, so a driver
    # without them leaves the cluster's CPU model unknown ------------------------------------
    def cpu_xml(self, virttype: str) -> str | None:
        """The host's CPU as `virttype` gives it to guests (host CPU XML); None: unknown."""
        return None

    def baseline_cpu(self, virttype: str, cpus: list[str]) -> str:
        """A CPU model (custom CPU XML) every one of these host CPUs runs, migratable."""
        raise _unsupported("CPU baselines")

    def cpu_features(self, virttype: str, cpu: str) -> frozenset[str]:
        """Every feature a CPU definition gives, its model's included."""
        raise _unsupported("CPU features")

    def runs_cpu(self, virttype: str, cpu: str) -> bool:
        """Whether this host can run a guest with this CPU (compareHypervisorCPU)."""
        raise _unsupported("CPU comparison")

    def cpu_inventory(self) -> dict:
        """hugepages_mib, hugepages_free_mib (2 MiB pages) for the inventory."""
        return {}

    @abc.abstractmethod
    def read_console(self, vm_id: str, offset: int) -> tuple[int, bytes] | None:
        """What the console log holds from `offset` (from 0 when it shrank: a new
        log): (where the data starts, data); None without a log."""


# Makes a host's driver: (name, uri, on_event) -> HostDriver.
DriverFactory = Callable[[str, str, EventCallback], HostDriver]

"""What crosses the driver seam (virt/driver.py) as plain values: a running
domain's disk and virtio-mem devices, and a live migration's request with the
target's CPU pins."""
from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class DiskDevice:
    """A disk or CD-ROM of a running domain (its live XML): issue 14's hotplug."""

    target: str  # vda, sda...
    device: str  # "disk" or "cdrom"
    file: str | None  # None: an empty CD-ROM drive
    readonly: bool


@dataclasses.dataclass(frozen=True)
class MigrationRequest:
    dest_uri: str
    address: str | None = None  # the target's migration address (tcp://ADDRESS), if it has one
    bandwidth: int | None = None  # MiB/s
    copy_disks: bool = False  # the target does not see the disks: copy them during the migration
    # The target host's CPU pins (issue 14, F): vCPU i on pinned[i], the rest and the
    # emulator on shared (None: the target pins nothing); the domain's XML is re-pinned
    # for it (virt/cpu_xml.repin). None: the XML travels as it is.
    pins: CpuPins | None = None


@dataclasses.dataclass(frozen=True)
class CpuPins:
    pinned: tuple[int, ...] | None
    shared: tuple[int, ...] | None


@dataclasses.dataclass(frozen=True)
class HotplugMemory:
    """A running domain's virtio-mem device, in MiB: `base` is the memory it
    booted with, `size` the hot-pluggable area, `requested` what the guest was
    asked to plug, `current` what it has plugged (it follows `requested` only
    as far as the guest cooperates)."""

    base: int
    size: int
    requested: int
    current: int

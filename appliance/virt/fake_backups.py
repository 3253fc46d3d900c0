"""Push backups of the fake hypervisor (fake.py's FakeGuest), as libvirt 9.0
behaves (libvirt_backups.py): a backup needs a running domain; a checkpoint
is libvirt's record (`checkpoints`, lost in a migration) plus a bitmap in the
disks (`bitmaps`, which travel with them); an incremental on a checkpoint
libvirt lost is redefined from the bitmaps, or is impossible without them.

The files are real qcow2 files, as libvirt writes them (an incremental's
backing file is the live disk), so that the backup handler's rebase, manifest
and chain checks run for real in unit tests. `cloud.hold_backups` keeps a job
running until it is aborted or released (to test progress and cancel)."""
from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.backup_chain import disk_file, qcow2_virtual_size
from appliance.errors import Invalid
from appliance.virt.domain import AGENT_CHANNEL
from appliance.virt.driver import DriverError, IncrementalImpossible

if TYPE_CHECKING:
    from appliance.virt.fake import FakeDomain, FakeDriver

FAKE_DISK_BYTES = 16 << 20
LIVE_DIR = "/fake/live"  # where the fake's live disks "are" (an incremental's backing file)


def _write_qcow2(path: Path, backing: str | None, size: int = FAKE_DISK_BYTES) -> None:
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        args += ["-u", "-b", backing, "-F", "qcow2"]
    subprocess.run([*args, str(path), str(size)], check=True,  # noqa: S603
                   capture_output=True)


def _live_size(dom_xml: str, file_name: str) -> int:
    """The size of the live disk the domain's XML names with this file name, as
    libvirt's copy has it (FAKE_DISK_BYTES when there is no such file)."""
    for source in ET.fromstring(dom_xml or "<domain/>").iter("source"):  # noqa: S314 - the fake's
        live = source.get("file")
        if live and Path(live).name == file_name and Path(live).is_file():
            with open(live, "rb") as f:  # the qcow2 header's size (bytes 24-31)
                return int.from_bytes(f.read(32)[24:32], "big")
    return FAKE_DISK_BYTES


def _check_made(path: Path, size: int) -> None:
    """As QEMU refuses a made target that is missing or of another size than its disk."""
    try:
        with open(path, "rb") as f:
            made = qcow2_virtual_size(f.fileno(), path.name)
    except OSError as err:
        raise DriverError(f"cannot open {path}: {err.strerror}", "the backup's target file "
                          "is missing") from None
    except Invalid as err:
        raise DriverError(str(err), "the backup's target file is not a qcow2 image") from None
    if made != size:
        raise DriverError(f"Source and target image have different sizes ({size}, {made})",
                          "the backup's target file has another size than the disk")


def live_agent_channel(xml: str, connected: bool) -> str:
    """A running domain's XML as libvirt shows it live: the agent channel's state
    (connected while the guest's agent is in cloud.guest_agents)."""
    name = f'name="{AGENT_CHANNEL}"'
    return xml.replace(name, f'{name} state="{"connected" if connected else "disconnected"}"', 1)


class FakeBackupMethods:
    driver: FakeDriver
    uuid: str

    def _dom(self) -> FakeDomain:
        raise NotImplementedError

    def _backup_note(self, call: str) -> FakeDomain:
        dom = self._dom()
        self.driver.fake_host().calls.append(f"{call} {self.uuid}")
        return dom

    def backup_sizes(self, names: list[str]) -> dict[str, int]:
        with self.driver.cloud.lock:
            dom = self._dom()
            return {name: _live_size(dom.xml, disk_file(name)) for name in names}

    def backup_begin(self, files: dict[str, Path], incremental: str | None,
                     checkpoint: str | None, made: bool = False) -> None:
        cloud = self.driver.cloud
        with cloud.lock:
            dom = self._backup_note(f"backup-begin {incremental or 'full'}")
            if dom.state not in ("running", "paused"):
                raise DriverError("domain is not running", "the domain is not running")
            if dom.job is not None:
                raise DriverError("another job is running", "another job is running")
            if incremental and incremental not in dom.checkpoints:
                if incremental not in dom.bitmaps:
                    raise IncrementalImpossible(
                        f"no checkpoint {incremental}",
                        f"the checkpoint of the last backup ({incremental}) is gone from the "
                        "domain and its bitmaps are not in the disks")
                dom.checkpoints.append(incremental)  # redefined from the disks' bitmaps
            own_volumes = self.driver.fake_host().volumes.get(self.uuid)  # storage of its own
            for name, path in files.items():
                size = _live_size(dom.xml, disk_file(name))
                if own_volumes is not None:  # no file here: the size the host's disk was made with
                    size = self.driver.fake_host().volume_sizes.get(
                        (self.uuid, disk_file(name)), size)
                if made:  # libvirt's REUSE_EXTERNAL: QEMU writes into them, the header stays
                    _check_made(path, size)
                else:
                    _write_qcow2(path, f"{LIVE_DIR}/{disk_file(name)}" if incremental else None,
                                 size)
                if own_volumes is not None:
                    own_volumes.add(path.name)  # in the VM's pool on that host
            if checkpoint:
                dom.checkpoints.append(checkpoint)
                dom.bitmaps.add(checkpoint)
            dom.job = "backup"

    def backup_finished(self) -> bool | None:
        cloud = self.driver.cloud
        with cloud.lock:
            dom = self._dom()
            if dom.job == "backup":
                if cloud.hold_backups:
                    return None
                dom.job = None
                return True
            if dom.job == "aborted":
                dom.job = None
                raise DriverError("the backup job was cancelled", "the backup job was cancelled")
            raise DriverError("no backup job", "the backup job ended without a result")

    def fs_freeze(self) -> int:
        """One file system when the guest has an agent (cloud.guest_agents), else
        libvirt's error for a guest without one."""
        with self.driver.cloud.lock:
            self._backup_note("fs-freeze")
            if self.uuid not in self.driver.cloud.guest_agents:
                why = "guest agent is not responding: QEMU guest agent is not connected"
                raise DriverError(why[0].upper() + why[1:], why)
            return 1

    def fs_thaw(self) -> None:
        with self.driver.cloud.lock:
            self._backup_note("fs-thaw")

    def start_paused(self) -> None:
        with self.driver.cloud.lock:
            dom = self._backup_note("start-paused")
            if dom.state in ("running", "paused"):
                raise DriverError("domain is already running", "the domain is already running")
            dom.state, dom.reason = "paused", "start paused"

"""Push backups through libvirt (the driver delegates here): `backupBegin` with
a checkpoint, full or incremental, its end read from the job's stats, the
guest's file systems frozen through the guest agent when there is one.

What libvirt 9.0 + QEMU 7.2 do, checked on this machine:
- A full push backup writes each disk into a new qcow2 with no backing file;
  an incremental one (`<incremental>CP</incremental>`) writes only the
  clusters changed since checkpoint CP, into a qcow2 whose backing file is the
  LIVE disk (the backup handler rebases it onto its parent's file).
- While the job runs, jobStats() says disk_processed / disk_total (not
  data_*); once done, jobStats(COMPLETED) says success (kept for more than one
  read with KEEP_COMPLETED). A full backup's total is every disk's virtual size.
- A checkpoint is a persistent dirty bitmap in each qcow2 plus libvirt's
  metadata. QEMU stores the bitmaps when it closes the disk: a destroy keeps
  them, a QEMU killed with SIGKILL loses them, and libvirt's checkpoint then
  shows no size (VIR_DOMAIN_CHECKPOINT_XML_SIZE) and an incremental on it
  fails ("checkpoint inconsistent: missing or broken bitmap").
- A live migration (shared storage) carries the bitmaps in the qcow2 but not
  libvirt's checkpoint metadata, which the source's undefine drops; an
  offline move does the same. A checkpoint can be given back by name:
  `checkpointCreateXML(REDEFINE | REDEFINE_VALIDATE)` with its name, creation
  time and disks succeeds only if the bitmaps are in the disks and sound. So a
  backup whose base checkpoint is gone redefines it first, and the chain goes
  on incrementally after a migration; when the bitmaps are gone too the
  backup becomes a full one (IncrementalImpossible says why).
- A plain undefine of an inactive domain with checkpoints is refused ("cannot
  delete inactive domain with N checkpoints"): libvirt_driver's undefine drops
  their metadata (the bitmaps stay in the disks, for a redefine).
- libvirt waits for the guest agent's answer forever by default: the freeze and
  the thaw set a bound first (AGENT_RESPONSE_SECONDS).
- Disks a backup or checkpoint XML does not name are included by default, so
  every disk is named: the VM's qcow2 disks with backup='yes' and
  checkpoint='bitmap', the rest (the read-only seed) with 'no'.
"""
from __future__ import annotations

import logging
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import defusedxml.ElementTree as DefusedET
import libvirt

from appliance.backup_chain import disk_file
from appliance.virt.driver import DriverError, IncrementalImpossible

log = logging.getLogger(__name__)
T = TypeVar("T")

_RUNNING_JOBS = (libvirt.VIR_DOMAIN_JOB_BOUNDED, libvirt.VIR_DOMAIN_JOB_UNBOUNDED)


def _disk_targets(dom: libvirt.virDomain) -> dict[str, str | None]:
    """Every disk's target dev -> the file name it writes (None: read-only or not a file)."""
    root = DefusedET.fromstring(dom.XMLDesc(0))
    found: dict[str, str | None] = {}
    for disk in root.iterfind("./devices/disk"):
        target = disk.find("target")
        source = disk.find("source")
        if target is None or not target.get("dev"):
            continue
        writable = disk.get("device") == "disk" and disk.find("readonly") is None
        file = source.get("file") if source is not None else None
        found[str(target.get("dev"))] = Path(file).name if writable and file else None
    return found


def _devices_of(dom: libvirt.virDomain, names: list[str]) -> tuple[dict[str, str], list[str]]:
    """(disk name -> target dev, devs of every other disk) for the disks named."""
    targets = _disk_targets(dom)  # one XMLDesc: it is on every backup's way
    by_file = {file: dev for dev, file in targets.items() if file}
    chosen: dict[str, str] = {}
    for name in names:
        dev = by_file.get(disk_file(name))
        if dev is None:
            raise DriverError(f"the domain has no disk {name}", f"the domain has no disk {name}")
        chosen[name] = dev
    others = [dev for dev in targets if dev not in chosen.values()]
    return chosen, others


def _checkpoint_xml(name: str, devs: list[str], others: list[str], created: int | None) -> str:
    root = ET.Element("domaincheckpoint")
    ET.SubElement(root, "name").text = name
    if created is not None:
        ET.SubElement(root, "creationTime").text = str(created)
    disks = ET.SubElement(root, "disks")
    for dev in devs:
        ET.SubElement(disks, "disk", {"name": dev, "checkpoint": "bitmap", "bitmap": name}
                      if created is not None else {"name": dev, "checkpoint": "bitmap"})
    for dev in others:
        ET.SubElement(disks, "disk", {"name": dev, "checkpoint": "no"})
    return ET.tostring(root, encoding="unicode")


def _backup_xml(files: dict[str, Path], devs: dict[str, str], others: list[str],
                incremental: str | None) -> str:
    root = ET.Element("domainbackup", {"mode": "push"})
    if incremental:
        ET.SubElement(root, "incremental").text = incremental
    disks = ET.SubElement(root, "disks")
    for name, path in files.items():
        disk = ET.SubElement(disks, "disk", {"name": devs[name], "backup": "yes", "type": "file"})
        ET.SubElement(disk, "target", {"file": str(path)})
        ET.SubElement(disk, "driver", {"type": "qcow2"})
    for dev in others:
        ET.SubElement(disks, "disk", {"name": dev, "backup": "no"})
    return ET.tostring(root, encoding="unicode")


def _check_base(dom: libvirt.virDomain, name: str, devs: list[str], others: list[str]) -> None:
    """The checkpoint an incremental starts from is there (redefined from the
    disks' bitmaps if libvirt lost it); else IncrementalImpossible with the
    reason. Whether its bitmaps are sound on every disk, backupBegin says
    (VIR_ERR_CHECKPOINT_INCONSISTENT): asking first, with the checkpoint's
    sizes, had libvirt merge and measure every bitmap in QEMU, 30-120 ms of an
    incremental here, for an answer backupBegin gives anyway."""
    if name in {c.getName() for c in dom.listAllCheckpoints()}:
        return
    try:
        dom.checkpointCreateXML(
            _checkpoint_xml(name, devs, others, int(time.time())),
            libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE
            | libvirt.VIR_DOMAIN_CHECKPOINT_CREATE_REDEFINE_VALIDATE)
        log.info("checkpoint %s redefined from the disks' bitmaps", name)
    except libvirt.libvirtError as err:
        raise IncrementalImpossible(
            f"checkpoint {name}: {err.get_error_message()}",
            f"the checkpoint of the last backup ({name}) is gone from the domain and its "
            "bitmaps are not in the disks") from err


def backup_sizes(dom: libvirt.virDomain, names: list[str]) -> dict[str, int]:
    """The named disks' virtual sizes, from the domain's block stats: one query of
    QEMU for every disk (blockInfo asked it three times per disk, after an XMLDesc)."""
    stats = dom.connect().domainListGetStats([dom], libvirt.VIR_DOMAIN_STATS_BLOCK, 0)
    block = stats[0][1] if stats else {}
    by_file: dict[str, int] = {}
    for i in range(int(block.get("block.count", 0))):
        path, size = block.get(f"block.{i}.path"), block.get(f"block.{i}.capacity")
        if path and size is not None:
            by_file.setdefault(Path(path).name, int(size))
    sizes = {}
    for name in names:
        if disk_file(name) not in by_file:
            raise DriverError(f"the domain has no disk {name}", f"the domain has no disk {name}")
        sizes[name] = by_file[disk_file(name)]
    return sizes


def backup_begin(dom: libvirt.virDomain, files: dict[str, Path], incremental: str | None,
                 checkpoint: str | None, made: bool = False) -> None:
    devs, others = _devices_of(dom, list(files))
    if incremental:
        _check_base(dom, incremental, list(devs.values()), others)
    checkpoint_xml = (_checkpoint_xml(checkpoint, list(devs.values()), others, None)
                      if checkpoint else None)
    try:
        dom.backupBegin(_backup_xml(files, devs, others, incremental), checkpoint_xml,
                        libvirt.VIR_DOMAIN_BACKUP_BEGIN_REUSE_EXTERNAL if made else 0)
    except libvirt.libvirtError as err:
        if incremental and err.get_error_code() == libvirt.VIR_ERR_CHECKPOINT_INCONSISTENT:
            # e.g. "checkpoint inconsistent: missing or broken bitmap 'ID' for disk 'vda'"
            detail = (err.get_error_message() or "").removeprefix("checkpoint inconsistent: ")
            raise IncrementalImpossible(str(err), f"the dirty bitmaps of checkpoint "
                                        f"{incremental} are missing or inconsistent ({detail}: "
                                        "QEMU was killed, or the disk was replaced)") from err
        raise


def backup_finished(dom: libvirt.virDomain) -> bool | None:
    """None while the job runs, True once it succeeded; DriverError if it failed."""
    if dom.jobInfo()[0] in _RUNNING_JOBS:
        return None
    stats = dom.jobStats(libvirt.VIR_DOMAIN_JOB_STATS_COMPLETED
                         | libvirt.VIR_DOMAIN_JOB_STATS_KEEP_COMPLETED)
    if stats.get("success") and stats.get("type") == libvirt.VIR_DOMAIN_JOB_COMPLETED:
        return True
    if stats.get("type") == libvirt.VIR_DOMAIN_JOB_CANCELLED:
        raise DriverError("the backup job was cancelled", "the backup job was cancelled")
    message = stats.get("errmsg") or "the backup job ended without a result (the guest stopped?)"
    raise DriverError(f"backup job failed: {message}", f"the backup job failed: {message}")


# How long libvirt waits for the agent's answer to a freeze or a thaw. Its default for
# a domain is to wait forever (VIR_DOMAIN_AGENT_RESPONSE_TIMEOUT_BLOCK; only the
# guest-sync it sends first is bounded, at 5 s): a qemu-ga that stopped answering
# would hold the backup's worker, and the VM, for good. A freeze is ~20-50 ms under
# TCG here, with the fsfreeze hook; 10 s leaves room for a hook that flushes a
# database. (A hook that hangs: the freeze fails after 10.0 s, "Guest agent is not
# responding: Guest agent not available for now", measured on libvirt 9.0.)
AGENT_RESPONSE_SECONDS = 10
# libvirt keeps the timeout in the running domain's state (saved with it, so through a
# restart of libvirtd), not in its definition: it is set once per run of a domain on a
# connection, as libvirt writes the domain's status file for it (~1-5 ms here).
_bounded: set[tuple[int, str, int]] = set()  # (connection, domain uuid, the run's id)


def bound_agent_answers(dom: libvirt.virDomain) -> None:
    run = (id(dom.connect()), dom.UUIDString(), dom.ID())  # local: no call to libvirtd
    if run in _bounded:
        return
    try:
        dom.agentSetResponseTimeout(AGENT_RESPONSE_SECONDS, 0)
    except libvirt.libvirtError as err:  # libvirt's test driver has no agent to wait for
        if err.get_error_code() != libvirt.VIR_ERR_NO_SUPPORT:
            raise
    if run[2] > 0:  # a running domain's (a handle from before its start says -1)
        if len(_bounded) > 10_000:
            _bounded.clear()
        _bounded.add(run)


def fs_freeze(dom: libvirt.virDomain) -> int:
    bound_agent_answers(dom)
    return dom.fsFreeze(None, 0)


def fs_thaw(dom: libvirt.virDomain) -> None:
    bound_agent_answers(dom)
    dom.fsThaw(None, 0)


def start_paused(dom: libvirt.virDomain) -> None:
    dom.createWithFlags(libvirt.VIR_DOMAIN_START_PAUSED)


class BackupMethods:
    """The Guest methods of backups, for LibvirtGuest: each calls this module's
    function on the domain through the guest's `call` (libvirt errors become
    DriverErrors there)."""

    def call(self, function: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    def backup_begin(self, files: dict[str, Path], incremental: str | None,
                     checkpoint: str | None, made: bool = False) -> None:
        self.call(backup_begin, files, incremental, checkpoint, made)

    def backup_sizes(self, names: list[str]) -> dict[str, int]:
        return self.call(backup_sizes, names)

    def backup_finished(self) -> bool | None:
        return self.call(backup_finished)

    def fs_freeze(self) -> int:
        return self.call(fs_freeze)

    def fs_thaw(self) -> None:
        self.call(fs_thaw)

    def start_paused(self) -> None:
        self.call(start_paused)

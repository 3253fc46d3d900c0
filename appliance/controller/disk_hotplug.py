"""Data disks and CD-ROM media changed on a running VM (issue 14, part B), and
the same changes made to a stopped VM's files.

live.apply calls the appliers below (APPLIERS["disks"], ["cdroms"],
["boot_order"]) after ensure_defined rewrote the persistent definition and
made the files of new disks. Each applier works from what the running domain
has (its live XML), not from the recorded running spec, so running it again
after a partial failure or a crash does only what is still missing:

- disks: a disk in the spec and not in the domain is attached (a virtio
  target no live disk has: the definition numbers disks by their order, a
  running domain keeps the targets it booted with); one in both whose size
  grew is grown with blockResize; a disk of the VM's folder that the spec no
  longer names is detached, and its file deleted only once the domain no
  longer has it (polled from the live XML). A guest that does not release it
  keeps it, and the removal waits for the next restart (NeedsRestart): the
  file is deleted when the stopped VM is next defined (prune_stopped).
  A removed disk's data is gone: it is deleted, not kept aside.
- cdroms: media inserted or ejected in place (updateDeviceFlags); a drive
  added or removed waits for a restart (drives are cold-plugged).
- boot_order: read by the firmware at boot only; the definition has it already,
  so nothing waits (no restart is asked for a boot order).

A stopped VM gets the same from ensure_defined (grow_and_prune_stopped): its
grown disks are resized with qemu-img (or the host's storage API), and the
files of removed disks deleted.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from appliance import placement
from appliance.controller import live
from appliance.controller.context import MIB, Context, HostLink
from appliance.controller.live import LiveChange, NeedsRestart
from appliance.errors import NotFound
from appliance.virt import domain, domain_devices, images
from appliance.virt.driver import DiskDevice, DriverError, Guest

log = logging.getLogger("appliance.controller")
DISK_PREFIX, DISK_SUFFIX = "disk-", ".qcow2"  # domain.DomainPlan.disk_path's names


def disk_file(vm_dir: Path, name: str) -> Path:
    return vm_dir / f"{DISK_PREFIX}{name}{DISK_SUFFIX}"


def _disk_name(path: str | None, vm_dir: Path) -> str | None:
    """The data disk a live disk's file is, or None (root, seed, anything else)."""
    if not path:
        return None
    file = Path(path)
    if file.parent != vm_dir or not (file.name.startswith(DISK_PREFIX)
                                     and file.name.endswith(DISK_SUFFIX)):
        return None
    return file.name[len(DISK_PREFIX):-len(DISK_SUFFIX)]


def _cache(ctx: Context) -> str:
    """The cache mode domain.build gives disks on this appliance's folders."""
    return "none" if images.supports_direct_io(ctx.config.vms_dir) else "writeback"


# -- disks ------------------------------------------------------------------------------------
def apply_disks(change: LiveChange) -> None:
    ctx, row, guest = change.ctx, change.row, change.guest
    vm_dir = ctx.config.vm_dir(row["id"])
    wanted = {d["name"]: d["size"] for d in change.new or []}
    live = _live_disks(guest)
    attached = {name: dev for dev in live if (name := _disk_name(dev.file, vm_dir))}
    waits: list[str] = []
    for name, size in wanted.items():
        device = attached.get(name)
        try:
            if device is None:
                _attach(ctx, guest, disk_file(vm_dir, name), {d.target for d in live})
                live = _live_disks(guest)
            elif guest.block_capacity(device.target) < size * MIB:
                guest.block_resize(device.target, size * MIB)
        except DriverError as err:
            waits.append(f"disk {name}: {err.reason}")
    for name, device in attached.items():
        if name not in wanted:
            xml = domain.disk_xml(disk_file(vm_dir, name), device.target, _cache(ctx))
            try:
                released = guest.detach_disk(xml, device.target)
            except DriverError as err:
                waits.append(f"disk {name}: {err.reason}")
                continue
            if not released:
                waits.append(f"disk {name}: the guest has not released it; it is removed "
                             "(and its file deleted) at the next restart")
                continue
            _delete_disk_file(ctx, row, name)
            ctx.store.add_event("disk-removed", f"disk {name} detached and deleted", row)
    if waits:
        raise NeedsRestart("; ".join(waits))


def _live_disks(guest: Guest) -> list[DiskDevice]:
    try:
        return [d for d in guest.disk_devices() if d.device == "disk"]
    except DriverError as err:
        raise NeedsRestart(err.reason) from err


def _attach(ctx: Context, guest: Guest, path: Path, taken: set[str]) -> None:
    target = domain_devices.free_disk_target(taken)
    if target is None:
        raise DriverError("no free disk target", "no free disk target left")
    guest.attach_device(domain.disk_xml(path, target, _cache(ctx)))


def _link(ctx: Context, row: dict[str, Any]) -> HostLink:
    return ctx.links.connected(row["host"])


def _own_storage(ctx: Context, host: str | None) -> bool:
    """As VmFiles.own_storage: the host does not see the appliance's folders."""
    if host is None:
        return False
    try:
        storage = ctx.store.get_host(host)["storage"]
    except NotFound:  # an unknown host has no storage of its own
        return False
    return bool(storage) and storage != placement.APPLIANCE_STORAGE


def _delete_disk_file(ctx: Context, row: dict[str, Any], name: str) -> None:
    vm_dir = ctx.config.vm_dir(row["id"])
    path = disk_file(vm_dir, name)
    if _own_storage(ctx, row["host"]):
        plan = _plan_stub(ctx, row)
        _link(ctx, row).driver.delete_volumes(plan, path.name)
    else:
        path.unlink(missing_ok=True)


def _plan_stub(ctx: Context, row: dict[str, Any]) -> domain.DomainPlan:
    """What the driver's volume calls read of a plan: the VM's id and folder."""
    return domain.DomainPlan(vm_id=row["id"], domain_name="", vm_name=row["name"],
                             instance_id=ctx.instance_id, spec=row["spec"],
                             domain_type=ctx.domain_type, vm_dir=ctx.config.vm_dir(row["id"]),
                             mac=row.get("mac") or "", seed_iso=None, direct_io=False)


# -- CD-ROM media -------------------------------------------------------------------------------
def iso_files(ctx: Context, spec: dict[str, Any]) -> list[Path | None]:
    """Each drive's ISO file, from the image store (the spec names images, never paths)."""
    files: list[Path | None] = []
    for name in spec.get("cdroms") or []:
        files.append(Path(ctx.store.get_image(name)["path"]) if name else None)
    return files


def apply_cdroms(change: LiveChange) -> None:
    old, new = list(change.old or []), list(change.new or [])
    if len(old) != len(new):
        raise NeedsRestart("a CD-ROM drive is added or removed at the next restart "
                           "(drives are cold-plugged); media changes in place")
    files = iso_files(change.ctx, {"cdroms": new})
    failed: list[str] = []
    for index, (before, after) in enumerate(zip(old, new, strict=True)):
        if before == after:
            continue
        try:
            change.guest.update_device(domain_devices.cdrom_xml(index, files[index]))
        except DriverError as err:
            failed.append(f"drive {index}: {err.reason}")
            continue
        what = f"{after} inserted" if after else "ejected"
        change.ctx.store.add_event("media-changed", f"CD-ROM drive {index}: {what}", change.row)
    if failed:
        raise NeedsRestart("; ".join(failed))


def apply_boot_order(change: LiveChange) -> None:
    """Nothing to do to a running domain: the firmware reads the order at the next
    boot, from the definition ensure_defined wrote."""


# -- a stopped VM's files -------------------------------------------------------------------------
def grow_and_prune_stopped(ctx: Context, link: HostLink, plan: domain.DomainPlan,
                           row: dict[str, Any], own_storage: bool) -> None:
    """The files of a VM whose domain is not running follow its spec: disks grown
    to their size, the files of disks the spec no longer has deleted."""
    wanted = {d["name"]: d["size"] * MIB for d in row["spec"].get("disks") or []}
    if own_storage:
        for name, size in wanted.items():
            link.driver.grow_volume(plan, plan.disk_path(name).name, size)
        files = link.driver.volume_names(plan)
    else:
        for name, size in wanted.items():
            path = plan.disk_path(name)
            if path.exists() and images.qcow2_virtual_size(path) < size:
                images.grow(path, size)
                ctx.store.add_event("disk-grown", f"disk {name} grown to {size // MIB} MiB", row)
        files = [path.name for path in plan.vm_dir.glob(f"{DISK_PREFIX}*{DISK_SUFFIX}")]
    # A removed disk's file goes, so a disk added later under its name starts blank.
    for file in files:
        name = _disk_name(str(plan.vm_dir / file), plan.vm_dir)
        if name is not None and name not in wanted:
            if own_storage:
                link.driver.delete_volumes(plan, file)
            else:
                (plan.vm_dir / file).unlink(missing_ok=True)
            ctx.store.add_event("disk-removed", f"disk {name} deleted", row)


# live.py imports this module last, and this registers its appliers there.
live.APPLIERS.update({"disks": apply_disks, "cdroms": apply_cdroms, "boot_order": apply_boot_order})

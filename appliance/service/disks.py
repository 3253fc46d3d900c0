"""A VM's data disks and CD-ROM drives, one at a time (issue 14, part B).

Every change here is a change of the spec (`disks`, `cdroms`) made through
update_vm, so it passes the same checks (quota, claims, lock, If-Match) and
is applied the same way: the controller grows, attaches, detaches or changes
media on a running domain (controller/disk_hotplug.py) and on the next define
of a stopped one. The rules a change of those fields must keep are here too
(check_disk_changes, check_media), called by update_vm and create:

- a disk grows, never shrinks (a smaller size would cut the guest's file
  system; libvirt's blockResize would do it without a word);
- adding or removing a disk is refused while the VM has snapshots: an
  internal snapshot lives in every disk it was taken of, and a revert needs
  the same disks (QEMU refuses to load a snapshot a disk lacks);
- growth must fit the VM's host (the scheduler's DiskFilter, with its reason);
- a CD-ROM holds an ISO image of the image store, a root disk never does.
"""
from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from appliance import placement
from appliance import spec as specs
from appliance.config import Config
from appliance.errors import Conflict, Invalid, NotFound
from appliance.image_store import ISO_KIND
from appliance.model.defaults import MAX_DISK_MIB
from appliance.model.media import DEFAULT_NEW_DISK_MIB, MAX_CDROMS
from appliance.service.base import ServiceBase
from appliance.store import Row, Store
from scheduler import Request, schedule

GIB = 1024 ** 3
MIB = 1024 ** 2


def check_media(store: Store, spec: dict[str, Any]) -> None:
    """The root image is a disk image; each CD-ROM's image exists and is an ISO."""
    if store.image_exists(spec["image"]) and _kind(store.get_image(spec["image"])) == ISO_KIND:
        raise Invalid(f"{spec['image']!r} is an ISO image: it goes in a CD-ROM drive "
                      '("cdroms"); a VM\'s root disk is made from a disk image', "image")
    for index, name in enumerate(spec.get("cdroms") or []):
        if not name:
            continue
        field = f"cdroms[{index}]"
        if not store.image_exists(name):
            raise Invalid(f"no image named {name!r}", field)
        if _kind(store.get_image(name)) != ISO_KIND:
            raise Invalid(f"{name!r} is a disk image, not an ISO image", field)


def _kind(image: Row) -> str:
    return image.get("kind") or "disk"


def check_disk_changes(store: Store, config: Config, now: float, row: Row,
                       old: dict[str, Any], new: dict[str, Any]) -> None:
    """Growth only, no disk added or removed under snapshots, growth that fits the host."""
    before = {d["name"]: d["size"] for d in old.get("disks") or []}
    after = {d["name"]: d["size"] for d in new.get("disks") or []}
    for index, disk in enumerate(new.get("disks") or []):
        size = before.get(disk["name"])
        if size is not None and disk["size"] < size:
            raise Invalid(f"a disk cannot shrink (from {size} MiB to {disk['size']} MiB): "
                          "its guest's file systems would be cut", f"disks[{index}].size")
    if set(before) != set(after):
        snapshots = [s["name"] for s in store.list_snapshots(row["id"])]
        if snapshots:
            change = "added" if set(after) - set(before) else "removed"
            names = ", ".join(snapshots[:5])
            raise Conflict(
                f"a disk cannot be {change} while the VM has snapshots ({names}):"
                " a revert needs the disks they were taken of; delete them first", "disks")
    grown = sum(after[name] - before.get(name, 0) for name in after
                if after[name] > before.get(name, 0))
    if grown and row["host"]:
        _check_host_room(store, config, now, row, new, grown * MIB)


def _check_host_room(store: Store, config: Config, now: float, row: Row,
                     spec: dict[str, Any], more_bytes: int) -> None:
    """The bytes the disks grow by must fit the VM's host (Nova's resize claim, for
    disks): the host's claims count the VM as it is, so only the growth is asked."""
    request = Request(vm=spec["name"], cpus=0, memory_mib=0, disk_gib=more_bytes / GIB,
                      only_hosts=frozenset([row["host"]]))
    decision = schedule(placement.host_states(store, now, config.heartbeat_age), request,
                        placement.policy(config))
    if decision.host is None and decision.rejected:
        rejected = decision.rejected[0]
        if rejected.filter != "ComputeFilter":  # a host that is down still takes the change
            raise Conflict(f"does not fit on host {row['host']}: {rejected.reason}", "disks")


class Disks(ServiceBase):
    if TYPE_CHECKING:  # the vms' part, beside this one in Service
        def update_vm(self, name: str, patch: Any, if_match: int | None = None,
                      replace: bool = False) -> tuple[dict[str, Any], Row | None]: ...

    # -- data disks ---------------------------------------------------------------------
    def list_disks(self, vm: str) -> list[dict[str, Any]]:
        row = self.vm_row(vm, with_xml=False)
        return [self._disk_view(row, d) for d in row["spec"].get("disks") or []]

    def get_disk(self, vm: str, disk: str) -> dict[str, Any]:
        row = self.vm_row(vm, with_xml=False)
        return self._disk_view(row, self._find_disk(row, disk))

    @staticmethod
    def _disk_view(row: Row, disk: dict[str, Any]) -> dict[str, Any]:
        running = row.get("running_spec")
        attached = None  # what the running domain has (None: not running or not recorded)
        if running and row["observed_state"] in ("running", "paused"):
            live = {d["name"]: d["size"] for d in json.loads(running).get("disks") or []}
            attached = live.get(disk["name"])
        return {"name": disk["name"], "size": disk["size"], "size_bytes": disk["size"] * MIB,
                "file": f"disk-{disk['name']}.qcow2",
                "attached_size": attached}

    @staticmethod
    def _find_disk(row: Row, disk: str) -> dict[str, Any]:
        for entry in row["spec"].get("disks") or []:
            if entry["name"] == disk:
                return entry
        raise NotFound(f"{row['name']} has no disk named {disk!r}", "disk")

    def add_disk(self, vm: str, disk: str, size: Any = None,
                 if_match: int | None = None) -> Row | None:
        """A new blank data disk (hot-plugged into a running VM); size default 1 GiB."""
        specs.validate_name(disk, "disk")
        row = self.vm_row(vm, with_xml=False)
        disks = list(row["spec"].get("disks") or [])
        if any(d["name"] == disk for d in disks):
            raise Conflict(f"{vm} has a disk named {disk!r}", "disk")
        mib = DEFAULT_NEW_DISK_MIB if size is None else _size(size)
        return self.update_vm(vm, {"disks": [*disks, {"name": disk, "size": mib}]}, if_match)[1]

    def resize_disk(self, vm: str, disk: str, size: Any, if_match: int | None = None) -> Row | None:
        """Grow a data disk (live when the VM runs); a smaller size is refused."""
        row = self.vm_row(vm, with_xml=False)
        self._find_disk(row, disk)
        mib = _size(size)
        disks = [{**d, "size": mib} if d["name"] == disk else d
                 for d in row["spec"].get("disks") or []]
        return self.update_vm(vm, {"disks": disks}, if_match)[1]

    def remove_disk(self, vm: str, disk: str, if_match: int | None = None) -> Row | None:
        """Detach (live) and delete a data disk; its data is gone once the detach is done."""
        row = self.vm_row(vm, with_xml=False)
        self._find_disk(row, disk)
        disks = [d for d in row["spec"].get("disks") or [] if d["name"] != disk]
        return self.update_vm(vm, {"disks": disks}, if_match)[1]

    # -- CD-ROM drives --------------------------------------------------------------------
    def get_cdrom(self, vm: str, index: str | int) -> str:
        row = self.vm_row(vm, with_xml=False)
        cdroms = row["spec"].get("cdroms") or []
        return cdroms[_drive(index, len(cdroms))]

    def set_cdrom(self, vm: str, index: str | int, image: str,
                  if_match: int | None = None) -> Row | None:
        """Insert an ISO image into a drive, or eject it (""): live on a running VM."""
        row = self.vm_row(vm, with_xml=False)
        cdroms = list(row["spec"].get("cdroms") or [])
        cdroms[_drive(index, len(cdroms))] = image.strip()
        return self.update_vm(vm, {"cdroms": cdroms}, if_match)[1]


def _size(value: Any) -> int:
    return specs.parse_size_mib(value.strip() if isinstance(value, str) else value,
                                "size", 1, MAX_DISK_MIB)


def _drive(index: str | int, count: int) -> int:
    """A drive's index (0..count-1) from a path segment or a number."""
    text = str(index)
    if not text.isdigit() or len(text) > 2 or int(text) >= min(count, MAX_CDROMS):
        raise NotFound(f"no CD-ROM drive {text[:8]!r} (the VM has {count}; "
                       "drives are added through the spec's cdroms)", "cdrom")
    return int(text)

"""The mount's data disks and CD-ROM drives of a VM (issue 14, part B), at the REST paths:

    vms/NAME/disks/              mkdir D = add a blank 1 GiB disk (hot-plugged when running),
                                 rmdir D = detach it and delete it (its data is gone)
    vms/NAME/disks/D/size        rw  MiB; `echo 20G > size` grows it (live); smaller: EINVAL
    vms/NAME/disks/D/info.json   ro  name, size, file, the size the running domain has
    vms/NAME/cdroms/N            rw  the ISO image in drive N; `echo debian-12 > cdroms/0`
                                     inserts it, `echo "" > cdroms/0` ejects (live)

So a disk of another size is `mkdir vms/web1/disks/logs && echo 10G >
vms/web1/disks/logs/size` (it grows right after it is made: disks only grow).
Drives themselves are added or removed through spec.json's `cdroms` (they are
cold-plugged: that waits for a restart).

fs/tree.py hands every path under these to this module (`claims`), under
projects/P/vms/ too. Each read, write, mkdir and rmdir is one service call
(appliance/service/disks.py), and a refusal is the service's error turned
into its errno at the boundary (EINVAL for a shrink, EBUSY under snapshots...),
but for a name taken, which is EEXIST as mkdir(2) says. An rmdir of a disk the
running guest did not release answers EBUSY: the removal is recorded and done
at the VM's next restart.
"""
from __future__ import annotations

import errno
import json
from collections.abc import Callable

import pyfuse3

from appliance import errors
from appliance.file_kinds import Written, json_text
from appliance.service import Service
from fs import projects
from fs.nodes import Node, Path, file_node

DISKS, CDROMS = "disks", "cdroms"
VM_DIRS = (DISKS, CDROMS)  # what vms/NAME/ holds for this module
DISK_FILES = ("size", "info.json")


class DiskTree:
    def __init__(self, service: Service, clock: Callable[[], float]):
        self.service = service
        self.clock = clock

    # -- which paths are these ------------------------------------------------------------
    @staticmethod
    def claims(path: Path) -> bool:
        return len(path) >= 3 and path[0] == "vms" and path[2] in VM_DIRS

    @staticmethod
    def is_dir(path: Path) -> bool:
        return ((len(path) == 3 and path[0] == "vms" and path[2] in VM_DIRS)
                or (len(path) == 4 and path[0] == "vms" and path[2] == DISKS))

    @staticmethod
    def is_disks_dir(path: Path) -> bool:
        """vms/NAME/disks: where mkdir and rmdir add and remove disks."""
        return len(path) == 3 and path[0] == "vms" and path[2] == DISKS

    # -- what a path is, holds, reads ------------------------------------------------------
    def stat(self, path: Path) -> Node:
        vm = self.service.vm_row(path[1], with_xml=False)
        created, changed = vm["created"], vm["updated"]
        if len(path) == 3 or (len(path) == 4 and path[2] == DISKS):
            if len(path) == 4:
                self.service.get_disk(path[1], path[3])  # it exists
            return Node(True, created=created, changed=changed)
        writable = path[2] == CDROMS or path[-1] == "size"
        return file_node(self.content(path), created, changed, writable)

    def entries(self, path: Path) -> list[tuple[str, Node]]:
        if not self.is_dir(path):
            raise pyfuse3.FUSEError(errno.ENOTDIR)
        vm = self.service.vm_row(path[1], with_xml=False)
        created, changed = vm["created"], vm["updated"]
        if path[2] == CDROMS:
            drives = vm["spec"].get("cdroms") or []
            return [(str(i), file_node(f"{image}\n".encode(), created, changed, True))
                    for i, image in enumerate(drives)]
        if len(path) == 3:
            return [(d["name"], Node(True, created=created, changed=changed))
                    for d in vm["spec"].get("disks") or []]
        return [(file, self.stat((*path, file))) for file in DISK_FILES]

    def content(self, path: Path) -> bytes:
        if len(path) == 4 and path[2] == CDROMS:
            return f"{self.service.get_cdrom(path[1], path[3])}\n".encode()
        if len(path) == 5 and path[2] == DISKS and path[4] in DISK_FILES:
            disk = self.service.get_disk(path[1], path[3])
            text = f"{disk['size']}\n" if path[4] == "size" else json_text(disk)
            return text.encode()
        raise errors.NotFound(f"no file {'/'.join(path)[:200]!r} here")

    # -- changes ---------------------------------------------------------------------------
    def write(self, path: Path, text: str) -> Written:
        """The operation a write of cdroms/N or disks/D/size started (the tree waits for it)."""
        if len(path) == 4 and path[2] == CDROMS:
            op = self.service.set_cdrom(path[1], path[3], text.strip())
        elif len(path) == 5 and path[2] == DISKS and path[4] == "size":
            op = self.service.resize_disk(path[1], path[3], text.strip())
        else:
            raise errors.Forbidden(f"{'/'.join(path)[:200]} is read-only")
        return Written(path[1], (op,) if op else ())

    def _finish(self, op: dict | None) -> None:
        if op is not None:
            self.service.finish(op, timeout=self.service.config.wait_timeout)

    # mkdir and rmdir (fs/operations.py), under projects/P/vms/ too: each waits for its work.
    @staticmethod
    def is_disks_parent(path: Path) -> bool:
        return DiskTree.is_disks_dir(projects.split(path)[1])

    @projects.in_project
    def add_disk(self, path: Path) -> None:
        """mkdir vms/NAME/disks/D: a blank disk of the default size; EEXIST for a name taken."""
        if any(d["name"] == path[3] for d in self.service.list_disks(path[1])):
            raise pyfuse3.FUSEError(errno.EEXIST)
        self._finish(self.service.add_disk(path[1], path[3]))

    @projects.in_project
    def remove_disk(self, path: Path) -> None:
        self._finish(self.service.remove_disk(path[1], path[3]))
        self._check_removed(path)

    def _check_removed(self, path: Path) -> None:
        """After an rmdir's operation: EBUSY (Conflict) while the running guest keeps the disk."""
        vm = self.service.vm_row(path[1], with_xml=False)
        running = json.loads(vm.get("running_spec") or "{}")
        if vm["observed_state"] in ("running", "paused") and any(
                d["name"] == path[3] for d in running.get("disks") or []):
            raise errors.Conflict(f"the guest has not released disk {path[3]}: it is removed "
                                  "(and its file deleted) at the VM's next restart", "disks")

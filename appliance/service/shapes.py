"""Rebuild (Nova's): the root disk made again from an image, everything else kept;
and what a suspended or shelved VM refuses (snapshots, backups, clones).

A rebuild is the only way a VM's image changes (spec.image stays immutable for
PATCH and spec.json). It records the new image and a new cloud-init instance
id (vms.instance_id) at once, and a REBUILD operation (controller/shapes.py)
that stops a running guest, makes the root disk anew, writes the seed with the
new id and starts it again. Its name, MAC, fixed address, data disks and
backups stay. Its snapshots would not: each holds the old root disk inside it
(internal snapshots live in every writable qcow2, so the data disks hold their
share too and a revert would put back half a VM), so a VM with snapshots is
refused until they are deleted, as Nova refuses a rebuild of a server whose
volumes have snapshots it cannot carry.
"""
from __future__ import annotations

from typing import Any

from appliance import quotas
from appliance.errors import Conflict, Invalid
from appliance.model import DesiredState, OpKind, VMState
from appliance.service.base import ServiceBase
from appliance.store import Row

# The body's fields of POST /v1/vms/NAME/rebuild.
REBUILD_FIELDS = frozenset({"image"})
MAX_IMAGE_NAME = 255


def refuse_while_saved(observed: str, what: str) -> None:
    """A suspended VM's disks belong with the memory saved on its host (a
    snapshot, a backup or a clone taken from them would be the disks of a
    moment the guest has not left); a shelved VM has no domain to take them
    from: both say how to proceed (409)."""
    if observed == VMState.SUSPENDED:
        raise Conflict(f"the VM is suspended: {what} waits until it is resumed (running) or "
                       "its save is discarded (stopped)", "state")
    if observed == VMState.SHELVED:
        raise Conflict(f"the VM is shelved: unshelve it (running) before {what}", "state")


def parse_rebuild(body: Any) -> str | None:
    """The image asked for, or None for the VM's own."""
    if body is None:
        return None
    if not isinstance(body, dict):
        raise Invalid('the body must be a JSON object: {"image": NAME} or {}', None)
    unknown = set(body) - REBUILD_FIELDS
    if unknown:
        raise Invalid("unknown field; the only field is image", sorted(unknown)[0])
    image = body.get("image")
    if image is None:
        return None
    if not isinstance(image, str) or not image.strip() or len(image) > MAX_IMAGE_NAME:
        raise Invalid("must be the name of an image", "image")
    return image.strip()


class Rebuilds(ServiceBase):
    def rebuild_vm(self, name: str, body: Any = None, if_match: int | None = None) -> Row:
        """Record the image (the VM's own when none is named) and a new instance
        id, and the REBUILD operation; 409 while it has snapshots, is suspended,
        shelved, moving or being deleted."""
        asked = parse_rebuild(body)
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            observed = self._observed(row)
            refuse_while_saved(observed, "a rebuild")
            if observed == VMState.MIGRATING or self._moving(row):
                raise Conflict(f"the VM is {observed}; rebuild it when it settles", "state")
            if self._pending_op(row, OpKind.REBUILD):
                raise Conflict("a rebuild of this VM is already under way", "image")
            snapshots = self.store.count_snapshots(row["id"])
            if snapshots:
                raise Conflict(f"the VM has {snapshots} snapshot(s), which hold its old root disk "
                               "(and a share of its data disks): delete them before a rebuild",
                               "snapshots")
            image = asked or row["spec"]["image"]
            if image != row["spec"]["image"]:  # the pool's roll-outs give it the pool's image
                self._refuse_for_pool_member(row, "rebuilt from its pool's image only "
                                             "(make a new pool for another image)", "image")
            self.store.get_image(image)  # NotFound names the field
            spec = {**row["spec"], "image": image}
            quota = self.store.get_project(row["project"])["quota"]
            quotas.check(self.store, row["project"], quota, spec, row["spec"], row["id"])
            instance_id = str(self.uuidgen())
            self.store.update_vm(row["id"], expect_generation=row["generation"], spec=spec,
                                 instance_id=instance_id)
            row = self.store.get_vm_by_id(row["id"]) or row
            self.store.add_event("rebuild-requested", f"rebuild from image {image} requested "
                                 f"(cloud-init instance id {instance_id}); the guest "
                                 + ("is stopped, rebuilt and started"
                                    if row["desired_state"] in (DesiredState.RUNNING,
                                                                DesiredState.PAUSED)
                                    else "stays stopped"), row)
            op = self._new_op(row, OpKind.REBUILD, {"image": image})
        self.notify()
        return op

"""Suspend (libvirt's managed save), shelve and unshelve (Nova's), rebuild (Nova's).

- suspend: the guest's memory goes to a file libvirt keeps on the VM's host
  (virt/libvirt_saves.py) and its QEMU ends: RAM freed. The domain stays
  defined, shut off with a save image (observed "suspended"); a start restores
  it (Lifecycle.boot), a stop discards the save (Lifecycle.stop).
- shelve: a graceful stop (as a stop), the save image of a suspended VM
  dropped, the domain undefined (its snapshots' metadata detached first: the
  store keeps it), its DHCP reservation released. The disks stay where they
  are: the VM's `host` column keeps naming that host, and an observed
  "shelved" VM claims nothing there (appliance/placement.py).
- unshelve: the service asked the scheduler (the operation's params name the
  target, which the open operation claims as a move's does); when the
  target's storage differs, the disks are copied as an offline move copies
  them (VmFiles.copy_disks), then the record follows, the domain is defined
  there and started. A failure before the domain is defined leaves the VM
  shelved where its disks are (desired state shelved again, with the reason).
- rebuild: the root disk is made again from the image the service recorded
  in the spec (a new overlay, as a create makes), the seed again with the new
  instance id the service recorded (cloud-init runs as on a first boot); data
  disks, MAC and addresses are untouched. A running VM is stopped first and
  started after. The checkpoints of the old root disk are dropped (its dirty
  bitmaps went with it): the next backup is a full one; the backups stay.
"""
from __future__ import annotations

import logging

from appliance.controller import firewall, networks
from appliance.controller.context import Context, HostLink
from appliance.controller.files import VmFiles
from appliance.controller.lifecycle import Lifecycle
from appliance.controller.operations import Handler
from appliance.errors import Failed
from appliance.virt.driver import DriverError, Guest

log = logging.getLogger("appliance.controller")


class LifecycleShapes:
    def __init__(self, ctx: Context, files: VmFiles, lifecycle: Lifecycle):
        self.ctx = ctx
        self.files = files
        self.lifecycle = lifecycle

    def handlers(self) -> dict[str, Handler]:
        return {"suspend": self.suspend, "shelve": self.shelve, "unshelve": self.unshelve,
                "rebuild": self.rebuild}

    def _event(self, kind: str, message: str, row: dict, op: dict) -> None:
        self.ctx.store.add_event(kind, message, row, op["id"])

    # -- suspend --------------------------------------------------------------------------
    def suspend(self, op: dict, row: dict) -> None:
        guest = self.ctx.links.connected(row["host"]).lookup(row["id"])
        state = guest.state()[0] if guest is not None else "stopped"
        if state == "suspended":
            return
        if guest is None or not guest.is_active():
            raise Failed(f"the VM is {state}: only a running or paused guest has memory to save")
        started = self.ctx.monotonic()
        guest.managed_save()
        self._event("suspended", f"memory saved to disk on host {row['host']} in "
                    f"{self.ctx.monotonic() - started:.1f} s; its QEMU ended (RAM freed)", row, op)

    # -- shelve ---------------------------------------------------------------------------
    def shelve(self, op: dict, row: dict) -> None:
        link = self.ctx.links.connected(row["host"])
        guest = link.lookup(row["id"])
        if guest is not None:
            if guest.is_active():
                self.lifecycle.stop(op, row)  # graceful, as a stop
            self.lifecycle.discard_save(guest, row, op)
            self.files.snapshot_metadata.detach(guest, row["id"])  # else libvirt refuses
            guest.undefine()
        link.driver.release_address(self.ctx.store, networks.resolved(self.ctx.store, row))
        firewall.remove(link.driver, row, quiet=True)  # its network filter: unshelve makes it
        with self.ctx.store.transaction():
            self.ctx.store.update_vm(row["id"], bump=False, observed_state="shelved",
                                     observed_reason="", state_changed=self.ctx.clock())
            self._event("shelved", f"stopped and undefined on host {row['host']}; its disks stay "
                        f"on that host's storage ({self.files.storage_of(row['host'])}); its "
                        "vCPUs, memory and disk are no longer claimed there", row, op)

    # -- unshelve -------------------------------------------------------------------------
    def unshelve(self, op: dict, row: dict) -> None:
        target = op["params"].get("target") or row["host"]
        try:
            row = self._bring_disks(op, row, target)
            guest = self.files.ensure_defined(row)
        except Exception as err:
            with self.ctx.store.transaction():
                fresh = self.ctx.store.get_vm_by_id(row["id"])
                if fresh is not None and fresh["observed_state"] == "shelved":
                    self.ctx.store.update_vm(row["id"], bump=False, desired_state="shelved")
                    reason = err.reason if isinstance(err, DriverError) else str(err)
                    self._event("unshelve-failed", f"not unshelved ({reason}); it stays shelved "
                                f"with its disks on {fresh['host']}", fresh, op)
            raise
        booted = self.lifecycle.boot(op, row, guest)
        self._event("unshelved", f"defined{' and started' if booted else ''} on host {row['host']}",
                    row, op)

    def _bring_disks(self, op: dict, row: dict, target: str) -> dict:
        """The disks where the target sees them (copied when its storage differs from
        that of the host they are on), then the record names the target."""
        source = row["host"]
        if target == source:
            return row
        copy = self.files.storage_of(source) != self.files.storage_of(target)
        if copy:
            source_link = self.ctx.links.get(source)
            if source_link is None or not source_link.connected:
                raise Failed(f"its disks are on {source}, which is unreachable")
            self.files.copy_disks(row, source_link, self.ctx.links.connected(target))
        with self.ctx.store.transaction():
            self.ctx.store.update_vm(row["id"], bump=False, host=target)
            self._event("migrated", f"unshelved from {source} to {target}"
                        + (" (disks copied)" if copy else " (its storage is shared)"), row, op)
        if copy:
            self.files.drop_copy(row, self.ctx.links.get(source))
        fresh = self.ctx.store.get_vm_by_id(row["id"])
        if fresh is None:
            raise Failed("the VM no longer exists")
        return fresh

    # -- rebuild --------------------------------------------------------------------------
    def rebuild(self, op: dict, row: dict) -> None:
        link = self.ctx.links.connected(row["host"])
        guest = link.lookup(row["id"])
        if guest is not None and guest.is_active():
            self.lifecycle.stop(op, row)
        if guest is not None:
            self.lifecycle.discard_save(guest, row, op)
            self._drop_checkpoints(guest, row)
        row = self.ctx.store.get_vm_by_id(row["id"]) or row
        if not op["params"].get("reimaged"):  # run again after a crash: not twice
            self._remove_root_disk(row, link)
        guest = self.files.ensure_defined(row)  # the root disk made afresh, the seed anew
        self.ctx.store.update_operation(op["id"], params={**op["params"], "reimaged": True})
        self._event("rebuilt", f"root disk made again from image {row['spec']['image']}; "
                    f"cloud-init instance id {row['instance_id'] or row['id']}; data disks kept",
                    row, op)
        if row["desired_state"] in ("running", "paused") and self.lifecycle.boot(op, row, guest):
            if row["desired_state"] == "paused":
                guest.suspend()

    def _remove_root_disk(self, row: dict, link: HostLink) -> None:
        plan = self.files.plan(row)
        if self.files.own_storage(link.name):
            link.driver.delete_volumes(plan, plan.root_disk.name)
        else:
            plan.root_disk.unlink(missing_ok=True)

    def _drop_checkpoints(self, guest: Guest, row: dict) -> None:
        """The old root disk's dirty bitmaps are gone with it: libvirt's checkpoints
        would promise an incremental the disks cannot give (the next backup is full)."""
        try:
            names = guest.checkpoint_names()
        except DriverError:
            return  # a driver without checkpoints
        for name in reversed(names):
            try:
                guest.checkpoint_delete(name, metadata_only=True)
            except DriverError as err:
                log.info("dropping checkpoint %s of %s: %s", name, row["name"], err)

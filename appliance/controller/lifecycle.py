"""Lifecycle operations: create, update, start, stop, pause, resume, reboot,
force-stop, delete, converge. Each is idempotent: after a crash an operation
found running is simply executed again."""
from __future__ import annotations

import logging
import shutil

from appliance.controller import firewall, live, networks
from appliance.controller.context import Context
from appliance.controller.files import VmFiles
from appliance.controller.operations import Handler
from appliance.controller.sources import NewVmSources
from appliance.controller.vms import VmObserver
from appliance.errors import Failed
from appliance.model.states import CLAIMING_DESIRED_STATES
from appliance.virt import domain
from appliance.virt.driver import DriverError, Guest

log = logging.getLogger("appliance.controller")


def port_forwards(row: dict) -> list[dict]:
    network = row["spec"]["network"]
    return network.get("port_forwards", []) if network["type"] == "user" else []


class Lifecycle:
    def __init__(self, ctx: Context, files: VmFiles, observer: VmObserver):
        self.ctx = ctx
        self.files = files
        self.observer = observer
        self.sources = NewVmSources(ctx, files)

    def handlers(self) -> dict[str, Handler]:
        return {
            "create": self.create,
            "update": self.update,
            "start": self.start,
            "resume": self.start,
            "converge": self.start,
            "pause": self.pause,
            "stop": self.stop,
            "force-stop": self.force_stop,
            "reboot": self.reboot,
            "delete": self.delete,
        }

    def _lookup(self, row: dict) -> Guest | None:
        """The VM's domain on its host (which must be reachable)."""
        return self.ctx.links.connected(row["host"]).lookup(row["id"])

    def _current(self, vm_id: str) -> dict:
        """The VM's row as stored now; Failed when it is gone (as OperationRunner.execute
        says before a handler runs)."""
        row = self.ctx.store.get_vm_by_id(vm_id)
        if row is None:
            raise Failed("the VM no longer exists")
        return row

    # -- the handlers ------------------------------------------------------------------------
    def create(self, op: dict, row: dict) -> None:
        self.sources.fill(op, row)  # a clone's or a restore's disks, before the definition
        guest = self.files.ensure_defined(row)
        self.observer.observe(row, guest, record_xml=True)
        row = self._current(row["id"])
        if row["desired_state"] in ("running", "paused") and self.boot(op, row, guest):
            if row["desired_state"] == "paused":
                guest.suspend()

    def update(self, op: dict, row: dict) -> None:
        if row["observed_state"] == "shelved":
            return  # defined nowhere: its unshelve defines it as the spec says then
        guest = self.files.ensure_defined(row)
        if not guest.is_active():
            if not guest.has_managed_save():  # a suspended one resumes as saved: what waits, waits
                self.ctx.store.update_vm(row["id"], bump=False, restart_required=0)
            return
        live.apply(self.ctx, row, guest)  # what can change live does; the rest waits for a boot

    def start(self, op: dict, row: dict) -> None:
        """Also resume and converge: whatever the guest is, it ends up running."""
        guest = self._lookup(row)
        state = guest.state()[0] if guest is not None else "stopped"
        if guest is not None and state == "paused":
            guest.resume()
            return
        if state in ("running", "stopping"):
            return
        self.boot(op, row, self.files.ensure_defined(row))

    def pause(self, op: dict, row: dict) -> None:
        guest = self._lookup(row)
        if guest is None or not guest.is_active():
            guest = self.files.ensure_defined(row)
            if not self.boot(op, row, guest):
                return
        if guest.state()[0] != "paused":
            guest.suspend()

    def force_stop(self, op: dict, row: dict) -> None:
        guest = self._lookup(row)
        if guest is not None and guest.is_active():
            guest.destroy()
        elif guest is not None:
            self.discard_save(guest, row, op)

    def discard_save(self, guest: Guest, row: dict, op: dict) -> None:
        """A suspended VM asked to stop (or shelve, rebuild) forgets its saved memory:
        the next start boots afresh (libvirt's start --force-boot; Proxmox's stop)."""
        if guest.has_managed_save():
            guest.discard_managed_save()
            self.ctx.store.add_event("save-discarded", "its memory saved at suspend was "
                                     "discarded; the next start boots afresh", row, op["id"])

    def stop(self, op: dict, row: dict) -> None:
        """ACPI shutdown; after the grace period (or when a force-stop is queued), pull the plug."""
        guest = self._lookup(row)
        if guest is None or not guest.is_active():
            if guest is not None:
                self.discard_save(guest, row, op)
            return
        grace = row["spec"]["termination_grace_period"]
        deadline = self.ctx.clock() + grace
        try:
            guest.shutdown()
        except DriverError as err:
            log.info("shutdown of %s refused (%s); destroying", row["name"], err)
            deadline = 0
        while guest.is_active() and self.ctx.clock() < deadline:
            if self.ctx.force_stop_waiting(row["id"]):
                break
            self.ctx.sleep(0.1)
        if guest.is_active():
            guest.destroy()
            self.ctx.store.add_event(
                "forced-off",
                f"the guest did not power off within {grace} s; forced off",
                row,
                op["id"],
            )

    def reboot(self, op: dict, row: dict) -> None:
        """A restart as KubeVirt does it: graceful stop, then start with the current spec."""
        self.stop(op, row)
        guest = self.files.ensure_defined(self._current(row["id"]))
        self.boot(op, row, guest)

    def delete(self, op: dict, row: dict) -> None:
        link = self.ctx.links.connected(row["host"])
        guest = link.lookup(row["id"])
        if guest is not None and domain.read_identity(guest.xml()) is None:
            # An adopted domain not taken over yet (its create failed before the define,
            # service/adoption.py): still the admin's own, left as it was.
            guest = None
        if guest is not None:
            if guest.is_active():
                guest.destroy()
            guest.undefine(with_metadata=True)
        link.driver.release_address(self.ctx.store, networks.resolved(self.ctx.store, row))
        firewall.remove(link.driver, row)  # its network filter, no longer referenced (issue 15)
        if self.files.own_storage(link.name):
            link.driver.remove_vm_storage(row["id"])
        shutil.rmtree(self.ctx.config.vm_dir(row["id"]), ignore_errors=True)
        with self.ctx.store.transaction():
            self.ctx.store.add_event("deleted", "VM deleted; its disks were removed", row, op["id"])
            self.ctx.store.delete_vm(row["id"])

    # -- booting ---------------------------------------------------------------------------------
    def _running_elsewhere(self, row: dict) -> str | None:
        """Another reachable host where this VM's domain is active, if any."""
        for link in self.ctx.links.all():
            if link.name == row["host"] or not link.connected:
                continue
            try:
                other = link.lookup(row["id"])
                if other is not None and other.is_active():
                    return link.name
            except DriverError:
                continue
        return None

    def _still_wanted(self, op: dict, row: dict) -> bool:
        """Whether the VM is still wanted running (or paused) on this host, and if so
        the operation marked booting, in one transaction (the store's write lock, which
        a new desired state takes too): from then on the VM claims its vCPUs and memory
        whatever its desired state (model/states.py), until the operation ends after it
        was observed. A force-stop that arrives before sees the boot skipped; one that
        arrives after cannot free the room for another start while this one boots (issue
        17: a start in flight was not counted once a force-stop said stopped). The check
        alone would not do: the force-stop could come between it and libvirt's create,
        and the lock cannot be held across that (seconds under TCG, every writer waiting)."""
        store = self.ctx.store
        with store.transaction():
            fresh = self._current(row["id"])
            if fresh["desired_state"] in CLAIMING_DESIRED_STATES and fresh["host"] == row["host"]:
                store.mark_booting(op)
                return True
            now = (f"wanted {fresh['desired_state']}" if fresh["host"] == row["host"]
                   else f"placed on {fresh['host']}")
            store.add_event("boot-skipped", f"{op['kind']}: not booted, the VM is now {now}",
                            fresh, op["id"])
            return False

    def may_boot(self, op: dict, row: dict) -> bool:
        """The boot check, for whatever starts the VM's stopped domain (a boot, a revert
        to a snapshot with memory): Failed while a copy runs elsewhere; False when the
        VM is no longer wanted running on this host (_still_wanted, event boot-skipped);
        True with the operation marked booting."""
        elsewhere = self._running_elsewhere(row)
        if elsewhere is not None:  # never twice: the stale copy must go first (resync removes it)
            raise Failed(
                f"a copy of this VM still runs on host {elsewhere}; not starting a second one"
            )
        return self._still_wanted(op, row)

    def boot(self, op: dict, row: dict, guest: Guest) -> bool:
        """Start the defined guest with its port forwards (never a second copy), unless
        it is no longer wanted running (_still_wanted); whether it runs now."""
        if guest.is_active():
            guest.apply_port_forwards(port_forwards(row))
            return True
        if not self.may_boot(op, row):
            return False
        restoring = guest.has_managed_save()  # a suspended VM resumes where it was (shapes.py)
        if not restoring:  # console probes look only at what this boot prints
            console = self.ctx.config.vm_dir(row["id"]) / "console.log"
            offset = console.stat().st_size if console.exists() else 0
            self.ctx.store.update_vm(row["id"], bump=False, boot_console_offset=offset)
        link = self.ctx.links.get(row["host"])
        if link is not None:
            link.driver.check_ports_free(port_forwards(row))  # taken: fail before QEMU runs
            # Its libvirt network running there (issue 15): started, or a 409 saying how.
            networks.prepare(self.ctx, link.driver, link.name, row, start=True)
        guest.start()
        if restoring:  # the saved domain runs as it was saved: what waited for a restart still does
            self.ctx.store.add_event("resumed", "restored from the memory saved at suspend", row)
        else:
            live.record_boot(self.ctx, row)
        try:
            guest.apply_port_forwards(port_forwards(row))
        except Failed:
            guest.destroy()  # nothing half-done: a guest is not left running without its forwards
            raise
        return True

"""Moving a VM between hosts: live migration as a task with execute and
rollback (Nova's conductor/tasks/live_migrate.py), the offline move of a
stopped VM, and the re-run of a migration a crash interrupted."""
from __future__ import annotations

import logging
import threading

from appliance.controller import cpu_pinning, firewall, networks
from appliance.controller.context import Context, HostLink
from appliance.controller.files import VmFiles
from appliance.controller.lifecycle import port_forwards
from appliance.controller.operations import Handler
from appliance.errors import Conflict, Failed
from appliance.host_access import connection_uri
from appliance.virt.driver import DomainGone, DriverError, Guest, JobBusy, MigrationRequest

log = logging.getLogger("appliance.controller")

POLL_SECONDS = 0.2
EARLIER_JOB_WAIT = 600.0  # seconds an earlier migration's job is waited for


def active(link: HostLink, vm_id: str) -> bool:
    guest = link.lookup(vm_id)
    try:
        return guest is not None and guest.is_active()
    except DomainGone:
        return False  # undefined between the lookup and the question (a migration's end)


def job_running(link: HostLink, vm_id: str) -> bool:
    guest = link.lookup(vm_id)
    return guest is not None and guest.job_running()


def settle_earlier_migration(ctx: Context, vm_id: str, source: HostLink, dest: HostLink,
                             timeout: float = EARLIER_JOB_WAIT) -> str:
    """Where the guest runs before (re)starting a migration: a controller
    killed in the middle of one finds the job still running in libvirt (the
    guest active on both ends, the target's copy paused for the incoming
    migration); wait until libvirt has finished or abandoned it. Returns
    "target" when the guest ended up there, else "source"."""
    deadline = ctx.monotonic() + timeout
    while True:
        on_source = active(source, vm_id)
        on_target = active(dest, vm_id)
        if on_source and job_running(source, vm_id):
            on_target = True  # the source is still in a job: wait for its outcome
        if on_target and not on_source:
            return "target"
        if not on_target:
            return "source"
        if ctx.monotonic() > deadline:
            raise Failed(
                f"an earlier migration to {dest.name} is still in progress after {timeout:.0f} s"
            )
        ctx.sleep(0.2)


def record_move(
    ctx: Context, op: dict, row: dict, target: str, guest: Guest | None, message: str
) -> None:
    """The record follows the guest to the target; its forwards are added there."""
    # a dedicated VM's pins on the target, chosen before it moved (cpu_pinning.for_migration)
    pins = {"pinned_cpus": op["params"]["pinned_cpus"]} if "pinned_cpus" in op["params"] else {}
    with ctx.store.transaction():
        ctx.store.update_vm(row["id"], bump=False, host=target, **pins)
        ctx.store.add_event("migrated", message, row, op["id"])
    if guest is not None and guest.is_active():
        # the source's QEMU held the ports until it quit
        guest.apply_port_forwards(port_forwards(row))


def activate_disks(ctx: Context, link: HostLink, row: dict, op_id: str | None,
                   attempts: int = 5) -> None:
    """A guest that arrived paused on a QEMU before 10.0 keeps its disks inactive
    until it runs (QEMU activates them at `cont` only, and libvirt 9 asks no more):
    its next migration would crash it (bdrv_inactivate_recurse asserts) and its
    snapshots and backups be refused. It is resumed and at once paused again (it
    runs for a moment); nothing else needs it. Its lifecycle events are this
    operation's (ctx.migrating), so no "running" is recorded in between. A guest
    that cannot be paused again is retried, then reported (the operation fails,
    the run strategy pauses it)."""
    vm_id = row["id"]
    guest = link.lookup(vm_id)
    if guest is None or guest.state()[0] != "paused":
        return
    if not link.driver.paused_arrivals_keep_disks_inactive():
        return
    ctx.migrating.add(vm_id)
    try:
        guest.resume()
        for attempt in range(attempts):
            try:
                guest.suspend()
                break
            except DriverError as err:
                log.warning("pausing %s again on %s (attempt %d): %s",
                            row["name"], link.name, attempt + 1, err)
                if attempt + 1 == attempts:
                    ctx.store.add_event(
                        "disks-activated", f"resumed on {link.name} to activate its disks, "
                        f"but it could not be paused again: {err.reason}", row, op_id)
                    raise Failed(f"migrated to {link.name}, but it runs there: pausing it "
                                 f"again failed ({err.reason})") from err
                ctx.sleep(0.5)
    finally:
        ctx.migrating.discard(vm_id)
    ctx.store.add_event("disks-activated", f"resumed and paused again at once on {link.name}: "
                        "it arrived paused, and this QEMU (before 10.0) activates its disks "
                        "only when it runs", row, op_id)


class LiveMigration:
    """Live migration, peer to peer: the source libvirtd talks to the target's
    itself; disks stay where they are (storage both hosts see) or are copied
    during the migration. Progress goes into the operation; a cancelled
    operation aborts the job, and the guest keeps running on the source."""

    def __init__(self, ctx: Context, files: VmFiles, op: dict, row: dict):
        self.ctx = ctx
        self.files = files
        self.op = op
        self.row = row
        self.target: str = op["params"]["target"]
        self.dest = ctx.links.connected(self.target)
        self.source = ctx.links.connected(row["host"])
        self.copy = files.storage_of(row["host"]) != files.storage_of(self.target)

    def execute(self) -> None:
        """The migration, asked again while libvirt still holds the domain in an earlier
        migration job its jobInfo no longer shows (a serve SIGKILLed in the middle of one:
        libvirt cancels the job of the closed connection; `make soak`'s kill-serve got a
        500 "another migration job is already running"): nothing was done, so it waits and
        asks again, within the time an earlier migration is waited for."""
        deadline = self.ctx.monotonic() + EARLIER_JOB_WAIT
        while True:
            try:
                return self._execute_once()
            except JobBusy:
                if self.ctx.monotonic() > deadline:
                    raise Failed(f"an earlier migration of the VM is still held by "
                                 f"{self.row['host']}'s libvirt after {EARLIER_JOB_WAIT:.0f} s"
                                 ) from None
                log.info("migration of %s: an earlier migration job is still held; asking again",
                         self.row["name"])
                self.ctx.sleep(1.0)

    def _execute_once(self) -> None:
        row, vm_id = self.row, self.row["id"]
        metadata = self.files.snapshot_metadata
        if settle_earlier_migration(self.ctx, vm_id, self.source, self.dest) == "target":
            self._restore_snapshots(self.dest)
            record_move(
                self.ctx,
                self.op,
                row,
                self.target,
                self.dest.lookup(vm_id),
                "found running on the target: the migration finished before the controller "
                "(restarted since) could record it",
            )
            activate_disks(self.ctx, self.dest, row, self.op["id"])
            return
        guest = self.source.lookup(vm_id)
        if guest is None or not guest.is_active():
            # It ran when the migration was asked (service/migration.py): it stopped since
            # (powered itself off, crashed). A refusal of what the VM now is, as the service
            # answers for a stopped VM, not a failure of the appliance's (a 500).
            raise Conflict(f"the VM does not run on {row['host']} any more; nothing to migrate "
                           "live (a stopped VM moves offline: ask again)", "host")
        request = MigrationRequest(
            # the source's libvirtd opens it (peer to peer) with the appliance's keys
            dest_uri=connection_uri(self.dest.uri, self.ctx.config),
            address=self.ctx.store.get_host(self.target)["migration_address"],
            bandwidth=self.op["params"].get("bandwidth"),
            copy_disks=self.copy,
            pins=cpu_pinning.for_migration(self.ctx, self.op, row),  # the target's own pins
        )
        if self.copy and self.ctx.store.has_ready_snapshots(vm_id):
            raise Failed(
                f"{self.target} does not share its storage with {row['host']}: the disks "
                "would be copied, and a copying migration does not carry the snapshots inside "
                "them; delete the snapshots, or migrate to a host that shares its storage")
        # The guest arrives running: its network must run there (issue 15), or a 409 now.
        networks.prepare(self.ctx, self.dest.driver, self.target, row, start=True)
        firewall.prepare(self.ctx.store, self.dest.driver, row)  # its NICs' filter, there first
        if self.copy:  # the target does not see these disks: copy them during the migration
            self.files.prepare_copy(row, self.dest)
        # libvirt refuses to migrate a domain with snapshots: their metadata (only) goes,
        # and is redefined where the domain ends up (the data stays in the disks).
        metadata.detach(guest, vm_id)
        started = self.ctx.monotonic()
        self.ctx.migrating.add(vm_id)
        try:
            error, aborted = self._run(guest, request)
            if error is None:  # recorded while its events are still the migration's own
                self._record(started)
        finally:
            self.ctx.migrating.discard(vm_id)
        if isinstance(error, JobBusy):  # refused before anything began (execute asks again)
            self._restore_snapshots(self.source)
            raise error
        if error is not None:
            self.rollback()
            self._restore_snapshots(self.source)
            if aborted:
                raise Failed(f"cancelled; the guest stays on {row['host']}")
            raise error
        if self.copy:
            self.files.drop_copy(row, self.source)
        firewall.remove(self.source.driver, row, quiet=True)  # no NIC of it is left there
        activate_disks(self.ctx, self.dest, row, self.op["id"])

    def _record(self, started: float) -> None:
        """The VM is on the target from now on. Before its migrating mark ends: a lifecycle
        event of the source's (its domain stopped by the migration's end) read in between
        would record the VM stopped (CI of stop 28: a drain just after found it "stopped")."""
        row = self.row
        elapsed = self.ctx.monotonic() - started
        self._restore_snapshots(self.dest)
        record_move(self.ctx, self.op, row, self.target, self.dest.lookup(row["id"]),
                    f"live-migrated from {row['host']} to {self.target} in {elapsed:.1f} s"
                    + (" (disks copied)" if self.copy else ""))

    def _restore_snapshots(self, link: HostLink) -> None:
        guest = link.lookup(self.row["id"])
        if guest is not None:
            self.files.snapshot_metadata.restore(guest, self.row["id"])

    def rollback(self, timeout: float = 30.0) -> None:
        """After a failed or aborted migration the target's libvirtd tears down
        the incoming (paused, never started) QEMU on its own; the outcome is
        reported only when it is gone, so that nobody sees the VM active in two
        places. The guest stays on the source; empty disks prepared on the
        target are replaced by the next attempt."""
        deadline = self.ctx.monotonic() + timeout
        while self.ctx.monotonic() < deadline:
            try:
                guest = self.dest.lookup(self.row["id"])
                if guest is None or not guest.is_active():
                    return
            except DriverError:
                return
            self.ctx.sleep(0.1)
        log.warning("the incoming copy of %s on %s outlived the failed migration by %.0f s",
                    self.row["id"], self.dest.name, timeout)

    def _run(self, guest: Guest, request: MigrationRequest) -> tuple[DriverError | None, bool]:
        """Run libvirt's migration in a thread to its end, recording progress and
        aborting the job if the operation is cancelled: (its error, aborted)."""
        errors: list[DriverError] = []

        def migrate() -> None:
            try:
                guest.migrate(request)
            except DriverError as err:
                errors.append(err)

        worker = threading.Thread(target=migrate, name=f"migrate-{self.row['name']}", daemon=True)
        worker.start()
        aborted = False
        while worker.is_alive():
            if not aborted and self.ctx.op_cancelled(self.op):
                aborted = True
                try:
                    guest.abort_job()
                except DriverError as err:
                    log.info("abortJob on %s: %s", self.op["vm_name"], err)
            else:
                progress = guest.job_progress()
                if progress is not None and progress[1]:
                    done = min(99, int(100 * progress[0] / progress[1]))
                    self.ctx.store.update_operation(self.op["id"], progress=done)
            worker.join(POLL_SECONDS)
        return (errors[0] if errors else None), aborted


class Migrations:
    def __init__(self, ctx: Context, files: VmFiles):
        self.ctx = ctx
        self.files = files

    def handlers(self) -> dict[str, Handler]:
        return {"migrate": self.migrate, "move": self.move}

    def migrate(self, op: dict, row: dict) -> None:
        if self._recorded(op, row):
            return
        LiveMigration(self.ctx, self.files, op, row).execute()

    def _recorded(self, op: dict, row: dict) -> bool:
        """A re-run of a move or migration whose result was recorded before a crash
        (the VM's host is the target already: found by `make soak`, serve SIGKILLed
        between the record and the operation's end). Running it again would take the
        target for the source: a move undefined the VM's only domain, a migration
        waited 600 s for itself. Only the source's side may be left: finished here."""
        target = op["params"]["target"]
        if row["host"] != target:
            return False
        origin = op["params"].get("source")
        source = self.ctx.links.get(origin) if origin and origin != target else None
        dest = self.ctx.links.connected(target)
        if op["kind"] == "move":
            self.files.ensure_defined(row, host=target)
        else:
            guest = dest.lookup(row["id"])
            if guest is not None:
                self.files.snapshot_metadata.restore(guest, row["id"])
                if guest.is_active():
                    guest.apply_port_forwards(port_forwards(row))
                activate_disks(self.ctx, dest, row, op["id"])
        if source is not None:
            self._forget_source(row, source, target, op["kind"] == "move")
        log.info("%s of %s to %s was recorded before a restart; finished its source's side",
                 op["kind"], row["name"], target)
        return True

    def _forget_source(self, row: dict, source: HostLink, target: str, undefine: bool) -> None:
        """What a move or migration leaves on its source once the VM is recorded on
        the target: disks copied away, the (stopped) definition, address, filter."""
        if self.files.storage_of(source.name) != self.files.storage_of(target):
            self.files.drop_copy(row, source)
        if not source.connected:
            return  # resync removes what is left there when it is back
        old = source.lookup(row["id"]) if undefine else None
        if old is not None and not old.is_active():
            self.files.snapshot_metadata.detach(old, row["id"])  # else libvirt refuses
            old.undefine()
        if undefine:
            source.driver.release_address(self.ctx.store, networks.resolved(self.ctx.store, row))
        firewall.remove(source.driver, row, quiet=True)

    def move(self, op: dict, row: dict) -> None:
        """Offline move of a stopped VM: define it on the target, then forget it on
        the source (or let resync remove that copy when the source is unreachable)."""
        if self._recorded(op, row):
            return
        target = op["params"]["target"]
        source = self.ctx.links.get(row["host"])
        source_up = source is not None and source.connected
        if source is not None and source_up:
            old = source.lookup(row["id"])
            if old is not None and old.is_active():
                raise Failed(f"the VM runs on {row['host']}; migrate it live instead")
        copy = self.files.storage_of(row["host"]) != self.files.storage_of(target)
        if copy:
            if source is None or not source_up:
                raise Failed(f"its disks are on {row['host']}, which is unreachable")
            self.files.copy_disks(row, source, self.ctx.links.connected(target))
        self.files.ensure_defined(row, host=target)
        with self.ctx.store.transaction():
            self.ctx.store.update_vm(row["id"], bump=False, host=target)
            self.ctx.store.add_event("migrated", f"moved (stopped) from {row['host']} to {target}"
                                     + (" (disks copied)" if copy else ""), row, op["id"])
        if source is not None:
            self._forget_source(row, source, target, undefine=True)

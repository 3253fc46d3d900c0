"""VMs: what libvirt shows for each (observe), the periodic resync over every
reachable host (adopt a copy that runs elsewhere, remove stale copies, report
strangers), addresses, and disk folders left by a delete cut short."""
from __future__ import annotations

import json
import logging
import shutil
import threading
import time

from appliance.controller import firewall
from appliance.controller.context import Context
from appliance.controller.runstrategy import RunStrategies
from appliance.controller.snapshot_metadata import SnapshotMetadata
from appliance.gcpause import collector_paused
from appliance.virt.driver import DomainGone, DriverError, Guest, Listed

log = logging.getLogger("appliance.controller")

# Between full resyncs (whose period grows with their cost, controller/loop.py), the
# VMs observed this recently are compared with their domains one by one.
RECENT_SECONDS = 120.0
# Past this many of them on one host, one listing of the host (what a full pass asks)
# is cheaper than a look-up, a state and a saved-image check per VM: after a burst of
# creates every new VM is recent, and 1,000 look-ups every RESYNC_SECONDS took ~8 % of a
# core (BENCHMARKS.md's idle CPU at 1,000 VMs, session 12).
RECENT_LOOKUPS = 32


def shown_state(row: dict, state: tuple[str, str] | None) -> tuple[str, str]:
    """(state, reason) to record for a VM whose domain shows `state` (None: no domain)."""
    if state is not None:
        return state
    if row["observed_state"] == "shelved" or row["desired_state"] == "shelved":
        return ("shelved", "")  # no domain anywhere, by design (controller/shapes.py)
    return (
        ("provisioning", "")
        if row["observed_state"] == "provisioning"
        else ("stopped", "undefined")
    )


class VmObserver:
    def __init__(self, ctx: Context, strategies: RunStrategies):
        self.ctx = ctx
        self.strategies = strategies
        self.snapshot_metadata = SnapshotMetadata(ctx)
        self._lock = threading.Lock()
        self.reconcile_seconds = 0.0  # duration of the last resync, for metrics
        # Copies on a host other than their VM's that the last resync left because the VM
        # had an operation open: the next full pass comes soon (controller/loop.py).
        self.copies_waiting = 0
        self.reconcile_cpu_seconds = 0.0  # this thread's CPU time in it (the loop's budget)
        self._recent: dict[str, float] = {}  # vm id -> when last observed (resync_recent)
        self._recent_lock = threading.Lock()

    # -- observed state ---------------------------------------------------------------
    def observe(self, row: dict, guest: Guest | None, record_xml: bool = False) -> str:
        """Record what libvirt shows for one VM; return the observed state.

        Called from the loop and from workers: serialised, and compared with a
        fresh row so that one change is recorded (and announced) once."""
        with self._recent_lock:
            self._recent[row["id"]] = self.ctx.clock()
        with self._lock:
            fresh = self.ctx.store.get_vm_by_id(row["id"])
            if fresh is None:
                return "deleted"
            if fresh["host"] != row["host"]:
                # Seen on the host it left: a migration or move recorded since the row was
                # read (an event of the source's, its migration's end, read just before the
                # record). What that host shows is no longer the VM's state.
                return str(fresh["observed_state"])
            return self._observe_locked(fresh, guest, record_xml)

    def _observe_locked(self, row: dict, guest: Guest | None, record_xml: bool) -> str:
        try:
            seen = guest.state() if guest is not None else None
        except DomainGone:  # undefined since it was looked up (a delete racing the loop)
            guest, seen = None, None
        state, reason = shown_state(row, seen)
        fields: dict = {}
        if state != row["observed_state"] or reason != (row["observed_reason"] or ""):
            fields.update(
                observed_state=state, observed_reason=reason, state_changed=self.ctx.clock()
            )
        if guest is not None and (record_xml or fields):
            try:
                fields["domain_xml"] = guest.xml()
            except DriverError:
                pass
        if fields:
            with self.ctx.store.transaction():
                now = self.ctx.store.get_vm_by_id(row["id"])
                if now is None:  # its delete removed the row since the fresh read
                    return "deleted"
                if now["host"] != row["host"]:
                    # moved while libvirt was asked (a migration's record takes no lock of
                    # ours): what the host it left showed is not the VM's state
                    return str(now["observed_state"])
                self.ctx.store.update_vm(row["id"], bump=False, **fields)
                if "observed_state" in fields:
                    message = state + (f" ({reason})" if reason else "")
                    self.ctx.store.add_event("state-changed", f"now {message}", row)
        return state

    def observe_after(self, vm_id: str) -> bool:
        """After an operation: its outcome as libvirt shows it, and the addresses.
        Whether libvirt was asked (False: the host is unreachable, or broke meanwhile)."""
        row = self.ctx.store.get_vm_by_id(vm_id)
        if row is None:
            return True  # nothing left to observe
        link = self.ctx.links.get(row["host"])
        if link is None or not link.connected:
            return False
        try:
            guest = link.lookup(vm_id)
            self.observe(row, guest, record_xml=True)
        except DriverError:
            return False
        try:
            fresh = self.ctx.store.get_vm_by_id(vm_id)
            if fresh is not None:
                self.refresh_addresses(fresh, guest)
        except DriverError:
            pass
        return True

    def on_events(self, seen: set[tuple[str, str]]) -> None:
        """Lifecycle events, deduplicated (host, vm id): observe, then enforce."""
        for host, vm_id in seen:
            row = self.ctx.store.get_vm_by_id(vm_id)
            if row is None or row["host"] != host or vm_id in self.ctx.migrating:
                continue  # a migration's ends (its operation records the outcome), or a stale copy
            link = self.ctx.links.get(host)
            if link is None or not link.connected:
                continue
            self.observe(row, link.lookup(vm_id))
            if vm_id not in self.ctx.busy:
                self.strategies.enforce(self.ctx.store.get_vm_by_id(vm_id))

    # -- the resync ---------------------------------------------------------------------
    def resync(self) -> None:
        """Compare every VM with libvirt on every reachable host: adopt, report
        strangers, remove stale copies (never twice), enforce run strategies.

        A fixed cost per pass: one listing per host (with every domain's
        state), two store queries; a VM costs more only when something about
        it changed (then it is read again before anything is written).

        The cyclic collector waits for the pass: its rows and listings (a few
        objects per VM, none cyclic, all dropped at the end) made the collector's
        passes walk the whole process again and again, ~30 % of a pass at 40,000
        VMs (issue 17)."""
        started, cpu = time.perf_counter(), time.thread_time()
        with collector_paused():
            self._resync()
        self.reconcile_cpu_seconds = time.thread_time() - cpu
        self.reconcile_seconds = time.perf_counter() - started

    def _resync(self) -> None:
        found: dict[str, dict[str, Listed]] = {}  # host -> our domains there by uuid
        for link in self.ctx.links.all():
            if not link.connected:
                continue
            try:
                found[link.name] = link.driver.list_ours(self.ctx.instance_id)
            except DriverError as err:
                log.info("listing domains on %s failed: %s", link.name, err)
        rows = {row["id"]: row for row in self.ctx.store.list_vms_for_resync()}
        open_ops = self.ctx.store.vm_ids_with_open_operations()
        adopted = set()
        waiting = 0
        for host, listing in found.items():
            for vm_id, seen in listing.items():
                row = rows.get(vm_id)
                if row is None:
                    self._report_orphan(vm_id, seen.guest)
                elif row["host"] != host and (vm_id in self.ctx.busy or vm_id in open_ops):
                    # a copy a live migration makes is expected; others (a dead host's,
                    # back while its VM starts elsewhere) bring the next full pass sooner
                    waiting += vm_id not in self.ctx.migrating
                elif row["host"] != host:
                    listed = found.get(row["host"])
                    own = {k: v.guest for k, v in listed.items()} if listed is not None else None
                    if self._other_copy(host, row, seen.guest, own):
                        adopted.add(vm_id)
        for (
            vm_id
        ) in adopted:  # its record moved to where it runs: observed there from the next pass
            rows.pop(vm_id)
        for vm_id, row in rows.items():
            if row["host"] not in found or vm_id in self.ctx.busy:
                continue  # its host is unreachable: nothing to observe there (evacuation decides)
            self._resync_one(row, found[row["host"]].get(vm_id), open_ops)
        self._recent_ids()  # forgotten here too: with a 5 s period no short pass runs
        self.copies_waiting = waiting

    def resync_recent(self) -> int:
        """Between full resyncs: the VMs observed in the last RECENT_SECONDS (an
        event, an operation's outcome) and those waiting for a restart (back-off),
        each compared with its domain as a full pass would; one store query for
        all of them. What a full pass alone does (adopt, remove stale copies,
        report strangers) waits for it. Returns how many VMs were looked at."""
        ids = self._recent_ids()
        ids.update(self.ctx.backoff)
        if not ids:
            return 0
        rows = self.ctx.store.list_vms_for_resync(sorted(ids))
        open_ops = self.ctx.store.vm_ids_with_open_operations()
        per_host: dict[str, int] = {}
        for row in rows:
            per_host[row["host"]] = per_host.get(row["host"], 0) + 1
        listings: dict[str, dict[str, Listed] | None] = {}
        for row in rows:
            link = self.ctx.links.get(row["host"])
            if link is None or not link.connected or row["id"] in self.ctx.busy:
                continue
            try:
                if per_host[link.name] > RECENT_LOOKUPS:
                    if link.name not in listings:
                        listings[link.name] = link.driver.list_ours(self.ctx.instance_id)
                    listing = listings[link.name]
                    if listing is None:
                        continue  # its listing failed: this host waits for the next pass
                    seen = listing.get(row["id"])
                else:
                    guest = link.lookup(row["id"])
                    seen = Listed(guest, *guest.state()) if guest is not None else None
            except DomainGone:
                seen = None
            except DriverError as err:
                log.info("looking up %s on %s failed: %s", row["name"], link.name, err)
                listings.setdefault(link.name, None)
                continue
            self._resync_one(row, seen, open_ops)
        return len(rows)

    def _recent_ids(self) -> set[str]:
        """The VMs observed in the last RECENT_SECONDS; older ones are forgotten."""
        now = self.ctx.clock()
        with self._recent_lock:
            for vm_id, when in list(self._recent.items()):
                if now - when > RECENT_SECONDS:
                    del self._recent[vm_id]
            return set(self._recent)

    def _resync_one(self, row: dict, seen: Listed | None, open_ops: set[str]) -> None:
        guest = seen.guest if seen is not None else None
        shown = shown_state(row, (seen.state, seen.reason) if seen is not None else None)
        if seen is None and shown != (row["observed_state"], row["observed_reason"] or ""):
            # The listing was taken before the rows were read: a migration that ended
            # in between moved the VM here after its listing (seen over ssh, where a
            # listing takes long enough). Asked again before "undefined" is recorded.
            guest = self._lookup(row)
        if shown != (row["observed_state"], row["observed_reason"] or "") or (
                guest is not None and not row["has_domain_xml"]):
            self.observe(row, guest, record_xml=not row["has_domain_xml"])
            fresh = self.ctx.store.get_vm_by_id(row["id"])
            if fresh is None:
                return
            row = fresh
        if row["id"] in open_ops:
            return
        self.strategies.enforce(row, open_ops)
        self.refresh_addresses(row, guest)

    def _lookup(self, row: dict) -> Guest | None:
        link = self.ctx.links.get(row["host"])
        if link is None or not link.connected:
            return None
        try:
            return link.lookup(row["id"])
        except DriverError:
            return None

    def _other_copy(self, host: str, row: dict, guest: Guest, own: dict[str, Guest] | None) -> bool:
        """A VM's domain on a host other than its own. While its own host cannot
        be asked, nothing is touched (which copy runs is unknown). If the copy
        runs and the VM does not run on its own host, the copy is the guest
        (a migration libvirt finished while the controller was away, or a
        cut-off host's guest that outlived its evacuation's failed start): the
        record follows it (True: adopted). Otherwise the copy is stale and goes."""
        if own is None:
            return False
        mine = own.get(row["id"])
        try:
            elsewhere_active = guest.is_active()
            mine_active = mine is not None and mine.is_active()
        except DriverError:
            return False
        if elsewhere_active and not mine_active:
            with self.ctx.store.transaction():
                self.ctx.store.update_vm(row["id"], bump=False, host=host)
                self.ctx.store.add_event(
                    "adopted",
                    f"found running on {host} while its record said {row['host']}; "
                    f"the record now follows the guest",
                    row,
                )
            self.ctx.backoff.pop(row["id"], None)
            return True
        self._remove_stale_copy(host, row, guest)
        return False

    def _remove_stale_copy(self, host: str, row: dict, guest: Guest) -> None:
        """A VM's domain on a host other than its own: left by an evacuation (the
        host was dead and came back) or by an offline move whose source was
        unreachable. The VM's host is the truth; the copy goes, disks stay."""
        try:
            was_active = guest.is_active()
            if was_active:
                guest.destroy()
            self.snapshot_metadata.detach(guest, row["id"])  # libvirt keeps a domain with them
            guest.undefine()
            link = self.ctx.links.get(host)
            if link is not None:  # its network filter there (issue 15)
                firewall.remove(link.driver, row, quiet=True)
        except DriverError as err:
            log.warning("removing the stale copy of %s on %s failed: %s", row["name"], host, err)
            return
        self.ctx.backoff.pop(row["id"], None)  # a start held back by that copy may go now
        self.ctx.store.add_event(
            "stale-copy-removed",
            f"host {host} still had this VM's domain"
            + (" running" if was_active else "")
            + f" although it belongs on {row['host']}; "
            "it was " + ("destroyed and " if was_active else "") + "undefined (disks kept)",
            row,
        )

    def _report_orphan(self, vm_id: str, guest: Guest) -> None:
        key = f"orphan-reported:{vm_id}"
        if self.ctx.store.get_meta(key):
            return
        self.ctx.store.set_meta(key, "1")
        self.ctx.store.add_event(
            "orphan-domain",
            f"domain {guest.name()} ({vm_id}) carries this appliance's id "
            "but matches no VM in the store; it was left untouched",
        )

    def adopt_on_start(self) -> None:
        """Remove disk folders of VMs the store no longer has (their delete was cut short)."""
        ids = {row["id"] for row in self.ctx.store.list_vms()}
        if not self.ctx.config.vms_dir.exists():
            return
        for path in self.ctx.config.vms_dir.iterdir():
            if path.is_dir() and path.name not in ids:
                shutil.rmtree(path, ignore_errors=True)
                self.ctx.store.add_event(
                    "orphan-disk-removed", f"removed {path}, which belonged to no VM"
                )

    # -- addresses --------------------------------------------------------------------------
    def refresh_addresses(self, row: dict, guest: Guest | None) -> None:
        addresses = []
        # the resync's rows carry the network type alone (store.list_vms_for_resync);
        # others the spec
        network = {"type": row["network_type"]} if "network_type" in row else row["spec"]["network"]
        if guest is not None and row["observed_state"] in ("running", "paused"):
            sources = ["lease", "agent"] if network["type"] == "network" else ["agent"]
            for source in sources:
                found = guest.interface_addresses(source)
                for entry in found or []:
                    addresses.append({**entry, "source": "agent" if source == "agent" else "dhcp"})
                if addresses:
                    break
            if not addresses and network["type"] == "user":
                # QEMU's user-mode DHCP server has exactly one lease to give.
                addresses.append({"interface": "net0", "mac": row["mac"], "address": "10.0.2.15",
                                  "prefix": 24, "source": "user-mode"})
        encoded = json.dumps(addresses) if addresses else "[]"  # a stopped VM's, 2,000 times a pass
        if encoded != (row.get("addresses") or "[]"):
            self.ctx.store.update_vm(row["id"], bump=False, addresses=encoded)

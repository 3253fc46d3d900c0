"""Moving VMs between hosts: one VM on request (migrate_vm), and every VM of a
host going into maintenance (the drain)."""

from __future__ import annotations

import urllib.parse
from typing import Any

from appliance import placement
from appliance.errors import Conflict, Invalid
from appliance.model import DesiredState, OpKind, VMState
from appliance.service.base import ServiceBase
from appliance.store import Row

# A guest in these states moves live; a stopped one moves offline.
LIVE = (VMState.RUNNING, VMState.PAUSED)
MAX_BANDWIDTH_MIB_S = 1_000_000
# Why these cannot move (as Nova refuses to migrate a suspended or shelved server).
NOT_MOVING: dict[str, str] = {
    VMState.SUSPENDED: "a suspended VM's memory is saved on its host: resume it (running) and "
                       "migrate it live, or discard the save (stopped) and move it",
    VMState.SHELVED: "a shelved VM holds no host: unshelve it (running) and the scheduler "
                     "places it",
}


def reachable_from_peers(uri: str) -> bool:
    """Whether another host's libvirtd can open this URI (peer-to-peer migration
    target): it names a server, or an explicit unix socket (hosts on one
    machine). qemu:///system means "the libvirt of whoever opens it"; libvirt
    refuses it as a migration target ("Attempt to migrate guest to the same host")."""
    parts = urllib.parse.urlsplit(uri)
    return bool(parts.hostname) or "socket=" in parts.query


def move_kind(observed: str, desired: str) -> OpKind | None:
    """How a VM in this state leaves its host: live, offline, or (None) not now."""
    if observed in LIVE and desired in (DesiredState.RUNNING, DesiredState.PAUSED):
        return OpKind.MIGRATE
    if observed == VMState.STOPPED and desired == DesiredState.STOPPED:
        return OpKind.MOVE
    return None


def _check_request(target: Any, force: Any, bandwidth: Any) -> None:
    if not isinstance(force, bool):
        raise Invalid("must be true or false", "force")
    if bandwidth is not None and (
        isinstance(bandwidth, bool)
        or not isinstance(bandwidth, int)
        or not 1 <= bandwidth <= MAX_BANDWIDTH_MIB_S
    ):
        raise Invalid(
            f"must be a whole number of MiB/s from 1 to {MAX_BANDWIDTH_MIB_S}", "bandwidth"
        )
    if not isinstance(target, str) or not target:
        raise Invalid("must be the name of a host", "host")


class Migrations(ServiceBase):
    def migrate_vm(
        self,
        name: str,
        target: Any,
        force: Any = False,
        bandwidth: Any = None,
        if_match: int | None = None,
    ) -> Row | None:
        """Move a VM to another host: live when it runs, offline when stopped.

        Unless forced, the target must pass the scheduler's filters; the claim on
        the target is the operation itself until the move completes. `bandwidth`
        caps a live migration in MiB/s (Nova's live_migration_bandwidth)."""
        _check_request(target, force, bandwidth)
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            target_host = self.store.get_host(target)
            if target == row["host"]:
                return None
            if self._moving(row):
                raise Conflict("the VM is already moving; cancel that operation first", "host")
            if not placement.host_is_up(target_host, self.clock(), self.config.heartbeat_age):
                raise Conflict(f"host {target} is down", "host")
            observed = self._observed(row)
            if observed in LIVE and not reachable_from_peers(target_host["uri"]):
                raise Conflict(
                    f"host {target}'s URI {target_host['uri']} means 'the local libvirt' to "
                    "whoever opens it, so other hosts cannot reach it to migrate to; give it a URI "
                    "they can reach (PATCH /v1/hosts/"
                    + target
                    + ' {"uri": "qemu+ssh://root@NAME/system"})',
                    "host",
                )
            busy = self.store.busy_operation(row["id"])
            if busy:
                raise Conflict(
                    f"the VM has a {busy['kind']} in progress; try when it is done", "host"
                )
            kind = move_kind(observed, row["desired_state"])
            if kind is None:
                raise Conflict(NOT_MOVING.get(observed, f"a {observed} VM cannot move now"), "host")
            if kind == OpKind.MIGRATE:
                self._check_snapshots_travel(row, target_host)
            elif row["spec"].get("tpm"):
                # a stopped VM's TPM state is libvirt's, on its host (/var/lib/libvirt/swtpm);
                # only a live migration carries it (in its stream) on libvirt 9.0
                raise Conflict(f"{row['name']} has a TPM, whose state stays on {row['host']} "
                               "while it is stopped; start it and migrate it live", "host")
            if force:
                why = f"{kind} to {target} forced: the scheduler's filters were skipped"
            else:
                decision = self._schedule(
                    row["spec"],
                    row["id"],
                    row["project"],
                    only_hosts=frozenset([target]),
                    cpu_ram=self._claims_cpu_ram(row),
                )
                why = decision.explain()
            params: dict[str, Any] = {"target": target, "source": row["host"], "force": force}
            if bandwidth is not None:
                params["bandwidth"] = bandwidth
            op = self._new_op(row, kind, params)
            event = "migration-requested" if kind == OpKind.MIGRATE else "move-requested"
            self.store.add_event(event, why, row, op["id"])
        self.notify()
        return op

    def _drain(self, host: Row) -> dict[str, list[dict[str, Any]]]:
        """Every VM of a host going into maintenance migrates (or, stopped, moves)
        where the scheduler puts it; what cannot move is reported, as an event
        too, and stays. Runs in the caller's transaction."""
        report: dict[str, list[dict[str, Any]]] = {"migrating": [], "moving": [], "blocked": []}
        for row in self.store.vms_on_host(host["name"]):
            if self._moving(row):
                report["migrating"].append(
                    {"vm": row["name"], "target": None, "note": "already moving"}
                )
                continue
            reason = self._drain_one(host, row, report)
            if reason is not None:
                report["blocked"].append({"vm": row["name"], "reason": reason})
                self.store.add_event(
                    "drain-blocked", f"cannot leave host {host['name']}: {reason}", row
                )
        return report

    def _drain_one(
        self, host: Row, row: Row, report: dict[str, list[dict[str, Any]]]
    ) -> str | None:
        """Ask one VM to leave the host; why it cannot, if it cannot."""
        busy = self.store.busy_operation(row["id"])
        if busy:
            return f"it has a {busy['kind']} in progress; drain again when it is done"
        observed = self._observed(row)
        if observed == VMState.SHELVED:
            return None  # nothing of it runs or is defined here; its unshelve places it
        # A running guest migrates whatever it is asked to become; disks are
        # copied when the target's storage differs.
        kind = OpKind.MIGRATE if observed in LIVE else move_kind(observed, row["desired_state"])
        if kind is None and observed in NOT_MOVING:
            return NOT_MOVING[observed]
        if kind is None:
            return f"it is {observed} (wanted {row['desired_state']}); drain again when it settles"
        ignore = {host["name"]}
        why = {host["name"]: "the VM's own host, which it leaves"}
        storage = None
        if kind == OpKind.MIGRATE:  # live: only to hosts the source's libvirtd can reach
            for h in self.store.list_hosts():
                if h["name"] not in ignore and not reachable_from_peers(h["uri"]):
                    ignore.add(h["name"])
                    why[h["name"]] = (f"cannot receive live migrations: its URI {h['uri']} "
                                      "means each host's own libvirt (give it one other hosts "
                                      "reach)")
            # and, with snapshots, that share its storage (a disk copy would lose them)
            if self.store.has_ready_snapshots(row["id"]):
                storage = host["storage"] or placement.APPLIANCE_STORAGE
        decision = placement.place(
            self.store,
            self.config,
            row["spec"],
            row["id"],
            self.clock(),
            ignore_hosts=frozenset(ignore),
            ignore_reasons=why,
            storage=storage,
            cpu_ram=self._claims_cpu_ram(row),
            project=row["project"],
        )
        if decision.host is None:
            return str(decision.explain())
        op = self._new_op(
            row,
            kind,
            {"target": decision.host, "source": host["name"], "force": False, "drain": True},
        )
        self.store.add_event(
            "draining", f"host {host['name']} in maintenance: {decision.explain()}", row, op["id"]
        )
        report["migrating" if kind == OpKind.MIGRATE else "moving"].append(
            {"vm": row["name"], "target": decision.host, "operation": op["id"]}
        )
        return None

    def _check_snapshots_travel(self, row: Row, target: Row) -> None:
        """A live migration to a host with other storage copies the disks
        (libvirt's NON_SHARED_DISK copies what the guest sees, not the internal
        snapshots inside the qcow2 files): refused for a VM with snapshots."""
        if not self.store.has_ready_snapshots(row["id"]):
            return
        source = self.store.get_host(row["host"])
        if (source["storage"] or placement.APPLIANCE_STORAGE) != (
                target["storage"] or placement.APPLIANCE_STORAGE):
            raise Conflict(
                f"host {target['name']} does not share {row['host']}'s storage, so the disks "
                "would be copied, and a copying migration does not carry the snapshots inside "
                "them; delete the VM's snapshots first, or migrate to a host that shares its "
                "storage (a stopped VM moves with its snapshots)", "host")

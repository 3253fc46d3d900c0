"""Desired states: start, stop, pause, reboot, force-stop, suspend, shelve; a
stopped VM claims its vCPUs and memory as it starts (on its host, or where they
fit), a suspended one as it resumes (on its host: its memory is saved there),
a shelved one as it is unshelved (where the scheduler says)."""

from __future__ import annotations

from typing import Any

from appliance import jsonio, placement
from appliance.errors import Conflict, Invalid, NotFound
from appliance.model import (
    STATE_ALIASES,
    STATE_VERBS,
    VERB_DESIRED_STATE,
    DesiredState,
    HostAdminState,
    OpKind,
    RunStrategy,
    StateVerb,
    VMState,
)
from appliance.service.base import ServiceBase
from appliance.store import Row

# The operation each verb asks for (running: resume when paused).
VERB_OPERATION = {
    StateVerb.RUNNING: OpKind.START,
    StateVerb.STOPPED: OpKind.STOP,
    StateVerb.PAUSED: OpKind.PAUSE,
    StateVerb.REBOOT: OpKind.REBOOT,
    StateVerb.FORCE_STOP: OpKind.FORCE_STOP,
    StateVerb.SUSPENDED: OpKind.SUSPEND,
    StateVerb.SHELVED: OpKind.SHELVE,
}
# The verbs that name a state (a VM already there needs nothing).
STATE_NAMING_VERBS = (StateVerb.RUNNING, StateVerb.STOPPED, StateVerb.PAUSED,
                      StateVerb.SUSPENDED, StateVerb.SHELVED)
# What a shelved VM takes: unshelve (running), or shelved again (nothing to do).
SHELVED_VERBS = (StateVerb.RUNNING, StateVerb.SHELVED)
# Whence a VM shelves (Nova's: active, shut off, paused, suspended; a crashed one too).
SHELVES_FROM = (VMState.RUNNING, VMState.PAUSED, VMState.STOPPED, VMState.CRASHED,
                VMState.SUSPENDED, VMState.LOST)
# Where a pause or a reboot makes sense: the guest runs (or is paused).
GUEST_UP = (VMState.RUNNING, VMState.PAUSED)
# A start from these states may (re)claim vCPUs and memory, or move off a lost host.
STARTS_FROM_REST = (VMState.STOPPED, VMState.CRASHED, VMState.LOST, VMState.PROVISIONING)


def parse_verb(verb: Any) -> StateVerb:
    if not isinstance(verb, str):
        raise Invalid(f"must be one of {', '.join(STATE_VERBS)}", "state")
    word = verb.strip().lower()
    word = STATE_ALIASES.get(word, word)
    if word not in STATE_VERBS:
        raise Invalid(
            f"{jsonio.shown(word)} is not a state; use one of {', '.join(STATE_VERBS)}", "state"
        )
    return StateVerb(word)


def strategy_for(desired: DesiredState, strategy: str) -> str:
    """The run strategy that agrees with a new desired state (KubeVirt's: a
    start makes a Halted VM Always, a stop makes an Always VM Halted)."""
    if desired == DesiredState.RUNNING and strategy == RunStrategy.HALTED:
        return RunStrategy.ALWAYS.value
    if desired == DesiredState.STOPPED and strategy == RunStrategy.ALWAYS:
        return RunStrategy.HALTED.value
    return strategy


class StateChanges(ServiceBase):
    def set_state(self, name: str, verb: Any, if_match: int | None = None) -> Row | None:
        """Record a desired state (or a reboot/force-stop) and its operation.

        Returns the operation, or None when the VM is already where asked."""
        verb = parse_verb(verb)
        with self.store.transaction():
            row = self._vm_for_write(name, if_match)
            observed = self._observed(row)
            desired = VERB_DESIRED_STATE[verb]
            self._check_verb(row, verb, observed)
            if verb == StateVerb.SHELVED and observed != VMState.SHELVED:
                self._refuse_for_pool_member(row, "not shelved (scale the pool down, or stop "
                                             "it)", "state")
                if row["spec"].get("tpm"):
                    # libvirt 9.0's undefine removes the TPM state (/var/lib/libvirt/swtpm),
                    # and an unshelve may land elsewhere: the guest's sealed keys would go.
                    raise Conflict(f"{row['name']} has a TPM, whose state is libvirt's on "
                                   f"{row['host']} and would not survive a shelve; stop it "
                                   "instead", "state")
            busy = self.store.busy_operation(row["id"])
            if (
                verb in STATE_NAMING_VERBS
                and desired == row["desired_state"] == observed
                and not busy
            ):
                return None
            kind = VERB_OPERATION[verb]
            if kind == OpKind.START and observed == VMState.PAUSED:
                kind = OpKind.RESUME
            params: dict[str, Any] | None = None
            if kind == OpKind.START and observed == VMState.SHELVED:
                kind, params = OpKind.UNSHELVE, self._unshelve_target(row)
            elif kind == OpKind.START and observed == VMState.SUSPENDED:
                self._claim_at_resume(row)
            spec = {
                **row["spec"],
                "run_strategy": strategy_for(desired, row["spec"]["run_strategy"]),
            }
            moved, from_host = None, row["host"]
            if kind == OpKind.START and observed in STARTS_FROM_REST:
                moved = self._replace_if_stranded(row)
                if moved is None and not self._claims_cpu_ram(row):
                    # In this transaction: no two starts take one slot.
                    moved = self._claim_at_start(row)
            self._supersede(row)
            changes: dict[str, Any] = {"desired_state": desired, "spec": spec}
            if moved:
                changes["host"] = moved
            self.store.update_vm(row["id"], expect_generation=row["generation"], **changes)
            row = self.store.get_vm_by_id(row["id"]) or row
            self.store.add_event("state-requested", f"{verb} requested (was {observed})", row)
            if moved:
                params = {"from_host": from_host}
            op = self._new_op(row, kind, params)
        self.notify()
        return op

    @staticmethod
    def _check_verb(row: Row, verb: StateVerb, observed: str) -> None:
        going_up = row["desired_state"] == DesiredState.RUNNING
        if observed == VMState.SHELVED and verb not in SHELVED_VERBS:
            raise Conflict("a shelved VM is off and holds no host; unshelve it with running",
                           "state")
        if verb == StateVerb.SUSPENDED and observed not in (*GUEST_UP, VMState.SUSPENDED):
            raise Conflict(f"a {observed} VM has no memory to save; only a running or paused "
                           "VM can be suspended", "state")
        if verb == StateVerb.SHELVED and observed not in (*SHELVES_FROM, VMState.SHELVED):
            raise Conflict(f"a {observed} VM cannot be shelved now; try when it settles", "state")
        if verb == StateVerb.PAUSED and observed not in GUEST_UP and not going_up:
            raise Conflict(f"a {observed} VM cannot be paused; start it first", "state")
        if verb == StateVerb.REBOOT and observed not in GUEST_UP and not going_up:
            raise Conflict(f"a {observed} VM cannot be rebooted; start it", "state")

    def _host_usable(self, name: str | None) -> bool:
        if not name:
            return False
        try:
            host = self.store.get_host(name)
        except NotFound:
            return False
        return host["state"] != HostAdminState.MAINTENANCE and placement.host_is_up(
            host, self.clock(), self.config.heartbeat_age
        )

    def _replace_if_stranded(self, row: Row) -> str | None:
        """A stopped VM whose host is gone, down or in maintenance starts elsewhere,
        if its disks are on storage another host sees; else 409 with the reason."""
        if self._host_usable(row["host"]):
            return None
        storage = None
        if row["host"] and self.store.host_exists(row["host"]):
            storage = self.store.get_host(row["host"])["storage"] or f"host:{row['host']}"
        ignore = frozenset([row["host"]]) if row["host"] else frozenset()
        decision = self._schedule(
            row["spec"], row["id"], row["project"], storage=storage, ignore_hosts=ignore
        )
        self.store.add_event(
            "scheduled", f"host {row['host']} cannot run it now; " + decision.explain(), row
        )
        return decision.host

    def _claim_at_start(self, row: Row) -> str | None:
        """A stopped VM claims its vCPUs and memory as it starts: on its host if
        they fit (None), else on the host returned; 409 with the scheduler's
        reasons when no host fits."""
        decision = placement.place_start(self.store, self.config, row, self.clock())
        if decision.host is None:
            raise Conflict(decision.explain(), "host")
        if decision.host == row["host"]:
            return None
        self.store.add_event(
            "scheduled", f"no room on host {row['host']} to start it; " + decision.explain(), row
        )
        return decision.host

    def _unshelve_target(self, row: Row) -> dict[str, Any]:
        """Unshelve asks the scheduler again, as for a new VM (vCPUs, memory and
        disk, its group and node selector): 409 with its reasons when no host fits.
        The operation claims the host chosen until the record follows it."""
        if self._moving(row) or self._pending_op(row, OpKind.UNSHELVE):
            raise Conflict("the VM is already being unshelved", "state")
        decision = self._schedule(row["spec"], row["id"], row["project"])
        self.store.add_event("scheduled", "unshelving: " + decision.explain(), row)
        return {"target": decision.host, "from_host": row["host"]}

    def _claim_at_resume(self, row: Row) -> None:
        """A suspended VM's memory is saved on its host: it resumes there or not at
        all, when its vCPUs and memory fit there again (409 with the scheduler's
        reasons, else; a stop discards the save and frees it to start anywhere)."""
        if self._claims_cpu_ram(row):
            return  # held all along (reserve_when_stopped)
        if not self._host_usable(row["host"]):
            raise Conflict(f"its memory is saved on host {row['host']}, which cannot run it now; "
                           "write stopped to discard the save and start it elsewhere", "host")
        decision = placement.place(self.store, self.config, row["spec"], row["id"], self.clock(),
                                   only_hosts=frozenset([row["host"]]), disk=False,
                                   project=row["project"])
        if decision.host is None:
            raise Conflict(f"its memory is saved on host {row['host']}, where it no longer "
                           "fits: " + decision.explain(), "host")

"""The pool controller (KubeVirt's VirtualMachinePool controller): converges each
pool's members to what the pool says (appliance/service/pools.py), at every pass
of the loop.

- scale: the wanted ordinals are the first `replicas` whose name NAME-N no
  stranger VM holds; a member beyond them is deleted with force (stopped
  first), the highest ordinals first; a wanted ordinal with no member (never
  made, deleted by a user, gone) is created (scale-up and heal alike) through
  the service's create, as the pool's project. A refused create (quota, no
  host fits) is said in the pool's message and an event, and tried again
  RETRY_SECONDS later.
- locks: the controller acts as the appliance (an admin), so it honours the
  locks people put on members itself (a lock would not stop it otherwise): a
  locked member is not removed by a scale-down nor touched by a roll-out (one
  under way when it was locked stops before the next action), and the pool's
  message names it until it is unlocked.
- roll-out: a member whose pool_revision is behind the pool's is stopped,
  given the template, started again (if it was running) and waited for until
  ready (is_ready: its readiness probe, or running), one member at a time.
  The member under way and its phase are recorded in the pool row (rollout)
  BEFORE each action, and each action is a no-op when already done, so a
  restarted controller carries on where it was and never starts a second
  member. `paused` lets the member under way finish (no member is left
  stopped) and starts no other.

Everything is read from the store at each pass: there is no other state but
the retry times of refused creates.
"""
from __future__ import annotations

import logging
from typing import Any

from appliance.access import SYSTEM, acting_as
from appliance.controller.context import Context
from appliance.errors import ApplianceError
from appliance.model import ACTIVE_STATES, DesiredState, VMState
from appliance.service import Service, is_ready
from appliance.service.pools import member_name, plan_ordinals
from appliance.store import Row

log = logging.getLogger("appliance.controller.pools")

RETRY_SECONDS = 5.0
STOP, APPLY, START = "stop", "apply", "start"


class PoolController:
    def __init__(self, ctx: Context):
        self.ctx = ctx
        self.service = Service(ctx.store, ctx.config, notify=ctx.nudge, clock=ctx.clock)
        self._retry_at: dict[str, float] = {}  # pool id -> when a refused create is tried again
        self._refused: dict[str, str] = {}  # pool id -> why its last create was refused

    def tick(self) -> None:
        for pool in self.ctx.store.list_pools():
            try:
                with acting_as(SYSTEM.in_project(pool["project"])):
                    self.reconcile(pool)
            except ApplianceError as err:  # the pool was deleted meanwhile, a refusal
                self._say(pool, err.reason)
            except Exception:  # noqa: BLE001 - one pool's trouble must not stop the others
                log.exception("pool %s/%s", pool["project"], pool["name"])

    def reconcile(self, pool: Row) -> None:
        members = self.ctx.store.pool_members(pool["id"])
        alive = {m["pool_ordinal"]: m for m in members
                 if m["desired_state"] != DesiredState.DELETED}
        deleting = {m["pool_ordinal"] for m in members} - set(alive)
        wanted, _ = plan_ordinals(pool["replicas"], self.service.taken_ordinals(pool))
        held: list[str] = []  # locked members the pool would change
        for ordinal in sorted(set(alive) - set(wanted), reverse=True):  # the highest first
            if alive[ordinal]["locked_by"]:
                held.append(alive[ordinal]["name"])
                continue
            self._remove(pool, alive.pop(ordinal))
        refused = self._create(pool, [o for o in wanted if o not in alive and o not in deleting])
        held += self._roll(pool, alive)
        notes = [refused] if refused else []
        if held:
            notes.append(f"locked, left as they are until unlocked: {', '.join(sorted(held))}")
        self._say(pool, "; ".join(notes))

    # -- scale and heal ------------------------------------------------------------------
    def _remove(self, pool: Row, member: Row) -> None:
        self.ctx.store.add_event("pool-scaled-down", f"pool {pool['name']} has "
                                 f"{pool['replicas']} replicas: removing {member['name']}",
                                 member)
        self.service.delete_vm(member["name"], force=True)

    def _create(self, pool: Row, missing: list[int]) -> str:
        """Create the missing members; why one was refused ('' when none was)."""
        if not missing:
            return ""
        if self.ctx.clock() < self._retry_at.get(pool["id"], 0.0):
            return self._refused.get(pool["id"], "")
        for ordinal in missing:
            try:
                self.service.add_pool_member(pool, ordinal)
            except ApplianceError as err:
                self._retry_at[pool["id"]] = self.ctx.clock() + RETRY_SECONDS
                self._refused[pool["id"]] = (f"cannot create {member_name(pool['name'], ordinal)}"
                                             f": {err.reason}")
                return self._refused[pool["id"]]
        self._retry_at.pop(pool["id"], None)
        self._refused.pop(pool["id"], None)
        return ""

    def _say(self, pool: Row, message: str) -> None:
        """The pool's message (shown in its status), with an event when it says something new."""
        if message == pool["message"] or self.ctx.store.get_pool_by_id(pool["id"]) is None:
            return
        self.ctx.store.update_pool(pool["id"], message=message)
        pool["message"] = message
        if message:
            self.ctx.store.add_event("pool-refused", f"pool {pool['name']}: {message}",
                                     project=pool["project"])

    # -- roll-out --------------------------------------------------------------------------
    def _roll(self, pool: Row, alive: dict[int, Row]) -> list[str]:
        """One step of the roll-out; the locked members it leaves as they are."""
        state = pool["rollout"]
        outdated = [m for _, m in sorted(alive.items()) if m["pool_revision"] != pool["revision"]]
        held = [m["name"] for m in outdated if m["locked_by"]]
        if state is not None:
            member = alive.get(state["ordinal"])
            if member is None or member["id"] != state["vm_id"]:  # removed or deleted: done
                self._record(pool, None)
                return held
            if member["locked_by"] and state["phase"] != START:
                # locked under way: no further change (a member stopped by the roll-out
                # is started again: the start phase alone restores what it was)
                self._record(pool, {**state, "phase": START} if state["phase"] == APPLY
                             else None)
                return held
            self._step(pool, member, state)
            return held
        if pool["paused"]:
            return held
        # A suspended member's saved memory is its user's (a stop would discard it),
        # a shelved one (from before members were refused shelving) cannot be
        # stopped: each is brought to the revision once running or stopped again.
        outdated = [m for m in outdated if not m["locked_by"]
                    and m["desired_state"] not in (DesiredState.SUSPENDED, DesiredState.SHELVED)]
        if not outdated:
            return held
        member = outdated[0]
        state = {"vm_id": member["id"], "ordinal": member["pool_ordinal"], "phase": STOP,
                 "start": member["desired_state"] in (DesiredState.RUNNING, DesiredState.PAUSED)}
        self._record(pool, state)
        self.ctx.store.add_event("pool-rollout", f"pool {pool['name']}: bringing "
                                 f"{member['name']} to revision {pool['revision']}", member)
        self._step(pool, member, state)
        return held

    def _record(self, pool: Row, state: dict[str, Any] | None) -> None:
        """The roll-out's state, in the store before the action it names."""
        self.ctx.store.update_pool(pool["id"], rollout=state)
        pool["rollout"] = state

    def _step(self, pool: Row, member: Row, state: dict[str, Any]) -> None:
        """One phase of the member's update, when its previous operation has ended."""
        if self.ctx.has_open_ops(member["id"]):
            return
        if state["phase"] == STOP:
            if member["desired_state"] != DesiredState.STOPPED:
                self.service.set_state(member["name"], "stopped")
                return
            if member["observed_state"] in ACTIVE_STATES or (
                    member["observed_state"] == VMState.PROVISIONING):
                return
            state = {**state, "phase": APPLY}
            self._record(pool, state)
        if state["phase"] == APPLY:
            self.service.apply_pool_template(pool, member)
            self._record(pool, {**state, "phase": START})
            return  # its update runs; the start waits for it
        if state["start"]:
            if member["desired_state"] != DesiredState.RUNNING:
                self.service.set_state(member["name"], "running")
                return
            if not is_ready(member):
                return
        self._record(pool, None)
        self.ctx.store.add_event("pool-rollout", f"pool {pool['name']}: {member['name']} is "
                                 f"at revision {pool['revision']}", member)

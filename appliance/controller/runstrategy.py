"""Run strategies (KubeVirt's): converge a VM with no operation in flight to
its desired state, restarting a stopped guest with back-off."""
from __future__ import annotations

from appliance.controller.context import Context

MAX_BACKOFF = 300.0
FIRST_BACKOFF = 5.0


def hold_back(ctx: Context, vm_id: str) -> None:
    """An operation of the VM libvirt refused because a job holds the domain (its state
    change lock, controller/operations.py): what the run strategy would queue next waits,
    FIRST_BACKOFF, doubling at each such refusal, at most MAX_BACKOFF. A wedged domain
    (README "A wedged domain") had a resume queued at every pass, each failing after
    libvirt's 30 s wait."""
    refusals, _ = ctx.job_held.get(vm_id, (0, 0.0))
    ctx.job_held[vm_id] = (
        refusals + 1, ctx.clock() + min(MAX_BACKOFF, FIRST_BACKOFF * 2**refusals))


def needs_action(row: dict) -> bool:
    """Whether the run strategy would do something about this record (no query)."""
    observed, desired = row["observed_state"], row["desired_state"]
    return (
        (observed in ("stopped", "crashed") and desired in ("running", "paused"))
        or (observed in ("running", "paused") and desired == "stopped")
        or (observed == "running" and desired == "paused")
        or (
            observed == "paused"
            and desired == "running"
            and (row["observed_reason"] or "") != "migration"
        )
        or shape_action(observed, desired) is not None
    )


def shape_action(observed: str, desired: str) -> str | None:
    """What converges a suspended or shelved VM (controller/shapes.py), or a VM
    asked to become one, when no operation is in flight: a guest that runs but
    should be saved is saved, a saved one that should run is restored, one that
    should be shelved is shelved; "forget" for a guest that stopped before its
    memory was saved. A suspended VM stays suspended whatever its run strategy
    (it is not stopped: its memory waits on disk)."""
    if desired == "suspended":
        if observed in ("running", "paused"):
            return "suspend"
        return "forget" if observed in ("stopped", "crashed") else None
    if observed == "suspended" and desired == "running":
        return "start"
    if desired == "shelved" and observed not in ("shelved", "provisioning"):
        return "shelve"
    return None


class RunStrategies:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def enforce(self, row: dict | None, open_ops: set[str] | None = None) -> None:
        """`open_ops`: the VM ids with an operation in flight, read once for a
        whole resync (a query per VM is what made the idle resync cost grow
        with the store). Only a VM that needs an action is read again, so that
        the action is decided on its current record."""
        if (
            row is None
            or row["desired_state"] == "deleted"
            or row["observed_state"] == "provisioning"
        ):
            return
        if open_ops is not None:
            if row["id"] in open_ops:
                return
            if needs_action(row):
                self.enforce(self.ctx.store.get_vm_by_id(row["id"]))
                return
            # as it should be: a job libvirt held on it has ended (hold_back's count goes)
            self.ctx.job_held.pop(row["id"], None)
            if row["observed_state"] == row["desired_state"] == "running":
                self.ctx.backoff.pop(row["id"], None)
            return
        if self.ctx.has_open_ops(row["id"]) or self._held_back(row["id"]):
            return
        observed, desired = row["observed_state"], row["desired_state"]
        strategy = row["spec"]["run_strategy"]
        reason = row["observed_reason"] or ""
        shape = shape_action(observed, desired)
        if shape == "forget":
            self.ctx.store.update_vm(row["id"], desired_state="stopped")
            self.ctx.store.add_event("stopped", f"the guest stopped ({reason or observed}) "
                                     "before its memory was saved; it stays stopped", row)
        elif shape is not None:
            self.ctx.queue_op(row, shape, f"{shape}: it is {observed} but should be {desired}")
        elif observed in ("stopped", "crashed") and desired in ("running", "paused"):
            self._restart(row, observed, reason, strategy)
        elif observed in ("running", "paused") and desired == "stopped":
            self.ctx.queue_op(row, "stop", f"stopping: it runs but should be stopped ({strategy})")
        elif observed == "running" and desired == "paused":
            self.ctx.queue_op(row, "pause", "pausing: desired state is paused")
        elif observed == "paused" and desired == "running" and reason != "migration":
            self.ctx.queue_op(row, "resume", f"resuming: paused ({reason}) but should run")
        elif observed == desired == "running":
            self.ctx.backoff.pop(row["id"], None)

    def _held_back(self, vm_id: str) -> bool:
        """Whether the VM's last operation was refused for a job libvirt holds, and its
        back-off (hold_back) has not passed: nothing is queued for it until then."""
        held = self.ctx.job_held.get(vm_id)
        return held is not None and self.ctx.clock() < held[1]

    def _restart(self, row: dict, observed: str, reason: str, strategy: str) -> None:
        if strategy == "Manual" or (strategy == "RerunOnFailure" and reason == "shutdown"):
            self.ctx.store.update_vm(row["id"], desired_state="stopped")
            self.ctx.store.add_event("stopped", f"the guest stopped ({reason or observed}); "
                                     f"run strategy {strategy} leaves it stopped", row)
            return
        failures, not_before = self.ctx.backoff.get(row["id"], (0, 0.0))
        now = self.ctx.clock()
        if now < not_before:
            return
        self.ctx.backoff[row["id"]] = (
            failures + 1,
            now + min(MAX_BACKOFF, FIRST_BACKOFF * 2**failures),
        )
        self.ctx.queue_op(row, "start", f"restarting: the guest is {observed}"
                          + (f" ({reason})" if reason else "") + f", run strategy {strategy}")

    def liveness_failed(self, row: dict, reason: str) -> None:
        """Called by the prober: pull the plug; the run strategy decides the rest."""
        strategy = row["spec"]["run_strategy"]
        self.ctx.store.add_event(
            "liveness-failed", f"{reason}; forcing it off (run strategy {strategy})", row
        )
        self.ctx.queue_op(row, "force-stop", "forcing off after the liveness probe failed")
        self.ctx.nudge()

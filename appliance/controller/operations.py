"""Operations: pick the next pending operation of each VM, claim it, run its
handler (found in a registry from operation kind to handler) in a worker, and
record the outcome. A VM has one operation in a worker at a time.

A handler may return a follow-up: housekeeping that is not part of what the
caller waits for (a backup's older checkpoints dropped, its retention). It runs
right after the operation is recorded succeeded, while the VM is still claimed
(no other operation of the VM starts before it ends), and only logs its errors.
It must be idempotent and redone by the next operation of its kind, since a
stop of the appliance between the two leaves it undone.

The VM is observed again after its operation (its state, domain XML and
addresses), before the operation is recorded ended: whoever waits on it reads
the VM next. A handler that left the domain as it was (a backup of a running
VM) says so (LeftAsItWas): its success is recorded first and the VM observed
after, still claimed (the guest agent's answer for the addresses is ~5-10 ms
under TCG that the caller need not wait for)."""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.controller.context import Context, HostLink, HostUnreachable
from appliance.controller.runstrategy import hold_back
from appliance.errors import Conflict, Failed
from appliance.model.states import (
    BOOTING,
    CLAIMING_OBSERVED_STATES,
    JOB_HELD,
    UNREACHABLE,
    VMState,
)
from appliance.virt.driver import DomainLocked, DriverError, failure_reason

if TYPE_CHECKING:
    from appliance.controller.vms import VmObserver

log = logging.getLogger("appliance.controller")

# A handler's housekeeping after its success (see the module's docstring).
FollowUp = Callable[[], None]
# How long, once the heartbeat counts a first connect under way as down (a connect that
# hangs: an ssh tunnel to a machine gone dark), an operation waits for it (_ready_to_run)
# before the host is taken for unreachable, as it is when a connect failed.
FIRST_CONNECT_WAIT = 60.0
# How many times an operation goes back to pending because its host's connection broke
# under it (OperationRunner._requeue_if_host_lost) before such a break fails it.
MAX_REQUEUES = 5


@dataclass(frozen=True)
class LeftAsItWas:
    """A handler's answer when the VM's domain is as it was before the operation."""
    follow_up: FollowUp | None = None


# handler(operation, vm row); raises to fail the operation; may return a FollowUp.
Handler = Callable[[dict, dict], FollowUp | LeftAsItWas | None]


class OperationRunner:
    def __init__(self, ctx: Context, observer: VmObserver, pool: Executor, workers: int = 8):
        """`workers`: how many operations are handed to `pool` at once (its threads);
        the others wait in the store, not in the pool's queue (dispatch)."""
        self.ctx = ctx
        self.observer = observer
        self.pool = pool
        self.workers = workers
        self._in_pool = 0  # handed to the pool, not finished
        self._in_pool_lock = threading.Lock()
        self.registry: dict[str, Handler] = {}

    def register(self, handlers: dict[str, Handler]) -> None:
        """Add a family's handlers (lifecycle, migration, ...); a kind is handled once."""
        clash = set(handlers) & set(self.registry)
        if clash:
            raise ValueError(f"operation kinds handled twice: {sorted(clash)}")
        self.registry.update(handlers)

    def _ready_to_run(self, op: dict) -> bool:
        """An operation waits while a host it needs is unreachable (it runs when the
        host returns, or the VM is evacuated), and, just after a start, while a host it
        touches has not had its first connect: a move run then took its source for
        unreachable and left the source's definition behind (`make soak PART=kill-serve`:
        the new serve moved a VM to the host that answered first, 0.3 s before its source)."""
        row = self.ctx.store.get_vm_by_id(op["vm_id"])
        if row is None:
            return True  # execute() records the failure
        # an unknown host fails in the handler, with the reason
        needed = self._links_needed(op, row)
        if not all(link is None or link.connected for link in needed):
            return False
        links = self.ctx.links
        touched = [*needed, links.get(row["host"])]
        if op["kind"] in ("move", "migrate"):  # a re-run's source, the VM recorded on its target
            touched.append(links.get(op["params"].get("source")))
        return not any(link is not None and self._unknown(link) for link in touched)

    def _unknown(self, link: HostLink) -> bool:
        """A host whose first connect has not finished, for at most FIRST_CONNECT_WAIT
        after the heartbeat counted that connect as down: one that never ends would
        otherwise hold what touches the host for ever (a move off it ran before the wait)."""
        if not link.unknown:
            return False
        return link.down_since is None or self.ctx.clock() - link.down_since < FIRST_CONNECT_WAIT

    def _links_needed(self, op: dict, row: dict) -> list:
        """The links of the hosts an operation needs: the VM's; a move's or unshelve's
        target instead; a live migration's source and target both (`make soak`: one
        re-run after a restart, before the target was connected again, failed)."""
        target = op["params"].get("target")
        if op["kind"] in ("move", "unshelve"):
            hosts = [target or row["host"]]
        elif op["kind"] == "migrate" and target:
            hosts = [row["host"], target]
        else:
            hosts = [row["host"]]
        return [self.ctx.links.get(host) for host in hosts]

    def dispatch(self) -> None:
        """Hand the pool the oldest operation of each VM that is not busy, while it has
        an idle thread. The rest stay pending in the store until a worker is free (its
        nudge brings the loop back here): a burst of 1,000 creates queued every one of
        them in the pool with its row and future, read every VM's row again at each
        pass, and left serve's memory that much higher after (issue 10)."""
        claimed = set()
        for op in self.ctx.store.next_operations():
            if self._in_pool >= self.workers:
                return
            vm_id = op["vm_id"]
            if vm_id is None:  # no VM, nothing to run: an image copied in by the mount
                continue
            if vm_id in claimed:
                continue
            claimed.add(vm_id)
            if vm_id in self.ctx.busy or not self._ready_to_run(op):
                continue
            if self.ctx.busy.claim(vm_id):
                with self._in_pool_lock:
                    self._in_pool += 1
                try:
                    self.pool.submit(self._run, op)
                except BaseException:  # a pool shut down: the operation stays pending
                    self._left_pool()
                    self.ctx.busy.release(vm_id)
                    raise

    def _left_pool(self) -> None:
        with self._in_pool_lock:
            self._in_pool -= 1

    def _run(self, op: dict) -> None:
        """In the pool: the operation, then the loop nudged to hand the pool the next
        (its thread counted free first)."""
        try:
            self.execute(op)
        finally:
            self._left_pool()
            self.ctx.nudge()

    def execute(self, op: dict) -> None:
        store, vm_id = self.ctx.store, op["vm_id"]
        if not store.claim_operation(op["id"], self.ctx.clock()):
            self.ctx.busy.release(vm_id)  # finished or cancelled since the loop listed it
            return
        try:
            row = store.get_vm_by_id(vm_id)
            if row is None:
                raise Failed("the VM no longer exists")
            handler = self.registry.get(op["kind"])
            if handler is None:
                raise Failed(f"no handler for operation {op['kind']!r}")
            outcome = handler(op, row)
            left_as_it_was = isinstance(outcome, LeftAsItWas)
            follow_up = outcome.follow_up if isinstance(outcome, LeftAsItWas) else outcome
            if not left_as_it_was:
                # Observed state first: whoever waits on the operation reads the VM next.
                self._observe_after(op)
            store.update_operation(
                op["id"], status="succeeded", progress=100, finished=self.ctx.clock()
            )
            self.ctx.job_held.pop(vm_id, None)
            if store.get_vm_by_id(vm_id) is not None:
                store.update_vm(vm_id, bump=False, last_error=None)
            if left_as_it_was:
                self._follow_up(op, lambda: self._observe_after(op))
            if follow_up is not None:
                self._follow_up(op, follow_up)
        except Exception as err:  # noqa: BLE001 - every failure is recorded, none is lost
            if self._requeue_if_host_lost(op, err):
                return
            reason = failure_reason(err)
            log.warning(
                "operation %s %s on %s failed: %s", op["id"], op["kind"], op["vm_name"], err
            )
            self._observe_after(op)
            status = "cancelled" if self.ctx.op_cancelled(op) else "failed"
            # The VM's error and event first: whoever waits on the operation reads them
            # as soon as it is final.
            row = store.get_vm_by_id(vm_id)
            if row is not None:
                store.update_vm(vm_id, bump=False, last_error=f"{op['kind']}: {reason}")
                store.add_event("operation-failed", f"{op['kind']} failed: {reason}", row, op["id"])
            # A refusal (Conflict: what the request asks cannot be done as things are) names
            # its field, and the service answers 409 rather than 500 (service/operations.py);
            # one cut by its host's lost connection names the host: 503 (errors.Unavailable),
            # and so is one libvirt refused for a job it holds on the domain (its state
            # change lock), after which the run strategy backs off (runstrategy.hold_back).
            refused: dict = {"error_field": err.field or ""} if isinstance(err, Conflict) else {}
            lost = self._lost_host(op, err)
            if lost is not None:
                refused["params"] = {**op["params"], UNREACHABLE: lost}
            elif isinstance(err, DomainLocked):
                refused["params"] = {**op["params"], JOB_HELD: True}
                hold_back(self.ctx, vm_id)
            store.update_operation(op["id"], status=status, error=reason,
                                   finished=self.ctx.clock(), **refused)
        finally:
            self.ctx.busy.release(vm_id)

    def _requeue_if_host_lost(self, op: dict, err: Exception) -> bool:
        """A hypervisor call that failed because the host's connection broke under it
        (its libvirtd restarted or killed: "client socket is closed", "End of file while
        reading data"), or that found it gone after its dispatch (HostUnreachable), is not a
        failure of what the operation asks: it goes back to pending and runs again once
        the host answers (_ready_to_run; handlers are idempotent), at most MAX_REQUEUES
        times. `make soak` found such operations failed (a 500 to their caller) and a
        delete's VM left "deleting" for good."""
        requeued = int(op["params"].get("requeued", 0))
        lost = self._lost_host(op, err)
        if lost is None or requeued >= MAX_REQUEUES or self.ctx.op_cancelled(op):
            return False
        self._boot_unconfirmed(op)
        log.warning("operation %s %s on %s: the connection to %s broke (%s); it runs again "
                    "when the host answers", op["id"], op["kind"], op["vm_name"], lost, err)
        self.ctx.store.update_operation(op["id"], status="pending",
                                        params={**op["params"], "requeued": requeued + 1})
        return True

    def _lost_host(self, op: dict, err: Exception) -> str | None:
        """The host whose lost connection cut the operation (a hypervisor error or
        HostUnreachable while a host it needs is not connected), if that is what it was."""
        if not isinstance(err, DriverError | HostUnreachable):
            return None
        row = self.ctx.store.get_vm_by_id(op["vm_id"])
        # the hosts it needs (the VM's, a migration's target): a backup's `target` names a
        # backup target, not a host, and a host of that name must not requeue it
        lost = [link.name for link in self._links_needed(op, row)
                if link is not None and not link.connected] if row is not None else []
        return lost[0] if lost else None

    def _observe_after(self, op: dict) -> None:
        """The VM as libvirt shows it after its operation; a boot it could not be asked
        about counted as starting (_boot_unconfirmed)."""
        if not self.observer.observe_after(op["vm_id"]):
            self._boot_unconfirmed(op)

    def _boot_unconfirmed(self, op: dict) -> None:
        """An operation marked booting (Lifecycle.boot: its claim lasts until it ends)
        after which libvirt could not be asked how the boot went (the host's connection
        broke: requeued, failed, or even done just before the break): the guest may run.
        Its VM is recorded starting, which claims its vCPUs and memory (model/states.py),
        until it is seen again (the next operation or pass that reaches the host). Issue
        17: a start requeued after a lost connection and then superseded by a force-stop
        ended its mark while its guest ran, unclaimed, and the room went to other starts."""
        if not op["params"].get(BOOTING):
            return
        store = self.ctx.store
        with store.transaction():
            row = store.get_vm_by_id(op["vm_id"])
            if row is None or row["observed_state"] in CLAIMING_OBSERVED_STATES:
                return
            store.update_vm(row["id"], bump=False, observed_state=VMState.STARTING,
                            observed_reason="unconfirmed", state_changed=self.ctx.clock())
            store.add_event("boot-unconfirmed", f"{op['kind']}: the connection to host "
                            f"{row['host']} broke around its boot; counted as starting until "
                            "it is seen", row, op["id"])

    @staticmethod
    def _follow_up(op: dict, follow_up: FollowUp) -> None:
        try:
            follow_up()
        except Exception:  # noqa: BLE001 - the operation succeeded; the next one redoes it
            log.exception("after operation %s %s on %s", op["id"], op["kind"], op["vm_name"])

"""Evacuation: a host dead for longer than the grace period. Its VMs that
must run (run strategy Always) restart where the scheduler puts them; the
rest are marked lost. The dead host's copies are removed when it returns
(the resync's stale copies), so a VM never runs twice."""
from __future__ import annotations

import uuid

from appliance import placement
from appliance.controller.context import Context, HostLink
from appliance.model import OpStatus

RETRY_EVACUATION_SECONDS = 30.0


class Evacuation:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def maybe_evacuate(self, link: HostLink) -> None:
        now = self.ctx.clock()
        if link.down_since is None or now - link.down_since < self.ctx.config.evacuate_after:
            return
        if now < link.next_evacuation:
            return
        link.next_evacuation = now + RETRY_EVACUATION_SECONDS
        self.evacuate(link.name)

    def evacuate(self, name: str) -> None:
        store = self.ctx.store
        host = store.get_host(name)
        link = self.ctx.links.get(name)
        down_for = self.ctx.clock() - (link.down_since or self.ctx.clock()) if link else 0
        for row in store.vms_on_host(name):
            if row["id"] in self.ctx.busy:
                continue  # an operation under way (a broken connection requeues it): next time
            strategy = row["spec"]["run_strategy"]
            with store.transaction():
                fresh = store.get_vm_by_id(row["id"])
                if fresh is None or fresh["host"] != name or fresh["observed_state"] == "shelved":
                    continue  # a shelved VM runs nowhere: its unshelve places it (shapes.py)
                if store.operations_of_vm(fresh["id"], [OpStatus.RUNNING], limit=1):
                    continue  # claimed by a worker since: next time
                if strategy == "Always" and fresh["desired_state"] in ("running", "paused"):
                    decision = placement.place(
                        store,
                        self.ctx.config,
                        fresh["spec"],
                        fresh["id"],
                        self.ctx.clock(),
                        ignore_hosts=frozenset([name]),
                        storage=host["storage"] or f"host:{name}",
                        project=fresh["project"],
                    )
                    if decision.host is not None:
                        self._cancel_waiting(fresh, name)
                        store.update_vm(
                            fresh["id"],
                            bump=False,
                            host=decision.host,
                            observed_state="stopped",
                            observed_reason="evacuated",
                            state_changed=self.ctx.clock(),
                        )
                        op = store.add_operation(str(uuid.uuid4()), fresh, "start",
                                                 {"by": "controller", "evacuated_from": name})
                        store.add_event(
                            "evacuated",
                            f"host {name} down for {down_for:.0f} s: restarting "
                            f"here, {decision.explain()}",
                            fresh,
                            op["id"],
                        )
                        continue
                    why = decision.explain()
                else:
                    why = (
                        f"run strategy {strategy}, desired {fresh['desired_state']}: "
                        "not restarted elsewhere"
                    )
                if fresh["observed_state"] != "lost":
                    store.update_vm(
                        fresh["id"],
                        bump=False,
                        observed_state="lost",
                        observed_reason=f"host {name} down",
                        state_changed=self.ctx.clock(),
                    )
                    store.add_event("lost", f"host {name} down for {down_for:.0f} s; {why}", fresh)

    def _cancel_waiting(self, row: dict, host: str) -> None:
        """The operations waiting for the dead host to answer (an operation runs only when
        its VM's host does) asked something of the copy left there: cancelled, so that
        they cannot hold the evacuation back nor run against the new copy. A state asked
        for is kept as the desired state, which the restarted VM converges to. Found by
        `make soak PART=host-loss`: a pause asked as the host died kept the VM from being
        restarted elsewhere until the host came back."""
        for op in self.ctx.store.operations_of_vm(row["id"], [OpStatus.PENDING]):
            self.ctx.store.update_operation(
                op["id"], status=OpStatus.CANCELLED, finished=self.ctx.clock(),
                error=f"its host {host} is down: the VM was restarted on another host")

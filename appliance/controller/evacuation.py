"""Evacuation: a host dead for longer than the grace period. Its VMs that
must run (run strategy Always) restart where the scheduler puts them; the
rest are marked lost. The dead host's copies are removed when it returns
(the resync's stale copies), so a VM never runs twice."""
from __future__ import annotations

import uuid

from appliance import placement
from appliance.controller.context import Context, HostLink

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
            if row["id"] in self.ctx.busy or self.ctx.has_open_ops(row["id"]):
                continue
            strategy = row["spec"]["run_strategy"]
            with store.transaction():
                fresh = store.get_vm_by_id(row["id"])
                if fresh is None or fresh["host"] != name or fresh["observed_state"] == "shelved":
                    continue  # a shelved VM runs nowhere: its unshelve places it (shapes.py)
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

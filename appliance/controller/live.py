"""Changes applied to a running VM without a restart (issue 14).

The VM's row keeps two specs: `spec`, what the user asked for, and
`running_spec`, what its running domain has now (set at boot, updated by
every change applied here). After an update the controller compares them
field by field: a field in LIVE_FIELDS (labels, run strategy: the guest never
sees them) is simply taken; a field with an applier here is applied to the
running domain (libvirt's AFFECT_LIVE; the persistent definition was already
rewritten by ensure_defined); anything else, or an applier that says
NeedsRestart (beyond max_cpus, a guest that refused), waits for the next boot,
and the VM shows the RestartRequired condition with the fields that wait.

Each applier lives with the code that knows its device (controller/hotplug.py:
vCPUs and memory; controller/disk_hotplug.py: disks and CD-ROMs) and is listed
in APPLIERS below, so this module stays the one place that decides.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Callable
from typing import Any

from appliance.controller.context import Context
from appliance.model import LIVE_FIELDS
from appliance.model.hotplug import pending_fields, running_spec
from appliance.virt.driver import Guest

log = logging.getLogger("appliance.controller")


class NeedsRestart(Exception):
    """An applier's answer: this change cannot be made live (the reason is shown)."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclasses.dataclass
class LiveChange:
    """One field's change, for its applier: `old` is what the domain runs with."""

    ctx: Context
    row: dict[str, Any]
    guest: Guest
    field: str
    old: Any
    new: Any
    running: dict[str, Any]  # the whole running spec (an applier may need other fields)


Applier = Callable[[LiveChange], None]

# field -> the function that applies a change of it to a running domain (raises
# NeedsRestart or DriverError when it cannot). Parts of issue 14 add theirs here.
APPLIERS: dict[str, Applier] = {}

__all__ = ["APPLIERS", "LiveChange", "NeedsRestart", "apply", "pending_fields", "record_boot",
           "running_spec"]


def record_boot(ctx: Context, row: dict[str, Any]) -> None:
    """A domain just started with the row's spec: nothing waits."""
    ctx.store.update_vm(row["id"], bump=False, restart_required=0,
                        running_spec=json.dumps(row["spec"]))


def apply(ctx: Context, row: dict[str, Any], guest: Guest) -> list[str]:
    """Apply what can be applied live; record the running spec, and whether a
    restart is required. Returns the fields that wait for the next boot."""
    running = running_spec(row)
    spec = row["spec"]
    waiting: list[str] = []
    applied: list[str] = []
    for field in sorted(spec):
        if running.get(field) == spec[field]:
            continue
        if field in LIVE_FIELDS:
            running[field] = spec[field]
            continue
        applier = APPLIERS.get(field)
        if applier is None:
            waiting.append(field)
            continue
        try:
            applier(LiveChange(ctx, row, guest, field, running.get(field), spec[field], running))
        except NeedsRestart as refusal:
            waiting.append(field)
            ctx.store.add_event("restart-required", f"{field}: {refusal.reason}", row)
            continue
        running[field] = spec[field]
        applied.append(field)
    ctx.store.update_vm(row["id"], bump=False, running_spec=json.dumps(running),
                        restart_required=int(bool(waiting) or bool(row["restart_required"])
                                             and not _known(row)))
    if applied:
        ctx.store.add_event("applied-live", f"applied without a restart: {', '.join(applied)}",
                            row)
    return waiting


def _known(row: dict[str, Any]) -> bool:
    """Whether the running spec was recorded (else a restart_required set before
    it was is kept: nothing says what the domain lacks)."""
    return bool(row.get("running_spec"))


# The appliers add themselves to APPLIERS when imported (they raise NeedsRestart,
# defined above, hence the import down here): cpus, memory; disks, cdroms, boot_order;
# networks (further NICs).
from appliance.controller import disk_hotplug, hotplug, nic_hotplug  # noqa: E402,F401

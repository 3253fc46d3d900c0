"""Consoles: what a VM's console, VNC display and screenshot are reached by,
and the two that are calls (typing into the serial port, a screenshot).

The console broker (appliance/consoles/) holds the streams; it does not
authorize, so these check that the VM is the caller's project's and in a state
that has a console. The policy (who may watch, who may type) is checked by
the callers: the REST middleware, the WebSocket front, the mount's guard.
"""
from __future__ import annotations

from typing import Any

from appliance.consoles import client
from appliance.errors import Conflict, Invalid
from appliance.model import VMState
from appliance.service.base import ServiceBase, observed_state
from appliance.store import Row

INPUT_MAX = 1024 * 1024  # bytes typed by one call (sent to the broker in pieces)
KINDS = ("console", "vnc", "screenshot")
# A paused guest still has its console and its screen (frozen); a stopped one has neither.
CONSOLE_STATES = (VMState.RUNNING, VMState.PAUSED)


class Consoles(ServiceBase):
    def console_target(self, name: str, kind: str = "console") -> dict[str, Any]:
        """The caller's VM as the broker knows it: {"vm_id", "name", "host",
        "graphics"}. Conflict when it is not running, or (kind vnc or
        screenshot) when it has no display."""
        if kind not in KINDS:
            raise Invalid(f"kind must be one of {', '.join(KINDS)}", "kind")
        return self.console_target_of(self.vm_row(name, with_xml=False), kind)

    def console_target_of(self, row: Row, kind: str) -> dict[str, Any]:
        """console_target for a VM row the caller already looked up."""
        name = row["name"]
        state = observed_state(row)
        if state not in CONSOLE_STATES:
            then = "start it first" if state == VMState.STOPPED else "it has one while it runs"
            raise Conflict(f"{name} is {state}: {then}", "state")
        graphics = row["spec"].get("graphics", "vnc")
        if kind != "console" and graphics == "none":
            raise Conflict(f"{name} has no display (graphics: none)", "graphics")
        return {"vm_id": row["id"], "name": row["name"], "host": row["host"],
                "graphics": graphics}

    def console_input(self, name: str, data: bytes) -> None:
        """Type data into the VM's serial port (what `echo ... >> console` and
        PUT /v1/vms/NAME/console do)."""
        if len(data) > INPUT_MAX:
            raise Invalid(f"at most {INPUT_MAX} bytes at a time", "console")
        target = self.console_target(name)
        step = client.protocol.INPUT_MAX
        for start in range(0, len(data), step):
            client.send_input(self.config.console_socket, target["vm_id"],
                              data[start:start + step])

    def screenshot(self, name: str) -> bytes:
        """The VM's screen as PNG."""
        target = self.console_target(name, "screenshot")
        return client.screenshot(self.config.console_socket, target["vm_id"])

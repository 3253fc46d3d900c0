"""Console tickets (POST /v1/tickets): the rules of who gets one for what; the
ticket itself, its store and its use are appliance/access/tickets.py's."""
from __future__ import annotations

import datetime
from typing import Any

from appliance.access import caller, policy
from appliance.access import tickets as console_tickets
from appliance.errors import Conflict
from appliance.model.access import ConsoleKind, TicketCreate
from appliance.model.states import Graphics
from appliance.service.consoles import Consoles


def iso_time(when: float) -> str:
    return datetime.datetime.fromtimestamp(when, datetime.UTC).isoformat(timespec="seconds")


class Tickets(Consoles):
    def create_ticket(self, body: Any) -> dict[str, Any]:
        """A one-use ticket for a console of a VM of the caller's project (another
        project's VM is not found, as everywhere). `write`: whether the caller's
        role may type into it (a viewer's console is read-only)."""
        asked = TicketCreate.parse(body)
        principal = caller()
        row = self.vm_row(asked["vm"], with_xml=False)
        kind = ConsoleKind(asked["kind"])
        if kind == ConsoleKind.VNC and row["spec"].get("graphics") == Graphics.NONE:
            raise Conflict(f"{row['name']} has graphics none: no VNC console", "kind")
        # A stopped VM has no console to open: say so now, not in a browser
        # tab after the ticket was handed on (vmctl vnc prints a URL).
        self.console_target_of(row, kind.value)
        ticket, expires = console_tickets.issue(self.store, principal, row, kind.value,
                                                self.config.ticket_ttl, self.clock())
        return {"ticket": ticket, "vm": row["name"], "kind": kind.value,
                "write": policy.allows(principal.role, policy.Action.CONSOLE_INPUT),
                "expires": iso_time(expires), "path": f"/v1/vms/{row['name']}/{kind.value}"}

"""The service's console methods (appliance/service/consoles.py) as the console broker
would answer them, for tests of what calls them (the file table, REST, the mount, the
policy matrix): no broker runs in unit tests."""
from __future__ import annotations

import time

from appliance.errors import Conflict

PNG_BYTES = b"\x89PNG\r\n\x1a\n" + b"\x00" * 100


class FakeConsoles:
    """Installed on one Service instance: the caller's VM (404 otherwise), running (409
    otherwise, as `running` says); what is typed is recorded, screenshots counted."""

    def __init__(self, service):
        self.service = service
        self.running = True
        self.typed: list[bytes] = []
        self.screens = [PNG_BYTES]
        self.shots = 0
        self.delay = 0.0  # seconds a screenshot takes
        service.console_input = self.console_input
        service.console_target = self.console_target
        service.console_target_of = self.console_target_of
        service.screenshot = self.screenshot

    def console_target(self, name: str, kind: str = "console") -> dict:
        return self.console_target_of(self.service.vm_row(name, with_xml=False), kind)

    def console_target_of(self, row: dict, kind: str) -> dict:
        if not self.running:
            raise Conflict(f"{row['name']} is stopped: start it first", "state")
        return {"vm_id": row["id"], "name": row["name"], "host": row["host"],
                "graphics": "vnc"}

    def console_input(self, name: str, data: bytes) -> None:
        self.console_target(name)
        self.typed.append(data)

    def screenshot(self, name: str) -> bytes:
        self.console_target(name)
        time.sleep(self.delay)
        self.shots += 1
        return self.screens[min(self.shots, len(self.screens)) - 1]

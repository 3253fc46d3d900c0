"""Whether the appliance can serve: its store answers, the controller's
heartbeat is recent, and at least one host's libvirt answers."""

from __future__ import annotations

from typing import Any

from appliance import placement
from appliance.model import HEARTBEAT_AGE
from appliance.service.base import ServiceBase


class Readiness(ServiceBase):
    def readiness(self, heartbeat_age: float = HEARTBEAT_AGE) -> dict[str, Any]:
        checks: dict[str, dict[str, Any]] = {}
        try:
            self.store.ping()
            checks["store"] = {"ok": True}
        except Exception as err:  # noqa: BLE001 - any failure means not ready
            checks["store"] = {"ok": False, "reason": str(err)}
            return {"ready": False, "checks": checks}
        now = self.clock()
        hosts = self.store.list_hosts()
        # The controller stamps every host it knows at each heartbeat, up or not.
        if not any(
            h["last_seen"] is not None and now - h["last_seen"] < heartbeat_age for h in hosts
        ):
            checks["controller"] = {"ok": False, "reason": "no heartbeat from the controller"}
        up = 0
        for host in hosts:
            ok = placement.host_is_up(host, now, heartbeat_age)
            up += ok
            checks[f"host:{host['name']}"] = {
                "ok": ok,
                **({} if ok else {"reason": "libvirt unreachable"}),
            }
        # One dead host of several leaves the appliance serving: ready while one answers.
        ready = checks["store"]["ok"] and "controller" not in checks and up > 0
        return {"ready": ready, "checks": checks}

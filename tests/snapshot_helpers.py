"""Snapshots of a real `vmctl serve`'s VMs, asked of its service directly (as
vmctl's local commands do: the same store, the controller nudged through its
socket), and typing into its guests' serial consoles over REST."""
from __future__ import annotations

import re
import time
import uuid

from appliance.config import Config
from appliance.notify import Notifier
from appliance.service import Service
from appliance.store import Store
from tests.appliance_process import Appliance


class SnapshotClient:
    def __init__(self, app: Appliance):
        config = Config(home=app.home)
        self.store = Store(config.db_path)
        self.service = Service(self.store, config, notify=Notifier(config.notify_socket))

    def wait_op(self, op: dict, timeout: float = 180) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            done = self.store.get_operation(op["id"])
            if done["status"] in ("succeeded", "failed", "cancelled"):
                return done
            time.sleep(0.2)
        raise AssertionError(f"operation {op['kind']} not final within {timeout} s: {done}")

    def ok(self, op: dict, timeout: float = 180) -> dict:
        done = self.wait_op(op, timeout)
        assert done["status"] == "succeeded", done["error"]
        return done

    def take(self, vm: str, name: str, **body) -> dict:
        self.ok(self.service.create_snapshot(vm, {"name": name, **body}))
        return self.service.get_snapshot(vm, name)

    def revert(self, vm: str, name: str) -> dict:
        return self.ok(self.service.revert_snapshot(vm, name))


def type_line(app: Appliance, vm: str, line: str) -> None:
    resp = app.api("PUT", f"/v1/vms/{vm}/console", data=(line + "\n").encode())
    assert resp.status_code in (200, 204), resp.text


def ask(app: Appliance, vm: str, shell_expr: str, timeout: float = 60) -> str:
    """What `shell_expr` prints in the guest, between two markers of this call
    (what the terminal echoes of the typed line never matches: it holds the
    expression, not its value). The value may hold '=' (a kernel command line)."""
    tag = uuid.uuid4().hex[:6]
    type_line(app, vm, f"echo {tag}=$({shell_expr})={tag}")
    pattern = re.compile(rf"{tag}=([^$\r\n]*?)={tag}")  # the echoed line has its $(
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = pattern.findall(app.console(vm))
        if found:
            return found[-1]
        time.sleep(0.3)
    raise AssertionError(f"no answer to {shell_expr!r} from {vm} in {timeout} s:\n{app.console(vm)[-2000:]}")

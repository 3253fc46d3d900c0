"""vmctl stop and migrate on a terminal (issue 16): vmctl follows the operation itself,
drawing the seconds it has taken (and a stop's grace period) on stderr; piped or with
--json the server waits, as before. Against the real REST app, with no controller: the
test ends the operations."""
from __future__ import annotations

import threading
import time

import pytest

from appliance.cli import progress
from appliance.model import OPEN_OP_STATES


def settle_later(store, name: str, state: str, seconds: float, error: str | None = None,
                 host: str | None = None, once_asked: bool = False) -> threading.Thread:
    """After `seconds`, the VM is `state` (on `host`) and its open operations ended.
    once_asked: the seconds count from when the VM has an open operation (a command that
    takes longer than `seconds` to ask, on a loaded machine, must still find its own)."""
    def settle() -> None:
        deadline = time.monotonic() + 60
        while once_asked and time.monotonic() < deadline and not store.operations_of_vm(
                store.get_vm(name)["id"], OPEN_OP_STATES):
            time.sleep(0.02)
        time.sleep(seconds)
        vm = store.get_vm(name)
        fields = {"host": host} if host else {}
        if error is None:
            store.update_vm(vm["id"], bump=False, observed_state=state, desired_state=state,
                            **fields)
        for op in store.operations_of_vm(vm["id"], OPEN_OP_STATES):
            store.update_operation(op["id"], status="failed" if error else "succeeded",
                                   error=error, finished=time.time())

    thread = threading.Thread(target=settle)
    thread.start()
    return thread


@pytest.fixture
def running(vmctl, store):
    assert vmctl("create", "web1", "--no-wait")[0] == 0
    settle_later(store, "web1", "running", 0).join()
    return "web1"


def test_stop_on_a_terminal_draws_its_seconds_and_grace_period(vmctl, store, running,
                                                                monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda args: True)
    waiter = settle_later(store, "web1", "stopped", 2.5)
    code, out, err = vmctl("stop", "web1")
    waiter.join()
    assert (code, out) == (0, "web1: stopped\n"), err
    frames = err.split("\r")[1:]
    assert frames[0].startswith("stop: pending, 0 s (ACPI shutdown: forced after 30 s)")
    assert any(", 1 s (ACPI" in frame or ", 2 s (ACPI" in frame for frame in frames), frames
    assert err.endswith("\n") and err.count("\n") == 1  # the line is cleared at the end


def test_a_failed_stop_on_a_terminal_says_why(vmctl, store, running, monkeypatch):
    monkeypatch.setattr(progress, "on_terminal", lambda args: True)
    settle_later(store, "web1", "running", 1, error="the guest ignored ACPI")
    code, out, err = vmctl("stop", "web1")
    assert (code, out) == (1, "")
    assert err.endswith("vmctl stop: stop failed: the guest ignored ACPI\n")


def test_off_a_terminal_the_server_waits_and_nothing_is_drawn(vmctl, store, running):
    waiter = settle_later(store, "web1", "stopped", 1)
    code, out, err = vmctl("stop", "web1")
    waiter.join()
    assert (code, out, err) == (0, "web1: stopped\n", "")


def test_migrate_on_a_terminal_names_the_target(vmctl, store, running, monkeypatch):
    store.upsert_host({"name": "h2", "uri": "qemu+ssh://root@h2/system", "state": "enabled", "up": 1,
                       "last_seen": time.time(), "info": store.get_host("local")["info"],
                       "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                       "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    monkeypatch.setattr(progress, "on_terminal", lambda args: True)
    waiter = settle_later(store, "web1", "running", 1.5, host="h2")
    code, out, err = vmctl("migrate", "web1", "h2")
    waiter.join()
    assert (code, out) == (0, "web1: running on h2\n"), err
    assert err.split("\r")[1].startswith("migrate: pending, 0 s (to h2)")


def _second_host(store) -> None:
    store.upsert_host({"name": "h2", "uri": "qemu+ssh://root@h2/system", "state": "enabled", "up": 1,
                       "last_seen": time.time(), "info": store.get_host("local")["info"],
                       "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                       "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})


def test_a_drain_on_a_terminal_counts_the_vms_moved(vmctl, store, running, monkeypatch):
    """Two VMs leave `local`; the drain's line counts them as their operations end
    (one now, one later, which fails: said with why, exit status 1)."""
    assert vmctl("create", "web2", "--no-wait")[0] == 0
    settle_later(store, "web2", "running", 0).join()
    _second_host(store)
    monkeypatch.setattr(progress, "on_terminal", lambda args: True)
    waiter = settle_later(store, "web1", "running", 0.5, host="h2", once_asked=True)
    failer = settle_later(store, "web2", "running", 2.5, error="the target refused it",
                          once_asked=True)
    code, out, err = vmctl("host", "state", "local", "maintenance")
    waiter.join()
    failer.join()
    assert code == 1, (out, err)
    assert out.startswith("local: maintenance\n  web1: migrating to h2")
    assert out.endswith("  web2: migrate failed: the target refused it\n")
    frames = [frame.strip() for frame in err.split("\r")[1:]]
    assert frames[0].startswith("drain local [") and frames[0].endswith("] 0/2 VMs moved"), frames
    assert any(frame.endswith("] 1/2 VMs moved") for frame in frames), frames
    assert frames[-1].endswith("] 1/2 VMs moved, 1 failed"), frames
    assert err.endswith("\n") and err.count("\n") == 1


def test_a_drain_off_a_terminal_answers_at_once(vmctl, store, running):
    _second_host(store)
    code, out, err = vmctl("host", "state", "local", "maintenance")
    assert (code, err) == (0, "") and out.startswith("local: maintenance\n  web1: migrating to h2")
    assert store.operations_of_vm(store.get_vm("web1")["id"], OPEN_OP_STATES)  # still going on
    code, out, err = vmctl("--json", "host", "state", "local", "maintenance")
    assert code == 0 and err == "" and out.startswith("{")

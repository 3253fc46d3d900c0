"""The service's console calls: the caller's project's VM, in a state with a
console, and a display for VNC and screenshots; input and screenshots through
the broker's socket."""
import pytest

from appliance.access import Principal, Role, acting_as
from appliance.consoles import client
from appliance.errors import Conflict, Invalid, NotFound


def running(store, row, state="running"):
    store.update_vm(row["id"], observed_state=state, bump=False)


def test_a_stopped_vm_is_refused_with_what_to_do(service, store):
    row, _ = service.create_vm({"name": "web1", "state": "stopped"})
    running(store, row, "stopped")
    with pytest.raises(Conflict, match="web1 is stopped: start it first"):
        service.console_target("web1")


def test_the_target_of_a_running_vm(service, store):
    row, _ = service.create_vm({"name": "web1", "state": "stopped"})
    running(store, row)
    target = service.console_target("web1")
    assert target == {"vm_id": row["id"], "name": "web1", "host": row["host"], "graphics": "vnc"}
    assert service.console_target("web1", "vnc")["vm_id"] == row["id"]
    with pytest.raises(Invalid):
        service.console_target("web1", "shell")


def test_graphics_none_has_a_console_but_no_screen(service, store):
    row, _ = service.create_vm({"name": "text1", "state": "stopped", "graphics": "none"})
    running(store, row)
    assert service.console_target("text1")["graphics"] == "none"
    for kind in ("vnc", "screenshot"):
        with pytest.raises(Conflict, match="graphics: none"):
            service.console_target("text1", kind)
    with pytest.raises(Conflict, match="graphics: none"):
        service.screenshot("text1")


def test_another_project_s_vm_is_not_found(service, store):
    row, _ = service.create_vm({"name": "web1", "state": "stopped"})
    running(store, row)
    outsider = Principal(user="eve", role=Role.OPERATOR, projects=("other",), project="other")
    with acting_as(outsider), pytest.raises(NotFound):
        service.console_target("web1")


def test_input_goes_to_the_broker_in_pieces(service, store, monkeypatch):
    row, _ = service.create_vm({"name": "web1", "state": "stopped"})
    running(store, row)
    sent = []
    monkeypatch.setattr(client, "send_input", lambda path, vm_id, data: sent.append((vm_id, data)))
    service.console_input("web1", b"a" * 70000)
    assert [len(d) for _, d in sent] == [65536, 70000 - 65536] and {v for v, _ in sent} == {row["id"]}
    with pytest.raises(Invalid):
        service.console_input("web1", b"a" * (1024 * 1024 + 1))


def test_without_a_broker_input_is_503(service, store):
    row, _ = service.create_vm({"name": "web1", "state": "stopped"})
    running(store, row)
    with pytest.raises(client.ConsoleUnavailable) as err:
        service.console_input("web1", b"ls\n")
    assert err.value.http_status == 503

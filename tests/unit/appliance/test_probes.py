"""Readiness and liveness probes, on libvirt's test driver with a console log the test writes.
The controller is stepped (tests/unit/conftest.py): each loop pass runs the
probes that are due on a clock the test moves, so a period of a second costs
one pass, not a second. tests/integration/test_guest_probes.py runs them
against real guests and the threaded controller."""
import pytest

from appliance import spec as specs
from appliance.errors import Invalid
from appliance.files import events_text
from tests.unit.conftest import run_passes


def console(controller, service, name):
    return controller.config.vm_dir(service.get_vm(name)["id"]) / "console.log"


def create(service, controller, spec: dict) -> None:
    """Create through the service, and run passes until the create operation is over."""
    _, op = service.create_vm(spec)
    assert run_passes(controller, lambda: service.store.get_operation(op["id"])["status"] == "succeeded")


def test_probe_validation():
    base = {"name": "p1", "image": "demo"}
    with pytest.raises(Invalid) as err:
        specs.validate({**base, "liveness_probe": {"tcp_socket": {"port": 22}}})
    assert err.value.field == "liveness_probe.tcp_socket.port"  # no forward to reach it through
    with pytest.raises(Invalid) as err:
        specs.validate({**base, "readiness_probe": {"console": {"contains": "x"}, "guest_agent_ping": {}}})
    assert err.value.field == "readiness_probe"
    with pytest.raises(Invalid) as err:
        specs.validate({**base, "readiness_probe": {"console": {"contains": "x"}, "timeout_seconds": 5,
                                                    "period_seconds": 2}})
    assert err.value.field == "readiness_probe.timeout_seconds"
    ok = specs.validate({**base, "network": {"type": "user", "port_forwards": [{"host_port": 8022, "guest_port": 22}]},
                         "readiness_probe": {"tcp_socket": {"port": 22}}})
    assert ok["readiness_probe"]["period_seconds"] == 10 and ok["readiness_probe"]["failure_threshold"] == 3


def test_readiness_follows_the_console(service, stepped_controller):
    controller = stepped_controller
    probe = {"console": {"contains": "service up"}, "period_seconds": 1, "failure_threshold": 1}
    create(service, controller, {"name": "r1", "readiness_probe": probe})
    assert run_passes(controller, lambda: any(e["kind"] == "not-ready" for e in service.list_events("r1")))
    assert service.get_vm("r1")["ready"] is False
    with open(console(controller, service, "r1"), "a") as log:
        log.write("booting\nservice up\n")
    assert run_passes(controller, lambda: service.get_vm("r1")["ready"] is True)
    status = service.status(service.store.get_vm("r1"))
    assert {"type": "Ready", "status": True} in status["conditions"]


def test_failing_liveness_restarts_under_always(service, stepped_controller):
    controller = stepped_controller
    probe = {"console": {"contains": "never printed"}, "period_seconds": 1, "failure_threshold": 2}
    create(service, controller, {"name": "l1", "liveness_probe": probe})
    first_start = service.store.get_vm("l1")["state_changed"]
    assert run_passes(controller, lambda: any(e["kind"] == "liveness-failed" for e in service.list_events("l1")))
    event = [e for e in service.list_events("l1") if e["kind"] == "liveness-failed"][0]
    assert "failed 2 times" in event["message"] and "never printed" in event["message"]
    # Always: started again (a new start), and still desired running.
    assert run_passes(controller, lambda: service.store.get_vm("l1")["state_changed"] != first_start
                      and service.get_vm("l1")["state"] == "running")
    assert service.get_vm("l1")["desired_state"] == "running"


def test_failing_liveness_under_manual_leaves_it_stopped(service, stepped_controller):
    controller = stepped_controller
    probe = {"console": {"contains": "never printed"}, "period_seconds": 1, "failure_threshold": 1}
    create(service, controller, {"name": "m1", "run_strategy": "Manual", "state": "running",
                                 "liveness_probe": probe})
    assert run_passes(controller, lambda: service.get_vm("m1")["desired_state"] == "stopped")
    assert service.get_vm("m1")["state"] == "stopped"


def test_tcp_check_needs_the_connection_to_hold_or_answer():
    """A listener that accepts and closes at once is what QEMU's user-mode
    forward looks like when nothing listens in the guest."""
    import socket
    import threading

    from appliance.probes import check_tcp

    def serve(listener, payload):
        conn, _ = listener.accept()
        if payload:
            conn.sendall(payload)
        conn.close()

    results = []
    for payload in (b"ok\n", b""):
        listener = socket.create_server(("127.0.0.1", 0))
        port = listener.getsockname()[1]
        thread = threading.Thread(target=serve, args=(listener, payload))
        thread.start()
        results.append(check_tcp("127.0.0.1", port, 1)[0])
        thread.join()
        listener.close()
    assert results == [True, False]
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    assert check_tcp("127.0.0.1", port, 1)[0] is False


def _libvirt_error_with(text: str):
    """A real libvirtError whose message holds text (libvirt quotes the URI it cannot parse),
    as libvirt's message for a failed agent command quotes the guest agent's own `desc`."""
    import libvirt

    libvirt.registerErrorHandler(lambda *_: None, None)
    try:
        libvirt.open(f"test:///nonexistent-{text}")
    except libvirt.libvirtError as err:
        return err
    raise AssertionError("libvirt opened a URI that cannot be")


def test_a_guest_agents_error_text_is_one_short_line_in_events(service, stepped_controller, monkeypatch):
    """Review of issue 9's fixes: the guest-agent probe put libvirt's message into the
    VM's events as it was, and that message quotes the `desc` the guest's agent answers:
    a guest could write lines into the appliance's event log that read as other VMs'
    events, and as much text as it liked. It is cut to one line of at most 300 characters."""
    forged = "\n2026-11-29T00:00:00Z web2 deleted: VM deleted; its disks were removed\n" + "x" * 5000
    error = _libvirt_error_with(forged)
    assert "\n" in error.get_error_message()

    def agent_answers(*_args):
        raise error

    monkeypatch.setattr("appliance.virt.libvirt_driver.libvirt_qemu.qemuAgentCommand", agent_answers)
    probe = {"guest_agent_ping": {}, "period_seconds": 1, "failure_threshold": 1}
    create(service, stepped_controller, {"name": "g1", "readiness_probe": probe})
    assert run_passes(stepped_controller, lambda: any(e["kind"] == "not-ready" for e in service.list_events("g1")))
    event = [e for e in service.list_events("g1") if e["kind"] == "not-ready"][0]
    assert "guest agent" in event["message"]
    assert "\n" not in event["message"] and len(event["message"]) <= 320, event["message"][:400]
    text = events_text(service.list_events("g1"))
    assert text.count("\n") == len(service.list_events("g1"))  # one line per event, none forged

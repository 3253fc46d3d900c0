"""Service rules, with the controller converging libvirt's test driver."""
import pytest

from appliance.errors import Conflict, Invalid, NotFound, PreconditionFailed
from appliance.files import VM_FILES


def test_create_starts_and_records_events(service, controller):
    vm, op = service.create_vm({"name": "web1"})
    assert vm["desired_state"] == "running"
    service.finish(op)
    assert service.get_vm("web1")["state"] == "running"
    kinds = [e["kind"] for e in service.list_events("web1")]
    assert kinds[0] == "created" and "state-changed" in kinds


def test_bad_input_stores_nothing(service):
    with pytest.raises(Invalid) as err:
        service.create_vm({"name": "web1", "memory": "lots"})
    assert err.value.field == "memory"
    with pytest.raises(NotFound) as err:
        service.create_vm({"name": "web1", "image": "nope"})
    assert err.value.field == "image"
    assert service.list_vms() == [] and service.list_operations() == []


def test_duplicate_name_conflicts(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    with pytest.raises(Conflict):
        service.create_vm({"name": "web1"})


def test_state_cycle(service, controller):
    service.finish(service.create_vm({"name": "web1"})[1])
    for verb, expected in [("paused", "paused"), ("running", "running"), ("reboot", "running"),
                           ("stopped", "stopped"), ("running", "running"), ("force-stop", "stopped")]:
        service.finish(service.set_state("web1", verb))
        assert service.get_vm("web1")["state"] == expected, verb
    assert service.set_state("web1", "stopped") is None  # already there: nothing to do


def test_state_rules(service, controller):
    service.finish(service.create_vm({"name": "web1", "state": "stopped"})[1])
    assert service.get_vm("web1")["spec"]["run_strategy"] == "Halted"
    with pytest.raises(Conflict):
        service.set_state("web1", "paused")
    with pytest.raises(Conflict):
        service.set_state("web1", "reboot")
    with pytest.raises(Invalid) as err:
        service.set_state("web1", "flying")
    assert err.value.field == "state"
    service.finish(service.set_state("web1", "running\n"))
    assert service.get_vm("web1")["spec"]["run_strategy"] == "Always"


def test_if_match_protects_against_lost_updates(service):
    vm, _ = service.create_vm({"name": "web1", "state": "stopped"})
    service.update_vm("web1", {"cpus": 2}, if_match=vm["generation"])
    with pytest.raises(PreconditionFailed):
        service.update_vm("web1", {"cpus": 3}, if_match=vm["generation"])
    assert service.get_vm("web1")["spec"]["cpus"] == 2


def test_rename_and_delete_rules(service, controller):
    service.finish(service.create_vm({"name": "web1"})[1])
    with pytest.raises(Conflict):
        service.rename_vm("web1", "api")
    with pytest.raises(Conflict):
        service.delete_vm("web1")
    service.finish(service.set_state("web1", "stopped"))
    service.finish(service.rename_vm("web1", "api")[1])
    assert [vm["name"] for vm in service.list_vms()] == ["api"]
    service.finish(service.delete_vm("api"))
    assert service.list_vms() == []
    assert list(controller.config.vms_dir.iterdir()) == []


def test_running_vm_spec_change_waits_for_restart(service, controller):
    service.finish(service.create_vm({"name": "web1"})[1])
    vm, op = service.update_vm("web1", {"memory": "256M"})
    service.finish(op)
    assert service.get_vm("web1")["restart_required"] is True
    service.finish(service.set_state("web1", "reboot"))
    vm = service.get_vm("web1")
    assert vm["restart_required"] is False
    # the boot memory (libvirt's <memory> also counts the virtio-mem area for hotplug)
    assert "<currentMemory unit='KiB'>262144</currentMemory>" in VM_FILES.read(service, "web1",
                                                                             "domain.xml")


def test_image_cannot_change(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    with pytest.raises(Invalid) as err:
        service.update_vm("web1", {"image": "other"})
    assert err.value.field == "image"


def test_cancel_pending_operation(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    op = service.set_state("web1", "running")  # no controller: stays pending
    assert service.cancel_operation(op["id"])["status"] == "cancelled"
    with pytest.raises(Conflict):
        service.cancel_operation(op["id"])


def test_images_refuse_non_disks_and_images_in_use(service, config):
    text = config.import_dir / "notes.txt"
    text.write_text("hello\n" * 100)
    with pytest.raises(Invalid) as err:
        service.import_image("notes", str(text))
    assert err.value.field == "image"
    assert [i["name"] for i in service.list_images()] == ["demo"]
    service.create_vm({"name": "web1", "state": "stopped"})
    with pytest.raises(Conflict):
        service.delete_image("demo")


def test_run_strategy_always_restarts_a_crashed_guest(service, controller):
    service.finish(service.create_vm({"name": "web1"})[1])
    dom = controller.host.conn.lookupByUUIDString(service.get_vm("web1")["id"])
    dom.destroy()  # behind the appliance's back, as a crash would
    import time
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if dom.isActive():
            break
        time.sleep(0.1)
    assert dom.isActive()
    assert any("restarting" in e["message"] for e in service.list_events("web1"))


def test_run_strategy_manual_leaves_it_stopped(service, controller):
    service.finish(service.create_vm({"name": "web1", "run_strategy": "Manual", "state": "running"})[1])
    dom = controller.host.conn.lookupByUUIDString(service.get_vm("web1")["id"])
    dom.destroy()
    import time
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and service.get_vm("web1")["desired_state"] != "stopped":
        time.sleep(0.1)
    assert service.get_vm("web1")["desired_state"] == "stopped"
    assert not dom.isActive()


def test_resync_reports_a_domain_it_cannot_match_and_leaves_it(service, stepped_controller):
    """Stepped: with the controller's thread running, its own first resync could
    list the domain at the same time as the test's and report it too."""
    from pathlib import Path

    from appliance import spec as specs
    from appliance.virt import domain as domain_xml

    controller = stepped_controller
    controller.tick()  # connects to the test driver, and the first resync
    stranger_id = "0f8fad5b-d9cb-469f-a165-70867728950e"
    plan = domain_xml.DomainPlan(
        vm_id=stranger_id, domain_name="lost-one", vm_name="lost-one", instance_id=controller.instance_id,
        spec=specs.validate({"name": "lost-one", "image": "demo"}), domain_type="qemu",
        vm_dir=Path("/nonexistent"), mac="52:54:00:00:00:02", seed_iso=None, direct_io=True)
    controller.host.conn.defineXML(domain_xml.build(plan))
    controller.resync()
    controller.resync()  # reported once, not at every pass
    reports = [e for e in service.list_events() if e["kind"] == "orphan-domain"]
    assert len(reports) == 1 and "lost-one" in reports[0]["message"]
    assert controller.host.lookup(stranger_id) is not None  # left untouched


def test_a_host_whose_heartbeat_stops_is_down(service):
    service.config.heartbeat_age = 10.0
    service.store.upsert_host({"name": "local", "uri": "test:///default", "state": "enabled", "up": 1,
                               "last_seen": service.clock()})
    assert [h["observed_state"] for h in service.list_hosts()] == ["enabled"]
    service.store.upsert_host({"name": "local", "up": 0, "last_seen": service.clock()})
    assert [h["observed_state"] for h in service.list_hosts()] == ["down"]
    service.store.upsert_host({"name": "local", "up": 1, "last_seen": service.clock() - 11})
    assert [h["observed_state"] for h in service.list_hosts()] == ["down"]  # no heartbeat for 11 s
    assert service.readiness()["ready"] is False


def test_a_vm_cannot_take_a_name_that_is_a_route(service, controller):
    """POST /v1/vms/adopt is a route: a VM named adopt would answer 405 on GET /v1/vms/adopt."""
    with pytest.raises(Invalid, match="reserved") as err:
        service.create_vm({"name": "adopt"})
    assert err.value.field == "name"
    assert service.list_vms() == []
    service.finish(service.create_vm({"name": "web1", "state": "stopped"})[1])
    with pytest.raises(Invalid, match="reserved"):
        service.rename_vm("web1", "adopt")
    assert [vm["name"] for vm in service.list_vms()] == ["web1"]

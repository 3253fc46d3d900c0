"""Names are unique per project, so the controller (which acts by VM id) must
keep two VMs of one name in two projects apart where names meet: the
hosts' domain names (PROJECT.NAME outside the default project). The fake
driver refuses a second domain of a name, as libvirt does."""
from __future__ import annotations

from tests.unit.appliance.controller.controller_harness import URI_A, settle

from appliance.access import SYSTEM, acting_as


def test_two_vms_of_one_name_in_two_projects_run_as_two_domains(service, controller, cloud, clock):
    service.store.insert_project({"name": "dev", "description": "", "quota": {}, "created": 0.0})
    service.store.insert_project({"name": "qa", "description": "", "quota": {}, "created": 0.0})
    made = {}
    for project in ("default", "dev", "qa"):
        with acting_as(SYSTEM.in_project(project)):
            vm, _op = service.create_vm({"name": "web1", "host": "local"})
        made[project] = vm["id"]
    settle(controller, clock, passes=3)
    host = cloud.host(URI_A)
    names = {host.domains[vm_id].name: host.domains[vm_id].state for vm_id in made.values()}
    prefix = service.config.domain_prefix
    assert names == {f"{prefix}web1": "running", f"{prefix}dev.web1": "running",
                     f"{prefix}qa.web1": "running"}
    for project, vm_id in made.items():
        with acting_as(SYSTEM.in_project(project)):
            assert service.get_vm("web1")["id"] == vm_id
            assert service.get_vm("web1")["state"] == "running"
    # Stopping one project's web1 leaves the others running.
    with acting_as(SYSTEM.in_project("dev")):
        service.set_state("web1", "stopped")
    settle(controller, clock, passes=3)
    assert host.domains[made["dev"]].state == "stopped"
    assert host.domains[made["default"]].state == "running"
    assert host.domains[made["qa"]].state == "running"


def test_the_fake_driver_refuses_a_second_domain_of_one_name(service, controller, cloud, clock,
                                                             monkeypatch):
    """The check above would pass for any naming if the fake host took two domains
    of one name: it does not (as libvirt does not)."""
    from appliance.controller import files

    monkeypatch.setattr(files, "domain_name", lambda prefix, row: prefix + row["name"])
    service.store.insert_project({"name": "dev", "description": "", "quota": {}, "created": 0.0})
    service.create_vm({"name": "web1", "host": "local"})
    with acting_as(SYSTEM.in_project("dev")):
        service.create_vm({"name": "web1", "host": "local"})
    settle(controller, clock, passes=3)
    with acting_as(SYSTEM.in_project("dev")):
        ops = service.list_operations(vm="web1")
    assert ops[-1]["kind"] == "create" and ops[-1]["status"] == "failed"
    assert "already exists" in ops[-1]["error"]

"""A live migration gives the target host its own CPU pins (issue 14, part F):
a dedicated VM gets free dedicated CPUs of the target, chosen as at define
time; a shared VM gets the target's shared CPUs (or none); a target with too
few free dedicated CPUs is refused with the reason, the guest staying put."""
from __future__ import annotations

import defusedxml.ElementTree as DefusedET

from appliance.controller import cpu_pinning
from appliance.virt import cpu_xml
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle

HOSTS = {"local": URI_A, "b": URI_B}


def domain_on(cloud, host: str, vm_id: str):
    return DefusedET.fromstring(cloud.host(HOSTS[host]).domains[vm_id].xml)


def pins_of(root) -> dict[str, str]:
    return {p.get("vcpu"): p.get("cpuset") for p in root.findall("cputune/vcpupin")}


def dedicated_vm(service, controller, clock, name: str, host: str, cpus: int = 2) -> dict:
    vm, _ = service.create_vm({"name": name, "cpus": cpus, "cpu": {"dedicated": True},
                               "node_selector": {"appliance/host": host}})
    settle(controller, clock, passes=1)
    return service.store.get_vm_by_id(vm["id"])


def migrate(service, controller, name: str, target: str, force: bool = False) -> dict:
    op = service.migrate_vm(name, target, force=force)
    controller.operations.dispatch()  # inline: runs to its end here
    return service.store.get_operation(op["id"])


def test_a_dedicated_vm_gets_free_dedicated_cpus_of_the_target(service, controller, cloud, clock):
    for name in HOSTS:
        service.update_host(name, {"cpu_dedicated_set": "12-15"})
    mover = dedicated_vm(service, controller, clock, "mover", "local")
    assert mover["pinned_cpus"] == "12-13"
    dedicated_vm(service, controller, clock, "holder", "b")  # takes 12-13 on b
    # the node selector pins it to local: the test moves it with force (as an admin would)
    op = migrate(service, controller, "mover", "b", force=True)
    assert op["status"] == "succeeded", op["error"]
    row = service.store.get_vm_by_id(mover["id"])
    assert row["host"] == "b" and row["pinned_cpus"] == "14-15"
    there = domain_on(cloud, "b", row["id"])
    assert pins_of(there) == {"0": "14", "1": "15"}  # not local's 12-13, which holder uses on b
    assert there.find("cputune/emulatorpin").get("cpuset") == "0-11"
    assert there.find("vcpu").get("cpuset") == "0-11"
    # local's CPUs are free again: a new dedicated VM there gets them
    assert dedicated_vm(service, controller, clock, "late", "local")["pinned_cpus"] == "12-13"


def test_a_shared_vm_takes_the_targets_shared_cpus_or_none(service, controller, cloud, clock):
    service.update_host("b", {"cpu_dedicated_set": "8-15"})
    vm, _ = service.create_vm({"name": "web1", "cpus": 2, "node_selector": {"appliance/host": "local"}})
    settle(controller, clock, passes=1)
    assert domain_on(cloud, "local", vm["id"]).find("cputune") is None  # local pins nothing
    assert migrate(service, controller, "web1", "b", force=True)["status"] == "succeeded"
    there = domain_on(cloud, "b", vm["id"])
    assert there.find("vcpu").get("cpuset") == "0-7"  # never b's dedicated CPUs
    assert there.find("cputune/emulatorpin").get("cpuset") == "0-7" and not pins_of(there)
    assert migrate(service, controller, "web1", "local", force=True)["status"] == "succeeded"
    home = domain_on(cloud, "local", vm["id"])
    assert home.find("vcpu").get("cpuset") is None and home.find("cputune") is None


def test_a_target_without_free_dedicated_cpus_is_refused_and_the_guest_stays(service, controller, cloud, clock):
    service.update_host("local", {"cpu_dedicated_set": "12-15"})
    service.update_host("b", {"cpu_dedicated_set": "14-15"})
    mover = dedicated_vm(service, controller, clock, "mover", "local")
    dedicated_vm(service, controller, clock, "holder", "b", cpus=1)
    op = migrate(service, controller, "mover", "b", force=True)  # forced: past DedicatedCpuFilter
    assert op["status"] == "failed"
    assert "host b has 1 free dedicated CPUs of 2; the VM needs 2" in op["error"]
    row = service.store.get_vm_by_id(mover["id"])
    assert row["host"] == "local" and row["pinned_cpus"] == "12-13"
    assert cloud.where(row["id"]) == [URI_A]
    assert pins_of(domain_on(cloud, "local", row["id"])) == {"0": "12", "1": "13"}


def test_pins_chosen_for_a_migration_under_way_are_not_given_to_another_vm(service, controller, cloud, clock):
    for name in HOSTS:
        service.update_host(name, {"cpu_dedicated_set": "12-15"})
    mover = dedicated_vm(service, controller, clock, "mover", "local")
    op = service.migrate_vm("mover", "b", force=True)
    service.store.claim_operation(op["id"], 0.0)
    op = service.store.get_operation(op["id"])
    chosen = cpu_pinning.for_migration(controller.ctx, op, mover)
    assert chosen.pinned == (12, 13) and chosen.shared == tuple(range(12))
    assert service.store.get_operation(op["id"])["params"]["pinned_cpus"] == "12-13"
    other, _ = service.create_vm({"name": "other", "cpus": 2, "cpu": {"dedicated": True}, "state": "stopped",
                                  "node_selector": {"appliance/host": "b"}})
    row = service.store.get_vm_by_id(other["id"])
    plan = cpu_pinning.fill(controller.ctx, row, "b", controller.files.plan(row))
    assert plan.pinned_cpus == (14, 15)
    # a re-run of the migration (a controller restarted) keeps the pins it chose
    again = cpu_pinning.for_migration(controller.ctx, service.store.get_operation(op["id"]), mover)
    assert again.pinned == (12, 13)


def test_repin_keeps_the_rest_of_the_domain_and_skips_a_domain_that_pins_nothing():
    xml = ("<domain type='qemu'><name>x</name><vcpu placement='static' cpuset='0-3'>4</vcpu>"
           "<cputune><shares>1024</shares><vcpupin vcpu='0' cpuset='4'/><vcpupin vcpu='1' cpuset='5'/>"
           "<emulatorpin cpuset='0-3'/></cputune><cpu mode='custom'><model>Fake</model></cpu></domain>")
    root = DefusedET.fromstring(cpu_xml.repin(xml, (9, 10, 11, 12, 13), (0, 1)))
    assert root.find("vcpu").get("cpuset") == "0-1" and root.find("vcpu").text == "4"
    assert pins_of(root) == {"0": "9", "1": "10", "2": "11", "3": "12"}  # only the domain's 4 vCPUs
    assert root.findtext("cputune/shares") == "1024" and root.findtext("cpu/model") == "Fake"
    stripped = DefusedET.fromstring(cpu_xml.repin(xml, None, None))
    assert stripped.find("vcpu").get("cpuset") is None and stripped.find("cputune/vcpupin") is None
    assert stripped.findtext("cputune/shares") == "1024"
    assert cpu_xml.repin("<domain><vcpu>2</vcpu></domain>", None, None) is None

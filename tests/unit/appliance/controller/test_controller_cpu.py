"""The cluster CPU model, dedicated CPUs and hugepages (issue 14, part F): the
controller and the scheduler against hosts in memory (appliance.virt.fake)."""
from __future__ import annotations

import defusedxml.ElementTree as DefusedET
import pytest

from appliance.controller import cluster_cpu
from appliance.errors import Conflict, Invalid
from appliance.virt.fake_cpu import fake_cpu
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, settle

HOSTS = {"local": URI_A, "b": URI_B}


def domain_of(cloud, row):
    [uri] = cloud.where(row["id"])
    return DefusedET.fromstring(cloud.host(uri).domains[row["id"]].xml)


def test_the_baseline_of_the_hosts_is_recorded_and_given_to_cluster_vms(service, controller, cloud, clock):
    model = cluster_cpu.current(service.store)
    assert model["hosts"] == ["b", "local"] and model["model"] == "Fake" and model["features"] == ["sse4.2"]
    assert service.store.get_host("b")["cpu_xml"]
    vm, _ = service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    cpu = domain_of(cloud, service.store.get_vm_by_id(vm["id"])).find("cpu")
    assert cpu.get("mode") == "custom" and cpu.findtext("model") == "Fake"
    assert [f.get("name") for f in cpu.findall("feature")] == ["sse4.2"]


def test_a_host_joining_recomputes_and_warns_when_running_vms_use_what_it_lacks(service, controller, cloud, clock):
    for uri in (URI_A, URI_B):
        cloud.host(uri).cpu = fake_cpu("Skylake", ["avx2", "sse4.2", "xsaves"])
        controller.hosts.reconnect(controller.ctx.links.get("local" if uri == URI_A else "b"))
    assert cluster_cpu.current(service.store)["model"] == "Fake"  # the hosts' set is unchanged
    service.store.delete_meta(cluster_cpu.META_KEY)
    controller.hosts.cluster_cpu.recompute()
    assert cluster_cpu.current(service.store)["features"] == ["avx2", "sse4.2", "xsaves"]
    service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    # an older host joins: it lacks xsaves (and avx2), which web1 runs with
    old = "qemu+tcp://host-c.example/system"
    cloud.host(old).cpu = fake_cpu("Haswell", ["sse4.2"])
    service.store.upsert_host({"name": "c", "uri": old, "state": "enabled", "up": 0, "last_seen": None,
                               "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                               "reserved_memory_mib": 0, "labels": {}, "storage": "san1",
                               "created": clock()})
    settle(controller, clock, passes=2)
    warning = service.store.get_host("c")["cpu_warning"]
    assert "missing: avx2, xsaves" in warning and "1 running VM(s)" in warning
    assert [e for e in service.list_events() if e["kind"] == "host-cpu-incompatible"]
    model = cluster_cpu.current(service.store)
    assert model["hosts"] == ["b", "c", "local"] and model["features"] == ["sse4.2"]
    assert service.get_host("c")["cpu_warning"] == warning
    # the host leaves: the baseline goes back up
    service.store.delete_host("c")
    settle(controller, clock, passes=1)
    assert cluster_cpu.current(service.store)["features"] == ["avx2", "sse4.2", "xsaves"]


def test_dedicated_vms_get_their_own_host_cpus_and_shared_ones_keep_off_them(service, controller, cloud, clock):
    for name in HOSTS:
        service.update_host(name, {"cpu_dedicated_set": "12-15"})
    vm1, _ = service.create_vm({"name": "ded1", "cpus": 2, "cpu": {"dedicated": True}})
    vm2, _ = service.create_vm({"name": "ded2", "cpus": 2, "cpu": {"dedicated": True},
                                "node_selector": {"appliance/host": service.store.get_vm_by_id(vm1["id"])["host"]}})
    shared, _ = service.create_vm({"name": "web1", "cpus": 2})
    settle(controller, clock, passes=1)
    rows = [service.store.get_vm_by_id(v["id"]) for v in (vm1, vm2, shared)]
    pins = [{p.get("vcpu"): p.get("cpuset") for p in domain_of(cloud, r).findall("cputune/vcpupin")}
            for r in rows[:2]]
    used = sorted(c for p in pins for c in p.values())
    assert used == ["12", "13", "14", "15"]  # no host CPU given twice
    assert {rows[0]["pinned_cpus"], rows[1]["pinned_cpus"]} == {"12-13", "14-15"}
    assert domain_of(cloud, rows[2]).find("vcpu").get("cpuset") == "0-11"
    assert domain_of(cloud, rows[0]).find("cputune/emulatorpin").get("cpuset") == "0-11"
    host = service.get_host(rows[0]["host"])
    assert host["capacity"]["dedicated_cpus"] == 4 and host["allocated"]["dedicated_cpus"] == 4
    assert host["capacity"]["cpus"] == 12 * 16
    # the host is full of dedicated VMs: a third one pinned there is refused with the reason
    with pytest.raises(Conflict) as err:
        service.create_vm({"name": "ded3", "cpus": 1, "cpu": {"dedicated": True},
                           "node_selector": {"appliance/host": rows[0]["host"]}})
    assert "DedicatedCpuFilter (needs 1 dedicated CPUs, 0 free of 4" in err.value.reason
    # stopping ded1 releases its claim: ded3 fits and gets ded1's CPUs
    service.set_state("ded1", "stopped")
    settle(controller, clock, passes=1)
    vm3, _ = service.create_vm({"name": "ded3", "cpus": 2, "cpu": {"dedicated": True},
                                "node_selector": {"appliance/host": rows[0]["host"]}})
    settle(controller, clock, passes=1)
    assert service.store.get_vm_by_id(vm3["id"])["pinned_cpus"] == rows[0]["pinned_cpus"]


def test_hugepages_are_checked_against_the_hosts(service, controller, cloud, clock):
    with pytest.raises(Conflict) as err:
        service.create_vm({"name": "big", "memory": "256M", "hugepages": True})
    assert "HugepagesFilter (needs 256 MiB of hugepages, the host has none)" in err.value.reason
    cloud.host(URI_B).hugepages_mib = 512
    settle(controller, clock, passes=1)
    vm, _ = service.create_vm({"name": "big", "memory": "256M", "hugepages": True})
    settle(controller, clock, passes=1)
    row = service.store.get_vm_by_id(vm["id"])
    assert row["host"] == "b" and domain_of(cloud, row).find("memoryBacking/hugepages") is not None
    assert service.get_host("b")["allocated"]["hugepages_mib"] == 256


def test_a_hosts_dedicated_set_is_checked(service, controller):
    with pytest.raises(Invalid) as err:
        service.update_host("b", {"cpu_dedicated_set": "8-16"})
    assert err.value.field == "cpu_dedicated_set" and "16 is not one of them" in err.value.reason
    with pytest.raises(Invalid) as err:
        service.update_host("b", {"cpu_dedicated_set": "0-15"})
    assert "at least one CPU must stay shared" in err.value.reason
    with pytest.raises(Invalid):
        service.update_host("b", {"cpu_dedicated_set": "1;rm -rf"})
    assert service.update_host("b", {"cpu_dedicated_set": [3, 1, 2]})["cpu_dedicated_set"] == "1-3"
    assert service.update_host("b", {"cpu_dedicated_set": ""})["cpu_dedicated_set"] == ""


def test_a_hosts_cpu_warning_follows_the_running_vms(service, controller, cloud, clock):
    for uri, name in ((URI_A, "local"), (URI_B, "b")):
        cloud.host(uri).cpu = fake_cpu("Skylake", ["avx2", "sse4.2", "xsaves"])
        controller.hosts.reconnect(controller.ctx.links.get(name))
    service.store.delete_meta(cluster_cpu.META_KEY)
    controller.hosts.cluster_cpu.recompute()
    service.create_vm({"name": "web1"})
    settle(controller, clock, passes=1)
    old = "qemu+tcp://host-c.example/system"
    cloud.host(old).cpu = fake_cpu("Haswell", ["sse4.2"])
    service.store.upsert_host({"name": "c", "uri": old, "state": "enabled", "up": 0, "last_seen": None,
                               "info": {}, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
                               "reserved_memory_mib": 0, "labels": {}, "storage": "san1",
                               "created": clock()})
    settle(controller, clock, passes=2)
    assert "missing: avx2, xsaves" in service.store.get_host("c")["cpu_warning"]
    # web1 stops: no running VM lacks anything on c any more
    service.set_state("web1", "stopped")
    settle(controller, clock, passes=2)
    assert service.store.get_host("c")["cpu_warning"] is None
    assert [e for e in service.list_events() if e["kind"] == "host-cpu-compatible"]
    # started again, it gets the lower baseline, which c runs: no warning
    service.set_state("web1", "running")
    settle(controller, clock, passes=2)
    row = service.store.get_vm("web1")
    assert row["observed_state"] == "running"
    assert [f.get("name") for f in domain_of(cloud, row).findall("cpu/feature")] == ["sse4.2"]
    assert service.store.get_host("c")["cpu_warning"] is None
    # a second VM from before c joined would warn again: one started by hand with the old model
    service.create_vm({"name": "web2", "node_selector": {"appliance/host": "local"}})  # not on c itself
    settle(controller, clock, passes=1)
    web2 = service.store.get_vm("web2")
    with cloud.lock:
        [uri] = cloud.where(web2["id"])
        dom = cloud.host(uri).domains[web2["id"]]
        dom.xml = dom.xml.replace('<feature policy="require" name="sse4.2" />',
                                  '<feature policy="require" name="avx2" /><feature policy="require" name="sse4.2" />')
    service.store.update_vm(web2["id"], bump=False, domain_xml=dom.xml, state_changed=clock() + 1)
    settle(controller, clock, passes=1)
    warning = service.store.get_host("c")["cpu_warning"]
    assert "missing: avx2" in warning and "1 running VM(s)" in warning
    # it is deleted: the warning goes
    service.delete_vm("web2", force=True)
    settle(controller, clock, passes=2)
    assert service.store.get_host("c")["cpu_warning"] is None

"""vCPUs and memory changed on a running VM (issue 14) through the fake
hypervisor: what is applied live, what waits for a restart (RestartRequired,
with the fields and the reason), and what a reboot clears."""
from __future__ import annotations

import pytest
from tests.unit.appliance.controller.controller_harness import settle

from appliance.errors import Conflict


def _running(service, controller, clock, **spec):
    vm, _op = service.create_vm({"name": "web1", **spec})
    settle(controller, clock)
    row = service.store.get_vm_by_id(vm["id"])
    assert row["observed_state"] == "running"
    return row


def _change(service, controller, clock, **patch):
    service.update_vm("web1", patch)
    settle(controller, clock)
    return service.vm_row("web1")


def _dom(cloud, row):
    return cloud.host(cloud.where(row["id"])[0]).domains[row["id"]]


def test_the_domain_gets_room_to_grow_from_the_host(service, controller, cloud, clock):
    row = _running(service, controller, clock, cpus=1, memory="256M")
    xml = _dom(cloud, row).xml
    # the fake host has 16 CPUs and 16 GiB: 4 x cpus and 4 x memory fit
    assert "<vcpu placement=\"static\" current=\"1\">4</vcpu>" in xml
    assert "<maxMemory unit=\"MiB\" slots=\"1\">1024</maxMemory>" in xml
    assert 'model="virtio-mem"' in xml and '<size unit="MiB">768</size>' in xml


def test_more_vcpus_are_plugged_live_up_to_the_maximum(service, controller, cloud, clock):
    row = _running(service, controller, clock, cpus=1)
    row = _change(service, controller, clock, cpus=3)
    assert _dom(cloud, row).live["vcpus"] == 3
    assert f"setvcpus {row['id']}" in cloud.host(cloud.where(row["id"])[0]).calls
    assert not row["restart_required"]
    status = service.status(row)
    assert status["pending_changes"] == []
    assert {"type": "RestartRequired", "status": False, "message": ""} in status["conditions"]
    kinds = [(e["kind"], e["message"]) for e in service.store.list_events(limit=50)]
    assert ("applied-live", "applied without a restart: cpus") in kinds
    assert not any("applies at next start" in message for _kind, message in kinds)


def test_beyond_max_cpus_waits_for_a_restart_which_clears_it(service, controller, cloud, clock):
    row = _running(service, controller, clock, cpus=1)  # room for 4 (4 x cpus; the host has 16)
    row = _change(service, controller, clock, cpus=5)
    assert _dom(cloud, row).live["vcpus"] == 1  # nothing plugged
    assert row["restart_required"]
    status = service.status(row)
    assert status["pending_changes"] == ["cpus"]
    condition = next(c for c in status["conditions"] if c["type"] == "RestartRequired")
    assert condition == {"type": "RestartRequired", "status": True,
                         "message": "waiting for the next restart: cpus"}
    assert service.vm_view(row)["pending_changes"] == ["cpus"]
    messages = [e["message"] for e in service.store.list_events(limit=50)
                if e["kind"] == "restart-required"]
    assert messages == ["cpus: 5 vCPUs is more than the 4 this VM started with room for "
                        "(max_cpus); applies at the next restart"]
    service.set_state("web1", "reboot")
    settle(controller, clock)
    row = service.vm_row("web1")
    assert not row["restart_required"] and service.status(row)["pending_changes"] == []
    # the new boot has 5 vCPUs, and room for 16 (4 x 5, capped by the host's 16)
    assert (_dom(cloud, row).live["vcpus"], _dom(cloud, row).live["max_vcpus"]) == (5, 16)


def test_fewer_vcpus_wait_for_a_restart(service, controller, cloud, clock):
    row = _running(service, controller, clock, cpus=2)
    row = _change(service, controller, clock, cpus=1)
    assert _dom(cloud, row).live["vcpus"] == 2
    assert row["restart_required"] and service.status(row)["pending_changes"] == ["cpus"]


def test_memory_grows_live_through_virtio_mem(service, controller, cloud, clock):
    row = _running(service, controller, clock, memory="256M")
    row = _change(service, controller, clock, memory="512M")
    live = _dom(cloud, row).live
    assert (live["base"], live["requested"], live["current"]) == (256, 256, 256)
    assert not row["restart_required"]
    # and back down to what it booted with, live too
    row = _change(service, controller, clock, memory="256M")
    assert _dom(cloud, row).live["requested"] == 0 and not row["restart_required"]


def test_memory_the_guest_does_not_take_waits_for_a_restart(service, controller, cloud, clock):
    row = _running(service, controller, clock, memory="256M")
    _dom(cloud, row).live["stuck"] = True  # a guest without a virtio_mem driver
    row = _change(service, controller, clock, memory="512M")
    assert row["restart_required"] and service.status(row)["pending_changes"] == ["memory"]
    messages = [e["message"] for e in service.store.list_events(limit=50)
                if e["kind"] == "restart-required"]
    assert messages and "the guest took 256 of 512 MiB" in messages[0]


def test_memory_below_boot_or_beyond_max_waits(service, controller, cloud, clock):
    row = _running(service, controller, clock, memory="256M", max_memory="512M")
    row = _change(service, controller, clock, memory="1G", max_memory="1G")
    assert _dom(cloud, row).live["requested"] == 0
    assert service.status(row)["pending_changes"] == ["max_memory", "memory"]
    service.set_state("web1", "reboot")
    settle(controller, clock)
    row = service.vm_row("web1")
    assert not row["restart_required"]
    row = _change(service, controller, clock, memory="512M")  # below the 1 GiB it booted with
    assert row["restart_required"] and service.status(row)["pending_changes"] == ["memory"]


def test_growth_the_host_cannot_take_is_refused_with_the_schedulers_reason(
        service, controller, clock):
    _running(service, controller, clock, memory="1G", max_memory="64G")
    with pytest.raises(Conflict) as refused:
        service.update_vm("web1", {"memory": "40G"})
    assert refused.value.field == "memory" and "does not fit on host" in str(refused.value)
    row = service.vm_row("web1")
    assert row["spec"]["memory"] == 1024 and not row["restart_required"]

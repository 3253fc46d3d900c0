"""Where the parts of issue 14 meet (hotplug, dedicated CPUs, hugepages,
suspend, shelve, rebuild, pools, templates, firmware), on the fake hypervisor."""
from __future__ import annotations

import pytest
from tests.unit.appliance.controller.controller_harness import URI_A, URI_B, make_disk_image, settle

from appliance.errors import Conflict, Invalid

HOSTS = {"local": URI_A, "b": URI_B}


def _dom(cloud, row):
    return cloud.host(HOSTS[row["host"]]).domains[row["id"]]


def _events(service, name, kind):
    return [e["message"] for e in service.list_events(name) if e["kind"] == kind]


# -- hotplug x dedicated CPUs -------------------------------------------------------------------
def test_a_dedicated_vm_gets_no_vcpu_room_and_its_cpus_change_waits(service, controller, cloud, clock):
    for name in HOSTS:
        service.update_host(name, {"cpu_dedicated_set": "12-15"})
    service.create_vm({"name": "ded1", "cpus": 1, "cpu": {"dedicated": True}})
    settle(controller, clock)
    row = service.vm_row("ded1")
    # every vCPU it can have is pinned to a dedicated CPU: none would float on shared ones
    assert _dom(cloud, row).live["max_vcpus"] == 1
    _dom(cloud, row).live["max_vcpus"] = 4  # as a domain defined before this rule had room
    service.update_vm("ded1", {"cpus": 2})
    settle(controller, clock)
    row = service.vm_row("ded1")
    assert _dom(cloud, row).live["vcpus"] == 1 and row["restart_required"]
    assert service.status(row)["pending_changes"] == ["cpus"]
    assert any("pinned at boot" in m for m in _events(service, "ded1", "restart-required"))
    service.set_state("ded1", "reboot")
    settle(controller, clock)
    row = service.vm_row("ded1")
    assert _dom(cloud, row).live["vcpus"] == 2 and len(row["pinned_cpus"].split("-")) == 2


def test_a_dedicated_vm_with_room_beyond_its_cpus_is_refused(service):
    with pytest.raises(Invalid) as err:
        service.create_vm({"name": "ded1", "cpus": 1, "max_cpus": 2, "cpu": {"dedicated": True}})
    assert err.value.field == "cpu.dedicated" and "max_cpus" in err.value.reason
    assert not [r for r in service.store.list_vms() if r["name"] == "ded1"]


# -- hotplug x hugepages --------------------------------------------------------------------------
def test_a_hugepages_vm_grows_live_only_within_the_hosts_free_hugepages(service, controller, cloud, clock):
    """libvirt 9.0 backs the virtio-mem area of a hugepages VM on hugetlbfs too
    (reserve=false, the device's prealloc=true: pages are taken when plugged; checked
    on a local host's libvirtd with domxml-to-native): the growth is a hugepages claim."""
    cloud.host(URI_B).hugepages_mib = 512
    settle(controller, clock, passes=1)
    service.create_vm({"name": "big", "memory": "256M", "hugepages": True})
    settle(controller, clock)
    row = service.vm_row("big")
    assert row["host"] == "b" and _dom(cloud, row).live["size"] == 768
    service.update_vm("big", {"memory": "512M"})
    settle(controller, clock)
    assert service.get_host("b")["allocated"]["hugepages_mib"] == 512
    with pytest.raises(Conflict) as err:
        service.update_vm("big", {"memory": "640M"})
    assert err.value.field == "memory" and "needs 128 MiB of hugepages, 0 MiB free" in err.value.reason
    assert service.vm_row("big")["spec"]["memory"] == 512


def test_more_dedicated_vcpus_than_the_host_has_free_are_refused_on_cpus(service, controller, clock):
    for name in HOSTS:
        service.update_host(name, {"cpu_dedicated_set": "14-15"})
    service.create_vm({"name": "ded1", "cpus": 2, "cpu": {"dedicated": True}})
    settle(controller, clock)
    with pytest.raises(Conflict) as err:
        service.update_vm("ded1", {"cpus": 3})
    assert err.value.field == "cpus" and "dedicated CPUs" in err.value.reason


# -- suspend x hotplug ---------------------------------------------------------------------------
def test_a_resumed_vm_keeps_its_live_changes_and_what_waits_for_a_restart(service, controller, cloud, clock):
    service.create_vm({"name": "web1", "cpus": 1})
    settle(controller, clock)
    service.update_vm("web1", {"cpus": 3})  # plugged live
    settle(controller, clock)
    service.update_vm("web1", {"cpus": 2})  # fewer: waits for a restart
    settle(controller, clock)
    assert service.vm_row("web1")["restart_required"]
    service.set_state("web1", "suspend")
    settle(controller, clock)
    row = service.vm_row("web1")
    assert row["observed_state"] == "suspended"
    service.update_vm("web1", {"labels": {"tier": "web"}})  # allowed while suspended
    settle(controller, clock)
    service.set_state("web1", "running")
    settle(controller, clock)
    row = service.vm_row("web1")
    assert row["observed_state"] == "running" and _dom(cloud, row).live["vcpus"] == 3
    assert row["restart_required"]
    status = service.status(row)
    assert status["pending_changes"] == ["cpus"]
    assert {"type": "RestartRequired", "status": 1,
            "message": "waiting for the next restart: cpus"} in status["conditions"]


# -- pools x shelve, rebuild, suspend ---------------------------------------------------------------
POOL_RUNNING = {"image": "demo", "run_strategy": "Always"}


def _pool_members(service, pool="web"):
    return {m["name"]: m for m in service.store.pool_members(service.pool_row(pool)["id"])}


def test_a_pool_member_is_not_shelved_nor_rebuilt_from_another_image(service, controller, clock, tmp_path):
    service.create_pool({"name": "web", "template": POOL_RUNNING, "replicas": 1})
    settle(controller, clock)
    assert service.vm_row("web-0")["observed_state"] == "running"
    with pytest.raises(Conflict) as err:
        service.set_state("web-0", "shelve")
    assert err.value.field == "state" and "pool web" in err.value.reason
    other = tmp_path / "other.img"
    make_disk_image(other)
    service.import_image_file("other", other)
    with pytest.raises(Conflict) as err:
        service.rebuild_vm("web-0", {"image": "other"})
    assert err.value.field == "image" and "pool web" in err.value.reason
    row = service.vm_row("web-0")
    assert row["desired_state"] == "running" and row["spec"]["image"] == "demo"
    assert service.rebuild_vm("web-0", {})["kind"] == "rebuild"  # its own image: a reimage
    settle(controller, clock)
    assert service.vm_row("web-0")["observed_state"] == "running"


def test_a_roll_out_leaves_a_suspended_member_until_it_is_resumed(service, controller, cloud, clock):
    service.create_pool({"name": "web", "template": POOL_RUNNING, "replicas": 2})
    settle(controller, clock)
    service.set_state("web-0", "suspend")
    settle(controller, clock)
    assert service.vm_row("web-0")["observed_state"] == "suspended"
    service.update_pool("web", {"template": {**POOL_RUNNING, "memory": 256}})
    settle(controller, clock, passes=12)
    rows = _pool_members(service)
    assert rows["web-1"]["pool_revision"] == 2 and rows["web-1"]["observed_state"] == "running"
    assert rows["web-0"]["pool_revision"] == 1 and rows["web-0"]["observed_state"] == "suspended"
    assert _dom(cloud, rows["web-0"]).saved  # its saved memory is the user's: kept
    service.set_state("web-0", "running")
    settle(controller, clock, passes=12)
    row = _pool_members(service)["web-0"]
    assert row["pool_revision"] == 2 and row["spec"]["memory"] == 256
    assert row["observed_state"] == "running"


# -- shelve x TPM ------------------------------------------------------------------------------------
def test_a_tpm_vm_is_not_shelved_its_tpm_state_would_be_lost(service, controller, cloud, clock):
    """libvirt 9.0's undefine removes the TPM state (/var/lib/libvirt/swtpm/UUID)
    unless told KEEP_TPM (checked on the real libvirtd), and an unshelve may land
    on another host, where that state is not: shelving a TPM VM is refused, as
    its offline move is."""
    service.create_vm({"name": "win1", "tpm": True, "firmware": "uefi"})
    settle(controller, clock)
    with pytest.raises(Conflict) as err:
        service.set_state("win1", "shelve")
    assert err.value.field == "state" and "TPM" in err.value.reason
    row = service.vm_row("win1")
    assert row["desired_state"] == "running" and row["id"] in cloud.host(HOSTS[row["host"]]).domains
    service.create_vm({"name": "web1", "firmware": "uefi"})  # UEFI alone: its NVRAM stays (KEEP_NVRAM)
    settle(controller, clock)
    assert service.set_state("web1", "shelve")["kind"] == "shelve"


# -- rebuild x UEFI -----------------------------------------------------------------------------------
def test_a_rebuild_keeps_a_uefi_vms_nvram(service, controller, config, clock):
    """The NVRAM is the VM's firmware settings (Secure Boot keys a user enrolled,
    boot entries), not its root disk: a rebuild keeps it (OVMF drops boot entries
    that point nowhere and boots the disk's default EFI path)."""
    service.create_vm({"name": "web1", "firmware": "uefi-secure"})
    settle(controller, clock)
    row = service.vm_row("web1")
    nvram = config.vm_dir(row["id"]) / "nvram-uefi-secure.fd"
    nvram.write_bytes(b"enrolled keys")
    service.rebuild_vm("web1", {})
    settle(controller, clock)
    assert any("root disk made again" in m for m in _events(service, "web1", "rebuilt"))
    assert nvram.read_bytes() == b"enrolled keys"


# -- suspend x dedicated CPUs ------------------------------------------------------------------------
def test_a_suspended_vms_pins_are_not_given_to_another_vm(service, controller, cloud, clock):
    """The saved memory's domain resumes with the host CPUs it was pinned to (a
    managed save restores its own XML): they stay its own while it is suspended."""
    for name in HOSTS:
        service.update_host(name, {"cpu_dedicated_set": "14-15"})
    service.create_vm({"name": "ded1", "cpus": 1, "cpu": {"dedicated": True},
                       "node_selector": {"appliance/host": "local"}})
    settle(controller, clock)
    saved_pins = service.vm_row("ded1")["pinned_cpus"]
    service.set_state("ded1", "suspend")
    settle(controller, clock)
    assert service.vm_row("ded1")["observed_state"] == "suspended"
    service.create_vm({"name": "ded2", "cpus": 1, "cpu": {"dedicated": True},
                       "node_selector": {"appliance/host": "local"}})
    settle(controller, clock)
    assert service.vm_row("ded2")["pinned_cpus"] not in ("", None, saved_pins)
    service.set_state("ded1", "running")
    settle(controller, clock)
    row = service.vm_row("ded1")
    assert row["observed_state"] == "running" and row["pinned_cpus"] == saved_pins

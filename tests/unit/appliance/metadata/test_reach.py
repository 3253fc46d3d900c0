"""A VM whose only data is the metadata service (`cloud_init.datasource: "metadata"`)
goes only where that service reaches its guests (appliance/metadata/reach.py, as
service.py decides where it listens): placed on a served host, refused with 422
naming the field when no host it may go to is served (before: accepted silently, a
guest with no data at all). The namespaces are stand-ins as in test_service.py."""
from __future__ import annotations

import dataclasses
import os
import time

import pytest

from appliance.errors import Invalid
from appliance.metadata import netns
from tests.unit.appliance.metadata.test_service import SOCKETS, uri
from tests.unit.conftest import TEST_HOST_INFO

OWN, LAB = (1, 1), (1, 200)
BY_METADATA = {"datasource": "metadata", "user_data": "#cloud-config\n"}


@pytest.fixture
def hosts(monkeypatch, service):
    """'own' in the machine's namespace, 'lab' in one of its own ('local': the test driver)."""
    spaces = {f"{SOCKETS}/own/run/libvirt-sock": OWN, f"{SOCKETS}/lab/run/libvirt-sock": LAB}
    monkeypatch.setattr(netns, "listener_pid", lambda path, timeout=2.0: path)
    monkeypatch.setattr(netns, "namespace_key",
                        lambda pid: OWN if pid == os.getpid() else spaces[pid])
    for name in ("own", "lab"):
        service.store.upsert_host({
            "name": name, "uri": uri(name), "state": "enabled", "up": 1, "last_seen": time.time(),
            "info": TEST_HOST_INFO, "cpu_ratio": 16.0, "ram_ratio": 1.5, "disk_ratio": 1.0,
            "reserved_memory_mib": 0, "labels": {}, "storage": "shared"})
    return service


def create(service, host=None, name="web1"):
    body = {"name": name, "image": "demo", "state": "stopped", "cloud_init": BY_METADATA}
    return service.create_vm({**body, "host": host} if host else body)


def refused(service, **kwargs) -> str:
    with pytest.raises(Invalid) as err:
        create(service, **kwargs)
    assert err.value.field == "cloud_init.datasource"
    assert not service.store.vm_exists("web1")  # nothing recorded
    return err.value.reason


def test_no_served_host_is_refused_naming_the_field(service):
    reason = refused(service)  # the test driver's host only: not a local libvirt
    assert "serves only this machine's" in reason and "test:///default" in reason


def test_it_is_placed_on_a_served_host_and_refused_on_another(hosts):
    for i in range(4):  # the scheduler's choice, whatever its spread: never own or local
        vm, _ = create(hosts, name=f"web{i + 10}")
        assert hosts.store.get_vm(f"web{i + 10}")["host"] == "lab"
    assert "metadata_host_namespace" in refused(hosts, host="own")
    assert "serves only this machine's" in refused(hosts, host="local")
    create(hosts, host="lab", name="web2")  # asked for, served
    # another datasource goes anywhere
    hosts.create_vm({"name": "seeded", "image": "demo", "state": "stopped", "host": "own",
                     "cloud_init": {"datasource": "nocloud"}})


def test_the_admin_s_switches_decide(hosts):
    hosts.config = dataclasses.replace(hosts.config, metadata_host_namespace=True)
    create(hosts, host="own", name="web2")  # served now
    hosts.config = dataclasses.replace(hosts.config, metadata_service=False)
    assert "the metadata service is off" in refused(hosts)


def test_a_change_to_it_is_refused_where_the_vm_is_not_served(hosts):
    hosts.create_vm({"name": "web1", "image": "demo", "state": "stopped", "host": "own"})
    with pytest.raises(Invalid) as err:
        hosts.update_vm("web1", {"cloud_init": BY_METADATA})
    assert err.value.field == "cloud_init.datasource"
    assert hosts.store.get_vm("web1")["spec"]["cloud_init"] is None

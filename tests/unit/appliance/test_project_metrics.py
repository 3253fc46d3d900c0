"""vmappliance_project_usage and vmappliance_project_quota: what the quota check
counts, in the units of the host families; no quota series for an unlimited one."""
from __future__ import annotations

from falcon import testing
from prometheus_client import CollectorRegistry

from appliance.access import Principal, Role, acting_as
from appliance.api.app import create_app
from exporter.appliance import ApplianceCollector

MIB, GIB = 1024 ** 2, 1024 ** 3


def _registry(store) -> CollectorRegistry:
    registry = CollectorRegistry()
    registry.register(ApplianceCollector(store))
    return registry


def test_usage_and_quota_per_project_and_resource(service, store):
    service.create_project({"name": "web", "quota": {"vms": 4, "memory_mib": "1G", "disk_gib": 10}})
    with acting_as(Principal(user="t", role=Role.ADMIN, project="web")):
        service.create_vm({"name": "a", "state": "stopped", "cpus": 2, "memory": 256,
                           "disks": [{"name": "data", "size": 512}]})
        service.create_vm({"name": "b", "state": "stopped", "cpus": 1, "memory": 128})
        service.create_vm({"name": "c", "state": "stopped"})
        service.delete_vm("c")  # asked for: no longer counted
    service.create_vm({"name": "d", "state": "stopped"})
    image = store.image_virtual_size("demo")
    registry = _registry(store)

    def usage(project, resource):
        return registry.get_sample_value("vmappliance_project_usage",
                                         {"project": project, "resource": resource})

    def quota(project, resource):
        return registry.get_sample_value("vmappliance_project_quota",
                                         {"project": project, "resource": resource})

    assert usage("web", "vms") == 2
    assert usage("web", "vcpus") == 3
    assert usage("web", "memory_bytes") == 384 * MIB
    assert usage("web", "disk_bytes") == 2 * image + 512 * MIB
    assert usage("default", "vms") == 1
    assert quota("web", "vms") == 4
    assert quota("web", "memory_bytes") == GIB
    assert quota("web", "disk_bytes") == 10 * GIB
    assert quota("web", "vcpus") is None  # unlimited: no series
    assert all(quota("default", r) is None for r in ("vms", "vcpus", "memory_bytes", "disk_bytes"))
    # what the project's view says is what the quota check and the families count
    shown = service.get_project("web")["usage"]
    assert (shown["vms"], shown["cpus"], shown["memory_mib"] * MIB) == (
        usage("web", "vms"), usage("web", "vcpus"), usage("web", "memory_bytes"))


def test_a_project_without_vms_reports_zero_usage_on_the_apis_metrics(service):
    service.create_project({"name": "empty", "quota": {"cpus": 0}})
    client = testing.TestClient(create_app(service, "metrics-token"),
                                headers={"Authorization": "Bearer metrics-token"})
    text = client.simulate_get("/metrics").text
    assert 'vmappliance_project_usage{project="empty",resource="vms"} 0.0' in text
    assert 'vmappliance_project_quota{project="empty",resource="vcpus"} 0.0' in text
    assert "# TYPE vmappliance_project_quota gauge" in text

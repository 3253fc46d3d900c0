"""Projects and their quotas, in the service: CRUD, who sees what, and the quota
check of every create and every change that grows what a project holds."""
from __future__ import annotations

import pytest

from appliance.access import Principal, Role, acting_as
from appliance.errors import Conflict, Forbidden, Invalid, NotFound

UNLIMITED = {"vms": None, "cpus": None, "memory_mib": None, "disk_gib": None}
ZERO = {"vms": 0, "cpus": 0, "memory_mib": 0, "disk_gib": 0}


def in_project(project: str, role: Role = Role.ADMIN, projects: tuple[str, ...] | None = None):
    """Act as a user of this role in this project (an admin may name any)."""
    return acting_as(Principal(user="tester", role=role, projects=projects or (project,),
                               project=project))


def create(service, project: str, name: str, **spec):
    with in_project(project):
        return service.create_vm({"name": name, "state": "stopped", **spec})


def test_the_default_project_exists_unlimited_and_counts_its_vms(service):
    service.create_vm({"name": "a", "state": "stopped", "cpus": 2, "memory": 256})
    project = service.get_project("default")
    assert project["quota"] == UNLIMITED
    assert project["usage"]["vms"] == 1 and project["usage"]["cpus"] == 2
    assert project["usage"]["memory_mib"] == 256
    assert project["usage"]["disk_gib"] == 1  # the demo image's 1 MiB, rounded up to whole GiB


def test_create_show_update_delete(service):
    made = service.create_project({"name": "web", "description": "the web team",
                                   "quota": {"vms": 5, "memory_mib": "16G", "disk_gib": "1T"}})
    assert made["name"] == "web" and made["description"] == "the web team"
    assert made["quota"] == {"vms": 5, "cpus": None, "memory_mib": 16384, "disk_gib": 1024}
    assert made["usage"] == {"vms": 0, "cpus": 0, "memory_mib": 0, "disk_gib": 0}
    assert [p["name"] for p in service.list_projects()] == ["default", "web"]
    # merged: cpus set, vms lifted, the others kept
    changed = service.update_project("web", {"quota": {"cpus": 8, "vms": None}})
    assert changed["quota"] == {"vms": None, "cpus": 8, "memory_mib": 16384, "disk_gib": 1024}
    assert service.update_project("web", {"description": "x"})["description"] == "x"
    with pytest.raises(Conflict, match="exists"):
        service.create_project({"name": "web"})
    service.delete_project("web")
    with pytest.raises(NotFound):
        service.get_project("web")
    kinds = [e["kind"] for e in service.list_events()]
    assert {"project-created", "project-updated", "project-deleted"} <= set(kinds)


@pytest.mark.parametrize("body, field", [
    ({"name": "Web"}, "name"), ({"name": "a" * 64}, "name"), ({"name": 3}, "name"), ({}, "name"),
    ({"name": "web", "description": "x" * 257}, "description"),
    ({"name": "web", "description": "\x1b[31mred"}, "description"),
    ({"name": "web", "description": 5}, "description"),
    ({"name": "web", "owner": "me"}, "owner"),
    ({"name": "web", "quota": []}, "quota"),
    ({"name": "web", "quota": {"gpus": 1}}, "quota.gpus"),
    ({"name": "web", "quota": {"vms": -1}}, "quota.vms"),
    ({"name": "web", "quota": {"vms": 1.5}}, "quota.vms"),
    ({"name": "web", "quota": {"vms": True}}, "quota.vms"),
    ({"name": "web", "quota": {"vms": "five"}}, "quota.vms"),
    ({"name": "web", "quota": {"cpus": 10**9}}, "quota.cpus"),
    ({"name": "web", "quota": {"vms": "9" * 5000}}, "quota.vms"),
    ({"name": "web", "quota": {"memory_mib": "lots"}}, "quota.memory_mib"),
    ({"name": "web", "quota": {"memory_mib": "1K"}}, "quota.memory_mib"),
    ({"name": "web", "quota": {"disk_gib": "1500M"}}, "quota.disk_gib"),
    ({"name": "web", "quota": {"disk_gib": 2**31}}, "quota.disk_gib"),
])
def test_refused_input_names_the_field_and_changes_nothing(service, body, field):
    with pytest.raises(Invalid) as refused:
        service.create_project(body)
    assert refused.value.field == field
    assert [p["name"] for p in service.list_projects()] == ["default"]


def test_the_default_project_and_non_empty_ones_are_not_deleted(service, store):
    with pytest.raises(Conflict, match="default project cannot be deleted"):
        service.delete_project("default")
    service.create_project({"name": "web"})
    create(service, "web", "w1")
    store.insert_user({"name": "alice", "role": "operator", "projects": ["web"], "created": 0,
                       "disabled": 0})
    with pytest.raises(Conflict) as refused:
        service.delete_project("web")
    assert "VMs: w1" in refused.value.reason and "users: alice" in refused.value.reason
    store.delete_user("alice")
    with in_project("web"):
        service.delete_vm("w1")  # asked, not gone yet: the project still holds it
    with pytest.raises(Conflict, match="VMs: w1"):
        service.delete_project("web")
    store.delete_vm(store.get_vm("w1", "web")["id"])
    service.delete_project("web")


def test_a_non_admin_sees_only_their_projects_and_changes_none(service):
    service.create_project({"name": "web"})
    service.create_project({"name": "db"})
    with in_project("web", Role.OPERATOR):
        assert [p["name"] for p in service.list_projects()] == ["web"]
        assert service.get_project("web")["name"] == "web"
        with pytest.raises(NotFound) as hidden:
            service.get_project("db")
        with pytest.raises(NotFound) as missing:
            service.get_project("nope")
        assert hidden.value.reason == "no project named 'db'"  # said as of one that is not there
        assert missing.value.reason == "no project named 'nope'"
        for write in (lambda: service.create_project({"name": "x"}),
                      lambda: service.update_project("web", {"quota": {"vms": 100}}),
                      lambda: service.delete_project("web")):
            with pytest.raises(Forbidden):
                write()
    assert service.get_project("web")["quota"] == UNLIMITED


@pytest.mark.parametrize("quota, first, second, resource", [
    ({"vms": 1}, {}, {}, "VMs"),
    ({"cpus": 3}, {"cpus": 2}, {"cpus": 2}, "vCPUs"),
    ({"memory_mib": "1G"}, {"memory": 768}, {"memory": 512}, "MiB of memory"),
    ({"disk_gib": 1}, {"disks": [{"name": "data", "size": 600}]},
     {"disks": [{"name": "data", "size": 600}]}, "GiB of disk"),
])
def test_each_resource_refuses_the_create_past_its_limit(service, quota, first, second, resource):
    service.create_project({"name": "web", "quota": quota})
    create(service, "web", "one", **first)
    before = service.get_project("web")["usage"]
    with pytest.raises(Conflict) as refused:
        create(service, "web", "two", **second)
    assert refused.value.field == "quota"
    assert refused.value.reason.startswith(f"quota exceeded in project web: {resource} used ")
    assert service.get_project("web")["usage"] == before
    with in_project("web"):
        assert [vm["name"] for vm in service.list_vms()] == ["one"]
    # another project's quota is its own: the default one is unlimited
    service.create_vm({"name": "two", "state": "stopped", **second})


def test_the_reason_names_resource_usage_limit_and_project(service):
    service.create_project({"name": "web", "quota": {"cpus": 4}})
    create(service, "web", "a", cpus=3)
    with pytest.raises(Conflict) as refused:
        create(service, "web", "b", cpus=2)
    assert refused.value.reason == ("quota exceeded in project web: vCPUs used 3, limit 4; "
                                    "a new VM would make it 5")


def test_a_zero_quota_refuses_everything_and_an_exact_fit_passes(service):
    service.create_project({"name": "web", "quota": {"cpus": 4, "memory_mib": 512}})
    create(service, "web", "a", cpus=2, memory=256)
    create(service, "web", "b", cpus=2, memory=256)  # exactly the limits
    assert service.get_project("web")["usage"]["cpus"] == 4
    service.create_project({"name": "closed", "quota": ZERO})
    with pytest.raises(Conflict, match="project closed: VMs used 0, limit 0"):
        create(service, "closed", "c")


def test_deleting_a_vm_frees_its_share_at_once(service):
    service.create_project({"name": "web", "quota": {"vms": 2}})
    create(service, "web", "a")
    create(service, "web", "b")
    with pytest.raises(Conflict):
        create(service, "web", "c")
    with in_project("web"):
        service.delete_vm("a")  # asked for: it no longer counts, though its row is there
    assert service.get_project("web")["usage"]["vms"] == 1
    create(service, "web", "c")


def test_a_change_that_grows_past_the_limit_is_refused_and_others_pass(service, store):
    service.create_project({"name": "web", "quota": {"cpus": 4, "memory_mib": 1024, "disk_gib": 1}})
    create(service, "web", "a", cpus=2, memory=512)
    create(service, "web", "b", cpus=1, memory=256)
    with in_project("web"):
        with pytest.raises(Conflict, match="vCPUs used 3, limit 4; this change would make it 5"):
            service.update_vm("a", {"cpus": 4})
        with pytest.raises(Conflict, match="MiB of memory used 768, limit 1024"):
            service.update_vm("b", {"memory": 800})
        with pytest.raises(Conflict, match="GiB of disk"):
            service.update_vm("b", {"disks": [{"name": "big", "size": 2048}]})
        assert service.get_vm("a")["spec"]["cpus"] == 2 and service.get_vm("b")["spec"]["memory"] == 256
        service.update_vm("a", {"cpus": 3})  # exactly the limit
        service.update_vm("b", {"labels": {"tier": "web"}, "memory": 512})  # 1024: exactly
        store.update_vm(store.get_vm("b", "web")["id"], bump=False, observed_state="stopped")
        service.rename_vm("b", "b2")  # free
    assert service.get_project("web")["usage"] == {"vms": 2, "cpus": 4, "memory_mib": 1024,
                                                   "disk_gib": 1}


def test_a_quota_lowered_below_usage_is_taken_and_blocks_growth_saying_why(service):
    service.create_project({"name": "web"})
    for name in ("a", "b", "c"):
        create(service, "web", name, cpus=2)
    lowered = service.update_project("web", {"quota": {"vms": 2, "cpus": 4}})
    assert lowered["quota"]["vms"] == 2 and lowered["usage"]["vms"] == 3
    with pytest.raises(Conflict) as refused:
        create(service, "web", "d", cpus=1)
    assert refused.value.reason == ("quota exceeded in project web: VMs used 3, limit 2 (usage is "
                                    "already above the limit); a new VM would make it 4")
    with in_project("web"):
        with pytest.raises(Conflict, match="vCPUs used 6, limit 4 \\(usage is already above the limit"):
            service.update_vm("a", {"cpus": 3})
        # what does not grow still passes: shrinking, labels, a start (every VM counts already)
        service.update_vm("a", {"cpus": 1, "labels": {"x": "y"}})
        service.set_state("b", "running")
    assert service.get_project("web")["usage"]["cpus"] == 5

"""Security review of issue 14's live shapes (templates, pools, rebuild, firmware,
XML patches): each test is a finding's regression test and failed before its fix."""
from __future__ import annotations

import time

import pytest

from appliance.access.principal import Principal, Role, acting_as
from appliance.errors import Forbidden

PATCHES = [{"op": "add", "xpath": "/domain/devices",
            "xml": "<disk type='file' device='disk'><source file='/etc/shadow'/>"
                   "<target dev='vdz' bus='virtio'/></disk>"}]


def person(role: Role, project: str = "web") -> Principal:
    return Principal(user=f"{role}-of-{project}", role=role, projects=(project,), project=project)


@pytest.fixture
def teams(service):
    for name in ("web", "db"):
        service.store.insert_project({"name": name, "description": "", "quota": {},
                                      "created": time.time()})
    return service


def test_an_operator_cannot_put_xml_patches_in_a_pool_s_template(teams):
    """Finding: a pool's template was not checked for xml_patches, and the pool
    controller creates and updates members as SYSTEM (an admin): an operator's
    patch (QEMU, as root, opening /etc/shadow as a disk) reached the members.
    Refused at create, at a template change (PATCH, template.json) and through
    a named template the operator may not use either."""
    service = teams
    with acting_as(person(Role.OPERATOR)):
        with pytest.raises(Forbidden) as refused:
            service.create_pool({"name": "web", "replicas": 1,
                                 "template": {"image": "demo", "xml_patches": PATCHES}})
        assert refused.value.field == "template.xml_patches"
        assert service.list_pools() == []
        service.create_pool({"name": "web", "template": {"image": "demo"}})
        with pytest.raises(Forbidden):
            service.update_pool("web", {"template": {"image": "demo", "xml_patches": PATCHES}})
        assert service.pool_row("web")["template"].get("xml_patches", []) == []
        assert service.pool_row("web")["revision"] == 1
    admin = Principal(user="admin", role=Role.ADMIN, projects=("web",), project="web")
    with acting_as(admin):  # an admin's global template with patches...
        service.create_template({"name": "raw", "global": True,
                                 "spec": {"image": "demo", "xml_patches": PATCHES}})
    with acting_as(person(Role.OPERATOR)):  # ...is not the operator's to use in a pool
        with pytest.raises(Forbidden):
            service.update_pool("web", {"template": "raw"})
        with pytest.raises(Forbidden):
            service.create_pool({"name": "raw", "template": {"template": "raw"}})
    with acting_as(admin):  # the admin may, and the operator may then scale it
        service.update_pool("web", {"template": "raw"})
    with acting_as(person(Role.OPERATOR)):
        service.update_pool("web", {"replicas": 2})
        service.update_pool("web", {"template": {"template": "raw", "cpus": 2}})
        assert service.pool_row("web")["template"]["xml_patches"] == PATCHES

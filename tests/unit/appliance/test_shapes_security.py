"""Security review of issue 14's live shapes (templates, pools, rebuild, firmware,
XML patches): each test is a finding's regression test and failed before its fix."""
from __future__ import annotations

import pytest

from appliance.access.principal import Principal, Role, acting_as
from appliance.errors import Forbidden
from tests.unit.appliance.teams import person

PATCHES = [{"op": "add", "xpath": "/domain/devices",
            "xml": "<disk type='file' device='disk'><source file='/etc/shadow'/>"
                   "<target dev='vdz' bus='virtio'/></disk>"}]


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


def test_a_project_holds_a_bounded_number_of_pools(teams):
    """Finding: pools per project were unbounded (`mkdir pools/pN` in a loop, or
    POST): each is read by the pool controller at every pass of the loop and may
    hold a template of up to 1 MiB, so an operator could slow the controller of
    every project and fill the store. 409 beyond MAX_POOLS, nothing recorded."""
    from appliance.errors import Conflict
    from appliance.service.pools import MAX_POOLS

    service = teams
    with acting_as(person(Role.OPERATOR)):
        for n in range(MAX_POOLS):
            service.create_pool({"name": f"p{n}"})
        with pytest.raises(Conflict) as refused:
            service.create_pool({"name": "one-more"})
        assert refused.value.field == "name" and "at most" in refused.value.reason
        assert len(service.list_pools()) == MAX_POOLS
    with acting_as(person(Role.OPERATOR, "db")):  # another project's count is its own
        service.create_pool({"name": "p0"})

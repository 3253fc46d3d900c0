"""Templates in the service and the store (issue 14, part C): global and project
templates, who may change which, the names a project sees, validation, and a VM
recording the template and revision it was made from, untouched by later changes."""
from __future__ import annotations

import pytest

from appliance.access.principal import SYSTEM, Principal, Role, acting_as
from appliance.errors import Conflict, Forbidden, Invalid, NotFound, PreconditionFailed, TooLarge
from appliance.service.templates import DEFAULT_TEMPLATE, MAX_TEMPLATE_BYTES, MAX_TEMPLATES
from tests.unit.appliance.teams import person

SMALL = {"cpus": 1, "memory": "512M", "disks": [{"name": "data", "size": "10G"}]}


def names(service) -> list[str]:
    return [t["name"] for t in service.list_templates()]


# -- the store ----------------------------------------------------------------------------------
def test_the_store_finds_a_project_s_own_template_before_a_global_one(store):
    for project, cpus in (("", 1), ("web", 2)):
        store.insert_template({"id": f"t-{project}", "project": project, "name": "t", "revision": 1,
                               "spec": {"cpus": cpus}, "description": "", "created": 1.0,
                               "updated": 1.0})
    assert store.find_template("web", "t")["spec"] == {"cpus": 2}
    assert store.find_template("db", "t")["spec"] == {"cpus": 1}
    assert store.find_template("db", "nope") is None
    assert [r["project"] for r in store.list_templates("web")] == ["", "web"]
    assert store.projects_with_template("t") == ["web"] and store.count_templates("") == 1
    store.update_template("t-web", {"cpus": 3}, "three", 2, 2.0)
    assert store.find_template("web", "t")["revision"] == 2
    store.delete_template("t-web")
    assert store.find_template("web", "t")["project"] == ""


# -- what a template is -------------------------------------------------------------------------
def test_the_built_in_default_is_listed_and_read_only(service):
    default = service.get_template("default")
    assert default["spec"] == DEFAULT_TEMPLATE and default["builtin"] and default["global"]
    assert names(service) == ["default"]
    with pytest.raises(Forbidden):
        service.change_template("default", {"spec": {"cpus": 2}}, replace=True)
    with pytest.raises(Forbidden):
        service.delete_template("default")
    with pytest.raises(Conflict):
        service.create_template({"name": "default", "spec": {}})


def test_a_template_is_stored_normalised_and_only_with_the_fields_given(service):
    made = service.create_template({"name": "small", "spec": SMALL, "description": "one CPU"})
    assert made["spec"] == {"cpus": 1, "memory": 512, "disks": [{"name": "data", "size": 10240}]}
    assert (made["revision"], made["global"], made["project"]) == (1, False, "default")
    assert service.get_template("small") == made
    assert names(service) == ["default", "small"]
    assert "template-created" in [e["kind"] for e in service.list_events()]


@pytest.mark.parametrize("body, field", [
    ({"name": "t", "spec": {"cpus": 0}}, "spec.cpus"),
    ({"name": "t", "spec": {"memory": "lots"}}, "spec.memory"),
    ({"name": "t", "spec": {"gpus": 1}}, "spec.gpus"),  # unknown field, named
    ({"name": "t", "spec": {"name": "web1"}}, "spec.name"),  # a template has no name
    ({"name": "t", "spec": {"image": "nope"}}, "spec.image"),  # no such image
    ({"name": "t", "spec": {"network": {"type": "wormhole"}}}, "spec.network.type"),
    ({"name": "t", "spec": []}, "spec"),
    ({"name": "t"}, "spec"),
    ({"name": "Bad_Name", "spec": {}}, "name"),
    ({"name": "t", "spec": {}, "colour": "red"}, "colour"),
    ({"name": "t", "spec": {}, "global": "yes"}, "global"),
    ({"name": "t", "spec": {}, "description": "\x1b[2J"}, "description"),
])
def test_a_bad_template_is_refused_with_its_field_and_nothing_is_stored(service, body, field):
    with pytest.raises(Invalid) as err:
        service.create_template(body)
    assert err.value.field == field, err.value.reason
    assert names(service) == ["default"]


def test_a_template_s_size_and_number_are_bounded(service):
    huge = {"labels": {f"k{i}": "v" * 60 for i in range(64)},
            "cloud_init": {"user_data": "#cloud-config\n" + "x" * (MAX_TEMPLATE_BYTES - 100)}}
    with pytest.raises(TooLarge) as err:
        service.create_template({"name": "huge", "spec": huge})
    assert err.value.field == "spec"
    for i in range(MAX_TEMPLATES):
        service.create_template({"name": f"t{i}", "spec": {}})
    with pytest.raises(Conflict):
        service.create_template({"name": "one-more", "spec": {}})


# -- who owns what ------------------------------------------------------------------------------
def test_admins_own_global_templates_and_operators_their_project_s(teams):
    service = teams
    with acting_as(SYSTEM):
        service.create_template({"name": "small", "spec": {"cpus": 1}, "global": True})
    operator = person(Role.OPERATOR)
    with acting_as(operator):
        assert names(service) == ["default", "small"]  # global ones are seen everywhere
        with pytest.raises(Forbidden):
            service.create_template({"name": "big", "spec": {"cpus": 4}, "global": True})
        with pytest.raises(Forbidden):
            service.change_template("small", {"spec": {"cpus": 2}})
        with pytest.raises(Forbidden):
            service.delete_template("small")
        mine = service.create_template({"name": "web-box", "spec": {"cpus": 2}})
        assert (mine["global"], mine["project"]) == (False, "web")
        service.change_template("web-box", {"spec": {"cpus": 3}})
    with acting_as(person(Role.VIEWER)):
        assert names(service) == ["default", "small", "web-box"]
        with pytest.raises(Forbidden):
            service.create_template({"name": "v", "spec": {}})
        with pytest.raises(Forbidden):
            service.delete_template("web-box")
    with acting_as(person(Role.OPERATOR, "db")):  # another project's is not seen
        assert names(service) == ["default", "small"]
        with pytest.raises(NotFound):
            service.get_template("web-box")
        with pytest.raises(NotFound):
            service.delete_template("web-box")
    assert service.get_template("small")["spec"] == {"cpus": 1}


def test_a_name_means_one_template_in_a_project(teams):
    """Refused both ways rather than shadowed: a create never depends on which one wins."""
    service = teams
    service.create_template({"name": "small", "spec": {"cpus": 1}, "global": True})
    with acting_as(person(Role.OPERATOR)):
        with pytest.raises(Conflict) as err:
            service.create_template({"name": "small", "spec": {"cpus": 2}})
        assert "global" in err.value.reason
        service.create_template({"name": "web-box", "spec": {}})
    with pytest.raises(Conflict) as err:
        service.create_template({"name": "web-box", "spec": {}, "global": True})
    assert "project web" in err.value.reason
    with acting_as(person(Role.OPERATOR, "db")):  # another project may use the same name
        service.create_template({"name": "web-box", "spec": {"cpus": 4}})
        assert service.get_template("web-box")["spec"] == {"cpus": 4}


# -- changes ------------------------------------------------------------------------------------
def test_replace_and_patch_bump_the_revision_and_an_unchanged_write_does_not(service):
    service.create_template({"name": "small", "spec": SMALL, "description": "d"})
    replaced = service.change_template("small", {"spec": {"cpus": 2}}, replace=True)
    assert (replaced["revision"], replaced["spec"], replaced["description"]) == (2, {"cpus": 2}, "d")
    same = service.change_template("small", {"spec": {"cpus": 2}, "name": "small"}, replace=True)
    assert same["revision"] == 2
    patched = service.change_template("small", {"spec": {"memory": "1G"}, "description": "e"})
    assert (patched["revision"], patched["spec"]) == (3, {"cpus": 2, "memory": 1024})
    removed = service.change_template("small", {"spec": {"cpus": None}})  # null: the default's
    assert (removed["revision"], removed["spec"]) == (4, {"memory": 1024})
    with pytest.raises(PreconditionFailed):
        service.change_template("small", {"spec": {"cpus": 3}}, if_match=3)
    for body, field in (({"name": "other", "spec": {}}, "name"), ({"global": True}, "global"),
                        ({"spec": {"cpus": -1}}, "spec.cpus"), ({"spec": "x"}, "spec")):
        with pytest.raises(Invalid) as err:
            service.change_template("small", body)
        assert err.value.field == field
    assert service.get_template("small")["revision"] == 4
    with pytest.raises(Invalid):
        service.change_template("small", {"description": "x"}, replace=True)  # PUT needs a spec


# -- a VM made from a template ----------------------------------------------------------------------
def test_a_vm_records_its_template_and_keeps_its_spec_when_the_template_changes_or_goes(service):
    service.create_template({"name": "small", "spec": SMALL})
    vm, _ = service.create_vm({"name": "web1", "template": "small", "state": "stopped"})
    assert vm["template"] == {"name": "small", "revision": 1}
    spec = vm["spec"]
    assert (spec["cpus"], spec["memory"], spec["disks"]) == (1, 512, [{"name": "data",
                                                                        "size": 10240}])
    assert spec["image"] == DEFAULT_TEMPLATE["image"]  # what the template leaves out
    # the body's fields win over the template's
    other, _ = service.create_vm({"name": "web2", "template": "small", "cpus": 3,
                                  "state": "stopped"})
    assert (other["spec"]["cpus"], other["spec"]["memory"]) == (3, 512)

    service.change_template("small", {"spec": {"cpus": 4, "memory": "2G"}}, replace=True)
    assert service.get_vm("web1")["spec"] == spec
    assert service.get_vm("web1")["template"] == {"name": "small", "revision": 1}
    later, _ = service.create_vm({"name": "web3", "template": "small", "state": "stopped"})
    assert later["template"] == {"name": "small", "revision": 2} and later["spec"]["cpus"] == 4

    service.delete_template("small")  # allowed while VMs were made from it (Nova's flavors)
    assert service.get_vm("web1")["spec"] == spec
    assert service.status(service.vm_row("web1"))["template"] == {"name": "small", "revision": 1}
    with pytest.raises(NotFound) as err:
        service.create_vm({"name": "web4", "template": "small"})
    assert err.value.field == "template"


def test_a_create_naming_no_template_records_the_default(service):
    vm, _ = service.create_vm({"name": "web1", "state": "stopped"})
    assert vm["template"] == {"name": "default", "revision": 1}
    assert vm["spec"]["cpus"] == DEFAULT_TEMPLATE["cpus"]


def test_a_create_from_a_template_is_held_to_the_project_s_quota(teams):
    service = teams
    service.update_project("web", {"quota": {"cpus": 2}})
    with acting_as(person(Role.OPERATOR)):
        service.create_template({"name": "big", "spec": {"cpus": 4}})
        with pytest.raises(Conflict) as err:
            service.create_vm({"name": "web1", "template": "big", "state": "stopped"})
        assert err.value.field == "quota" and "vCPUs" in err.value.reason
        assert service.list_vms() == []


PATCHES = [{"op": "add", "xpath": "/domain/os", "xml": "<smbios mode='host'/>"}]


def test_only_an_admin_puts_xml_patches_in_a_template(teams):
    """Security: xml_patches are admins' only (root's power). A template that carries
    them would hand an operator's patches to the admin who creates a VM from it, so
    an operator may neither write them into a project template nor change them."""
    service = teams
    operator = person(Role.OPERATOR)
    with acting_as(operator):
        with pytest.raises(Forbidden) as refused:
            service.create_template({"name": "patched", "spec": {"xml_patches": PATCHES}})
        assert refused.value.field == "spec.xml_patches"
        service.create_template({"name": "plain", "spec": {"cpus": 1}})
        with pytest.raises(Forbidden):
            service.change_template("plain", {"spec": {"xml_patches": PATCHES}})
        with pytest.raises(Forbidden):
            service.change_template("plain", {"spec": {"xml_patches": PATCHES}}, replace=True)
        assert names(service) == ["default", "plain"]
        assert service.get_template("plain")["spec"] == {"cpus": 1}
    admin = Principal(user="admin", role=Role.ADMIN, projects=("web",), project="web")
    with acting_as(admin):  # an admin may, and the operator may then change other fields
        service.change_template("plain", {"spec": {"xml_patches": PATCHES}})
    with acting_as(operator):
        service.change_template("plain", {"spec": {"cpus": 2}})
        with pytest.raises(Forbidden):
            service.change_template("plain", {"spec": {"xml_patches": None}})
        assert service.get_template("plain")["spec"]["xml_patches"] == PATCHES

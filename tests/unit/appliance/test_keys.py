"""SSH keys (issue 15, Nova's keypairs; appliance/service/keys.py): each user's
own, a VM's cloud_init.keys copied from its creator's keys at create and change,
the copy kept when the key goes. The seed: controller/test_controller_keys.py;
REST: api/test_keys_api.py."""
from __future__ import annotations

import json

import pytest
from tests.unit.appliance.teams import add_user

from appliance.access.principal import Principal, Role, acting_as
from appliance.errors import Conflict, Invalid, NotFound
from appliance.service.keys import MAX_KEYS_PER_USER

ED = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIN0p71RU5w8rFUB514vcOWH7sWRRe+Lslf0KY8aTOaDN "
      "me@laptop")
ED2 = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBhL3M4NnK2xPZ5b1wZ6c8vUo1b7r1QwqzQmYl3n0Xyq desk"
ALICE = Principal(user="alice", role=Role.OPERATOR, projects=("default",), project="default")
BOB = Principal(user="bob", role=Role.OPERATOR, projects=("default",), project="default")


@pytest.fixture
def people(service):
    for who in ("alice", "bob"):
        add_user(service.store, who, "operator")
    return service


def test_a_user_adds_lists_and_removes_their_own_keys(people):
    with acting_as(ALICE):
        made = people.create_key({"name": "laptop", "public_key": ED + "\n"})
        assert made["fingerprint"] == "SHA256:wFesm9R2nJTYZBd/tdqGPqEk207v2y9sc5mKTb3n+V4"
        assert (made["user"], made["type"], made["bits"], made["public_key"]) == (
            "alice", "ssh-ed25519", 256, ED)
        with pytest.raises(Conflict):
            people.create_key({"name": "laptop", "public_key": ED2})
        assert [k["name"] for k in people.list_keys()] == ["laptop"]
    with acting_as(BOB):  # bob sees none of alice's, and may use the same name
        assert people.list_keys() == []
        with pytest.raises(NotFound):
            people.get_key("laptop")
        with pytest.raises(NotFound):
            people.list_keys("alice")
        people.create_key({"name": "laptop", "public_key": ED2})
    admin = Principal(user="root", role=Role.ADMIN, projects=("default",), project="default")
    with acting_as(admin):
        assert people.get_key("laptop", "alice")["public_key"] == ED
        assert [(k["user"], k["name"]) for k in people.list_keys("*")] == [
            ("alice", "laptop"), ("bob", "laptop")]
    with acting_as(ALICE):
        people.delete_key("laptop")
        assert people.list_keys() == []
    people.store.delete_user("bob")  # a later user of the same name gets none of them
    assert people.store.list_keys("bob") == []


@pytest.mark.parametrize("body, field", [
    ({"name": "Laptop", "public_key": ED}, "name"),
    ({"name": "laptop", "public_key": "ssh-dss AAAA"}, "public_key"),
    ({"name": "laptop"}, "public_key"),
    ({"name": "laptop", "public_key": ED, "user": "bob"}, "user"),
])
def test_bad_keys_are_refused_naming_the_field(people, body, field):
    with acting_as(ALICE), pytest.raises(Invalid) as err:
        people.create_key(body)
    assert err.value.field == field


def test_a_user_has_a_bounded_number_of_keys(people, monkeypatch):
    monkeypatch.setattr("appliance.service.keys.MAX_KEYS_PER_USER", 2)
    with acting_as(ALICE):
        people.create_key({"name": "a", "public_key": ED})
        people.create_key({"name": "b", "public_key": ED2})
        with pytest.raises(Conflict, match="at most 2 keys"):
            people.create_key({"name": "c", "public_key": ED})
    assert MAX_KEYS_PER_USER == 50


def test_a_vm_gets_copies_of_its_creator_s_keys(people):
    with acting_as(ALICE):
        people.create_key({"name": "laptop", "public_key": ED})
        with pytest.raises(Invalid) as err:
            people.create_vm({"name": "web1", "state": "stopped",
                              "cloud_init": {"keys": ["laptop", "desk"]}})
        assert err.value.field == "cloud_init.keys[1]" and "desk" in err.value.reason
        people.create_vm({"name": "web1", "state": "stopped", "cloud_init": {"keys": ["laptop"]}})
        row = people.store.get_vm("web1", "default")
        assert json.loads(row["public_keys"]) == {"laptop": ED}
        people.delete_key("laptop")  # the VM keeps its copy, as Nova's instances do
        assert json.loads(people.store.get_vm("web1", "default")["public_keys"]) == {"laptop": ED}
    with acting_as(BOB):  # another user's change that leaves the keys alone keeps them
        people.update_vm("web1", {"cpus": 2})
        assert json.loads(people.store.get_vm("web1", "default")["public_keys"]) == {"laptop": ED}
        people.create_key({"name": "desk", "public_key": ED2})
        people.update_vm("web1", {"cloud_init": {"keys": ["desk"]}})  # the changer's keys
        assert json.loads(people.store.get_vm("web1", "default")["public_keys"]) == {"desk": ED2}
        people.update_vm("web1", {"cloud_init": None})
        assert people.store.get_vm("web1", "default")["public_keys"] is None


def test_a_clone_keeps_its_source_s_copies_and_a_pool_takes_no_keys(people):
    with acting_as(ALICE):
        people.create_key({"name": "laptop", "public_key": ED})
        people.create_vm({"name": "web1", "state": "stopped", "cloud_init": {"keys": ["laptop"]}})
    with acting_as(BOB):  # bob has no key named laptop: the clone gets web1's copy
        clone, _op = people.clone_vm("web1", {"name": "web2"})
        assert json.loads(people.store.get_vm_by_id(clone["id"])["public_keys"]) == {"laptop": ED}
        with pytest.raises(Invalid) as err:
            people.create_pool({"name": "p", "replicas": 0,
                                "template": {"cloud_init": {"keys": ["laptop"]}}})
        assert err.value.field == "template.cloud_init.keys"

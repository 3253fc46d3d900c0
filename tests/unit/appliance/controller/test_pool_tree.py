"""The mount's pools/ as the tree serves it (fs/tree.py, fs/pool_tree.py): mkdir makes
a pool of 0 replicas, its files read and write the pool (the same table as REST),
rmdir deletes it with its members. tests/integration/test_pools.py does it through
a real mount."""
from __future__ import annotations

import json
import time

import pytest

from appliance import errors
from fs.tree import Tree
from tests.unit.appliance.controller.controller_harness import settle


@pytest.fixture
def tree(service, controller):
    return Tree(service, time.time, started=time.time())


def listed(tree, *path: str) -> list[str]:
    return [name for name, _node in tree.entries(path)]


def test_mkdir_makes_a_pool_and_its_files_change_it(tree, service, controller, clock):
    assert "pools" in listed(tree) and tree.is_dir(("pools",))
    tree.create_pool(("pools", "web"))
    assert listed(tree, "pools") == ["web"]
    assert listed(tree, "pools", "web") == ["template.json", "replicas", "paused", "status.json"]
    assert tree.content(("pools", "web", "replicas")) == b"0\n"
    assert tree.stat(("pools", "web", "replicas")).writable
    assert not tree.stat(("pools", "web", "status.json")).writable
    template = json.loads(tree.content(("pools", "web", "template.json")))
    assert template["image"] == "demo" and "name" not in template
    tree.write(("pools", "web", "template.json"),
               json.dumps({**template, "run_strategy": "Halted"}))
    tree.write(("pools", "web", "replicas"), "2\n")
    settle(controller, clock, passes=2)
    status = json.loads(tree.content(("pools", "web", "status.json")))
    assert [m["name"] for m in status["members"]] == ["web-0", "web-1"]
    assert status["revision"] == 2 and status["updated_replicas"] == 2
    tree.write(("pools", "web", "paused"), "true\n")
    assert tree.content(("pools", "web", "paused")) == b"true\n"
    with pytest.raises(errors.Invalid):
        tree.write(("pools", "web", "replicas"), "many\n")
    with pytest.raises(errors.Forbidden):
        tree.write(("pools", "web", "status.json"), "{}")
    waited = []  # rmdir waits for the members' deletions: here, the loop passes they take
    tree.pools.delete(("pools", "web"), lambda ops: waited.extend(ops) or settle(controller, clock))
    assert sorted(op["vm_name"] for op in waited) == ["web-0", "web-1"]
    assert not [v for v in service.list_vms() if v["name"].startswith("web-")]
    assert listed(tree, "pools") == []
    with pytest.raises(errors.NotFound):
        tree.stat(("pools", "web"))

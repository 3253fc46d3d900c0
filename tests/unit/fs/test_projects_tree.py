"""The mount's projects/ as the tree serves it (fs/tree.py, fs/projects.py):
projects/P/vms/ is vms/ acting in P, for the projects the caller may see;
projects/P/quota is service.get_project's quota and usage. tests/fs/test_fs_projects.py does it through a real mount."""
from __future__ import annotations

import time

import pytest

from appliance import errors
from appliance.access import SYSTEM, Principal, Role, acting_as
from fs.tree import Tree

ALICE = Principal(user="alice", role=Role.OPERATOR, projects=("web",), project="web")


@pytest.fixture
def tree(service, controller):
    for project in ("web", "dev"):
        service.store.insert_project({"name": project, "description": "", "quota": {},
                                      "created": 0.0})
    for project in ("default", "dev"):
        with acting_as(SYSTEM.in_project(project)):
            service.finish(service.create_vm({"name": "web1", "state": "stopped"})[1])
    return Tree(service, time.time, started=time.time())


def listed(tree, *path: str) -> list[str]:
    return [name for name, _node in tree.entries(path)]


def test_an_admin_sees_every_project_and_acts_in_it(tree, service):
    assert "projects" in listed(tree)
    assert listed(tree, "projects") == ["default", "dev", "web"]
    assert tree.stat(("projects", "dev")).is_dir and tree.is_dir(("projects", "dev", "vms", "web1"))
    assert listed(tree, "projects", "dev", "vms") == ["web1"]
    assert listed(tree, "projects", "web", "vms") == []
    assert listed(tree, "projects", "dev", "vms", "web1") == listed(tree, "vms", "web1")
    dev_id = tree.content(("projects", "dev", "vms", "web1", "status.json"))
    assert dev_id != tree.content(("vms", "web1", "status.json"))

    tree.write(("projects", "dev", "vms", "web1", "cpus"), "2\n")
    assert tree.content(("projects", "dev", "vms", "web1", "cpus")) == b"2\n"
    assert tree.content(("vms", "web1", "cpus")) == b"1\n"
    with acting_as(SYSTEM.in_project("dev")):
        assert service.get_vm("web1")["spec"]["cpus"] == 2

    tree.create_vm(("projects", "dev", "vms", "db1"))
    tree.rename_vm(("projects", "dev", "vms", "db1"), "db2")
    assert listed(tree, "projects", "dev", "vms") == ["db2", "web1"]
    assert listed(tree, "vms") == ["web1"]
    tree.delete_vm(("projects", "dev", "vms", "db2"))
    assert listed(tree, "projects", "dev", "vms") == ["web1"]
    with pytest.raises(errors.NotFound):
        tree.stat(("projects", "nosuch"))
    with pytest.raises(errors.NotFound):
        tree.stat(("projects", "nosuch", "vms"))


def test_a_member_sees_only_their_projects(tree, service):
    with acting_as(ALICE):
        assert listed(tree, "projects") == ["web"]
        assert listed(tree, "vms") == []
        tree.create_vm(("projects", "web", "vms", "mine"))
        assert listed(tree, "vms") == ["mine"]
        for path in (("projects", "dev"), ("projects", "dev", "vms"),
                     ("projects", "dev", "vms", "web1"), ("projects", "dev", "vms", "web1", "state"),
                     ("projects", "default", "vms", "web1"), ("vms", "web1")):
            with pytest.raises(errors.NotFound):
                tree.stat(path)
        with pytest.raises(errors.NotFound):
            tree.write(("projects", "dev", "vms", "web1", "state"), "running\n")
        with pytest.raises(errors.NotFound):
            tree.delete_vm(("projects", "dev", "vms", "web1"))
    with acting_as(SYSTEM.in_project("dev")):
        assert service.get_vm("web1")["desired_state"] == "stopped"


def test_the_quota_file_reads_the_projects_quota_and_usage(tree, service):
    service.store.update_project("web", quota={"vms": 5, "memory_mib": 4096})
    with acting_as(ALICE):
        tree.create_vm(("projects", "web", "vms", "mine"))
    assert listed(tree, "projects", "web") == ["vms", "quota"]
    vm = service.store.get_vm("mine", "web")
    disk = service.get_project("web")["usage"]["disk_gib"]
    text = tree.content(("projects", "web", "quota")).decode()
    assert text == (f"vms 1/5\ncpus {vm['spec']['cpus']}/unlimited\n"
                    f"memory_mib {vm['spec']['memory']}/4096\ndisk_gib {disk}/unlimited\n")
    node = tree.stat(("projects", "web", "quota"))
    assert not node.is_dir and not node.writable and node.size == len(text)
    with acting_as(ALICE):
        assert tree.content(("projects", "web", "quota")).decode() == text
        with pytest.raises(errors.NotFound):
            tree.content(("projects", "dev", "quota"))
    assert tree.content(("projects", "dev", "quota")).decode().startswith("vms 1/unlimited\n")


def test_quota_lines_say_unlimited_for_a_null_limit():
    from fs.projects import quota_text

    view = {"quota": {"vms": 5, "cpus": None, "memory_mib": 4096, "disk_gib": None},
            "usage": {"vms": 3, "cpus": 6, "memory_mib": 1536, "disk_gib": 12}}
    assert quota_text(view) == "vms 3/5\ncpus 6/unlimited\nmemory_mib 1536/4096\ndisk_gib 12/unlimited\n"

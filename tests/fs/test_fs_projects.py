"""projects/P/vms/ through a real mount, by shell commands: the same VM files as
vms/, acting in project P. The mount's caller is its owner, an admin, who sees
every project (fs/projects.py); vms/ stays the default project's."""
from __future__ import annotations

import errno
import os

import pytest

from appliance.access import SYSTEM, acting_as

ENOENT = os.strerror(errno.ENOENT)
EACCES = os.strerror(errno.EACCES)


@pytest.fixture
def dev(mount):
    """Project dev, with a web1 of its own; the default project has a web1 too."""
    mount.service.store.insert_project({"name": "dev", "description": "", "quota": {},
                                        "created": 0.0})
    mount.mkvm("web1")
    with acting_as(SYSTEM.in_project("dev")):
        mount.service.finish(mount.service.create_vm({"name": "web1", "state": "stopped"})[1])
    return mount


def in_dev(mount, name: str) -> dict:
    with acting_as(SYSTEM.in_project("dev")):
        return mount.service.get_vm(name)


def test_projects_lists_every_project_with_its_vms(dev):
    assert sorted(os.listdir(dev.mnt / "projects")) == ["default", "dev"]
    assert "vms" in os.listdir(dev.mnt / "projects" / "dev")
    assert os.listdir(dev.mnt / "projects" / "dev" / "vms") == ["web1"]
    assert os.listdir(dev.mnt / "vms") == ["web1"]
    ours = dev.mnt / "projects" / "dev" / "vms" / "web1"
    assert os.listdir(ours) == os.listdir(dev.vm("web1"))
    assert (ours / "state").read_text() == "stopped\n"
    assert (dev.mnt / "projects" / "default" / "vms" / "web1" / "spec.json").read_text() == \
        (dev.vm("web1") / "spec.json").read_text()


def test_writes_under_projects_act_in_that_project(dev):
    result = dev.sh("echo running > projects/dev/vms/web1/state")
    assert result.returncode == 0, result.stderr
    assert in_dev(dev, "web1")["state"] == "running"
    assert (dev.vm("web1") / "state").read_text() == "stopped\n"
    assert dev.sh("cat projects/dev/vms/web1/state").stdout == "running\n"

    result = dev.sh("mkdir projects/dev/vms/db1 && mv projects/dev/vms/db1 projects/dev/vms/db2")
    assert result.returncode == 0, result.stderr
    assert in_dev(dev, "db2")["project"] == "dev"
    assert not dev.service.store.vm_exists("db2")  # not in the default project
    result = dev.sh("rmdir projects/dev/vms/db2")
    assert result.returncode == 0, result.stderr
    assert os.listdir(dev.mnt / "projects" / "dev" / "vms") == ["web1"]


def test_what_is_not_there_is_enoent_and_a_vm_does_not_change_project(dev):
    result = dev.sh("ls projects/nosuch")
    assert result.returncode != 0 and ENOENT in result.stderr
    result = dev.sh("cat projects/dev/vms/nosuch/state")
    assert result.returncode != 0 and ENOENT in result.stderr
    result = dev.sh("mv projects/dev/vms/web1 vms/web2")
    assert result.returncode != 0
    assert in_dev(dev, "web1")["name"] == "web1" and not dev.service.store.vm_exists("web2")
    result = dev.sh("echo x > projects/dev/nothing")
    assert result.returncode != 0 and EACCES in result.stderr

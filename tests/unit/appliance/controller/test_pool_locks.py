"""Security review of issue 14: the pool controller acts as the appliance (SYSTEM,
an admin), so a member someone locked (Nova's lock) would be deleted by another
operator's scale-down, or stopped and changed by a roll-out, through it."""
from __future__ import annotations

from appliance.access.principal import Principal, Role, acting_as
from tests.unit.appliance.controller.controller_harness import settle

STOPPED = {"image": "demo", "run_strategy": "Halted"}
ALICE = Principal(user="alice", role=Role.OPERATOR, projects=("default",), project="default")
BOB = Principal(user="bob", role=Role.OPERATOR, projects=("default",), project="default")


def members(service, pool="web"):
    return {m["name"]: m for m in service.store.pool_members(service.pool_row(pool)["id"])}


def test_a_locked_member_is_neither_removed_nor_rolled(service, controller, clock):
    """Finding: the controller deleted a member alice locked when bob scaled the pool
    down, and stopped and re-specced it in a roll-out, as bob could not have
    himself (409 locked). A locked member now stays as it is, and the pool's
    status says why; unlocked, it converges."""
    with acting_as(BOB):
        service.create_pool({"name": "web", "template": STOPPED, "replicas": 2})
    settle(controller, clock, passes=2)
    with acting_as(ALICE):
        service.set_lock("web-1", "keep: debugging")
        service.set_lock("web-0", "keep: debugging")
    with acting_as(BOB):
        service.update_pool("web", {"replicas": 1, "template": {**STOPPED, "cpus": 2}})
    settle(controller, clock, passes=4)
    found = members(service)
    assert found["web-1"]["desired_state"] != "deleted"
    assert found["web-0"]["spec"]["cpus"] == 1 and found["web-0"]["pool_revision"] == 1
    assert "locked" in service.get_pool("web")["status"]["message"]
    with acting_as(ALICE):
        service.set_lock("web-1", "")
        service.set_lock("web-0", "")
    settle(controller, clock, passes=6)
    found = members(service)
    assert sorted(n for n, m in found.items() if m["desired_state"] != "deleted") == ["web-0"]
    assert found["web-0"]["spec"]["cpus"] == 2

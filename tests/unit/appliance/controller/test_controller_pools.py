"""Replica pools on the fake driver: scale-up and scale-down order, heal, names
taken by strangers, the roll-out of a template change one member at a time
(with readiness, pause and resume), and a controller restarted in the middle
of a roll-out carrying on without ever having two members down."""
from __future__ import annotations

import pytest

from appliance.controller.pools import PoolController
from appliance.errors import Conflict, Invalid
from tests.unit.appliance.controller.controller_harness import Inline, settle

STOPPED = {"image": "demo", "run_strategy": "Halted"}
RUNNING = {"image": "demo", "run_strategy": "Always"}


def members(service, pool="web"):
    return {m["name"]: m for m in service.store.pool_members(service.pool_row(pool)["id"])}


def names(service, pool="web"):
    return sorted(members(service, pool))


def test_scale_up_makes_name_0_to_n_through_the_create_path(service, controller, clock):
    service.create_pool({"name": "web", "template": STOPPED, "replicas": 3})
    settle(controller, clock, passes=2)
    found = members(service)
    assert sorted(found) == ["web-0", "web-1", "web-2"]
    for name, row in found.items():
        assert row["pool_ordinal"] == int(name[-1]) and row["pool_revision"] == 1
        assert row["observed_state"] == "stopped" and row["host"]  # created and placed
        kinds = [e["kind"] for e in service.list_events(vm=name)]
        assert "created" in kinds and "scheduled" in kinds
    status = service.get_pool("web")["status"]
    assert (status["replicas"], status["current_replicas"], status["updated_replicas"]) == (3, 3, 3)


def test_scale_down_removes_the_highest_ordinals_first_with_force(service, controller, clock):
    service.create_pool({"name": "web", "template": RUNNING, "replicas": 4})
    settle(controller, clock, passes=3)
    assert all(m["observed_state"] == "running" for m in members(service).values())
    service.update_pool("web", {"replicas": 1})
    controller.pools.tick()
    ops = [o for o in service.list_operations() if o["kind"] == "delete"]
    assert sorted(o["vm_name"] for o in ops) == ["web-1", "web-2", "web-3"]
    assert all(o["params"].get("force") for o in ops)  # running members: stopped first
    removed = [e["vm_name"] for e in service.list_events() if e["kind"] == "pool-scaled-down"]
    assert removed == ["web-3", "web-2", "web-1"]  # the highest first
    settle(controller, clock, passes=2)
    assert names(service) == ["web-0"]


def test_a_deleted_member_is_made_again(service, controller, clock):
    service.create_pool({"name": "web", "template": STOPPED, "replicas": 3})
    settle(controller, clock, passes=2)
    old_id = members(service)["web-1"]["id"]
    service.delete_vm("web-1")
    settle(controller, clock, passes=3)
    healed = members(service)
    assert sorted(healed) == ["web-0", "web-1", "web-2"]
    assert healed["web-1"]["id"] != old_id and healed["web-1"]["pool_ordinal"] == 1


def test_a_name_held_by_a_stranger_is_skipped_and_reported(service, controller, clock):
    service.create_vm({"name": "web-1", "image": "demo", "state": "stopped"})
    service.create_pool({"name": "web", "template": STOPPED, "replicas": 3})
    settle(controller, clock, passes=2)
    assert names(service) == ["web-0", "web-2", "web-3"]
    assert service.vm_row("web-1")["pool"] is None  # never taken over
    assert service.get_pool("web")["status"]["skipped"] == ["web-1"]


def test_a_member_keeps_its_name(service, controller, clock):
    service.create_pool({"name": "web", "template": STOPPED, "replicas": 1})
    settle(controller, clock, passes=2)
    with pytest.raises(Conflict):
        service.rename_vm("web-0", "other")


def test_scale_up_beyond_the_quota_is_refused_whole(service, controller, clock):
    service.update_project("default", {"quota": {"vms": 2}})
    with pytest.raises(Conflict) as refused:
        service.create_pool({"name": "web", "template": STOPPED, "replicas": 3})
    assert refused.value.field == "quota"
    service.create_pool({"name": "web", "template": STOPPED, "replicas": 2})
    with pytest.raises(Conflict):
        service.update_pool("web", {"replicas": 3})
    assert service.pool_row("web")["replicas"] == 2


def test_a_template_may_not_change_the_image(service, controller, clock, tmp_path):
    service.create_pool({"name": "web", "template": STOPPED, "replicas": 0})
    with pytest.raises(Invalid) as refused:
        service.update_pool("web", {"template": {**STOPPED, "image": "other"}})
    assert refused.value.field == "template.image"
    with pytest.raises(Invalid) as refused:
        service.create_pool({"name": "api", "template": {**STOPPED, "name": "x"}})
    assert refused.value.field == "template.name"
    with pytest.raises(Invalid) as refused:
        service.create_pool({"name": "api", "template": {**STOPPED, "cpus": 10**6}})
    assert refused.value.field == "template.cpus"


def test_deleting_a_pool_deletes_its_members(service, controller, clock):
    service.create_pool({"name": "web", "template": RUNNING, "replicas": 2})
    settle(controller, clock, passes=3)
    ops = service.delete_pool("web")
    assert len(ops) == 2 and all(o["params"]["force"] for o in ops)
    settle(controller, clock, passes=2)
    assert not any(v["name"].startswith("web-") for v in service.list_vms())
    assert service.list_pools() == []


# -- roll-out ----------------------------------------------------------------------------------
def ready_probe(contains="pool-ready"):
    return {"console": {"contains": contains}, "initial_delay_seconds": 0, "period_seconds": 1}


def make_ready(service, config, name):
    """What the member's readiness probe looks for, on its console since this boot."""
    with open(config.vm_dir(service.vm_row(name)["id"]) / "console.log", "a") as log:
        log.write("boot\npool-ready\n")


def watch_rollout(service, controller, clock, config, passes=60, ready=True, pause_after=None):
    """Tick the controller; after each pass, check that at most one member is away
    from its running, ready, current self; return the order members were updated in."""
    order: list[str] = []
    for _ in range(passes):
        clock.advance(1.0)
        controller.tick()
        rows = members(service)
        down = [n for n, m in rows.items()
                if m["observed_state"] != "running" or m["desired_state"] != "running"]
        assert len(down) <= 1, down
        for name, row in rows.items():
            if ready and row["observed_state"] == "running" and not row.get("ready"):
                make_ready(service, config, name)
            if row["pool_revision"] == 2 and name not in order:
                order.append(name)
        if pause_after is not None and len(order) == pause_after:
            service.update_pool("web", {"paused": True})
            pause_after = None
    return order


@pytest.fixture
def probes_inline(controller):
    controller.prober.pool = Inline()


def test_a_template_change_rolls_through_one_member_at_a_time(service, controller, clock, config,
                                                                 probes_inline):
    template = {**RUNNING, "readiness_probe": ready_probe()}
    service.create_pool({"name": "web", "template": template, "replicas": 3})
    watch_rollout(service, controller, clock, config, passes=10)
    assert all(m["ready"] for m in members(service).values())
    service.update_pool("web", {"template": {**template, "cpus": 2}})
    order = watch_rollout(service, controller, clock, config)
    assert order == ["web-0", "web-1", "web-2"]
    final = members(service)
    assert all(m["spec"]["cpus"] == 2 and m["observed_state"] == "running" and m["ready"]
               for m in final.values())
    status = service.get_pool("web")["status"]
    assert status["updated_replicas"] == status["ready_replicas"] == 3 and status["rollout"] is None
    kinds = [o["kind"] for o in service.list_operations(vm="web-1")][::-1]  # oldest first
    assert kinds == ["create", "stop", "update", "start"]


def test_the_next_member_waits_for_readiness(service, controller, clock, config, probes_inline):
    template = {**RUNNING, "readiness_probe": ready_probe()}
    service.create_pool({"name": "web", "template": template, "replicas": 2})
    watch_rollout(service, controller, clock, config, passes=10)
    service.update_pool("web", {"template": {**template, "memory": 256}})
    for _ in range(30):  # nobody makes web-0 ready again
        clock.advance(1.0)
        controller.tick()
    rows = members(service)
    assert rows["web-0"]["pool_revision"] == 2 and rows["web-0"]["observed_state"] == "running"
    assert not rows["web-0"]["ready"]
    assert rows["web-1"]["pool_revision"] == 1 and rows["web-1"]["observed_state"] == "running"
    assert service.get_pool("web")["status"]["rollout"] == {"member": "web-0", "phase": "start"}


def test_pause_stops_the_roll_out_after_the_member_under_way(service, controller, clock, config,
                                                              probes_inline):
    service.create_pool({"name": "web", "template": RUNNING, "replicas": 3})
    settle(controller, clock, passes=3)
    service.update_pool("web", {"template": {**RUNNING, "cpus": 2}})
    order = watch_rollout(service, controller, clock, config, passes=40, ready=False,
                          pause_after=1)
    assert order == ["web-0"]
    assert all(m["observed_state"] == "running" for m in members(service).values())
    service.update_pool("web", {"paused": False})
    order = watch_rollout(service, controller, clock, config, passes=60, ready=False)
    assert order == ["web-0", "web-1", "web-2"]


def test_a_restarted_controller_carries_on_the_roll_out(service, controller, clock, config,
                                                       probes_inline):
    """The roll-out's phase is in the store before each action: a controller that
    died after recording it (here: its set_state raised) and a new one (no memory)
    finish the same member, then the next, never two down at once."""
    service.create_pool({"name": "web", "template": RUNNING, "replicas": 2})
    settle(controller, clock, passes=3)
    service.update_pool("web", {"template": {**RUNNING, "cpus": 2}})
    crashing = controller.pools.service

    def crash(*args, **kwargs):
        raise RuntimeError("the controller died here")

    crashing.set_state = crash
    controller.pools.tick()
    assert service.pool_row("web")["rollout"]["phase"] == "stop"  # recorded, not acted on
    assert members(service)["web-0"]["desired_state"] == "running"
    controller.pools = PoolController(controller.ctx)  # a new process: nothing in memory
    order = watch_rollout(service, controller, clock, config, passes=60, ready=False)
    assert order == ["web-0", "web-1"]
    assert all(m["spec"]["cpus"] == 2 for m in members(service).values())


def test_stopped_members_are_updated_and_stay_stopped(service, controller, clock):
    service.create_pool({"name": "web", "template": STOPPED, "replicas": 2})
    settle(controller, clock, passes=2)
    service.update_pool("web", {"template": {**STOPPED, "memory": 256}})
    settle(controller, clock, passes=8)
    rows = members(service)
    assert all(m["spec"]["memory"] == 256 and m["pool_revision"] == 2
               and m["observed_state"] == "stopped" for m in rows.values())

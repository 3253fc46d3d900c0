"""The stateful API fuzzing's check (tests/soak/fuzz_api.py) cannot take the controller's
own writes for a call's: with the Gate closed, a pool's controller (the likely author of
the 4 unexplained 'changed on a 4xx' of the first run) adds no member however long the
call takes, and the change it makes once open is reported by table, row and column."""
from __future__ import annotations

import time

from tests.bench.bench_scale import World
from tests.soak.fuzz_api import Gate
from tests.soak.store_changes import StoreChanges


def members(world) -> list[str]:
    return sorted(vm["name"] for vm in world.store.list_vms() if vm.get("pool"))


def wait_for(what, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, "not within the time"
        time.sleep(0.05)


def test_the_gate_holds_the_pool_controller_and_changes_name_the_rows(tmp_path):
    world = World(tmp_path, hosts=1, mount=False)
    try:
        passes = []  # the loop's passes, counted whether or not their work is held
        real_tick = world.controller.tick
        world.controller.tick = lambda: (passes.append(1), real_tick())[1]
        gate = Gate(world.controller)
        store_changes = StoreChanges(world.config.db_path)
        with gate.closed():
            before = store_changes.mark()
            world.service.create_pool({"name": "web", "replicas": 2,
                                       "template": {"run_strategy": "Halted"}})
            seen = len(passes)
            world.controller._nudge()
            wait_for(lambda: len(passes) >= seen + 3)  # three passes, each its pool work held
            assert members(world) == []
            assert gate.skipped >= 3
            during = store_changes.since(before)
            assert during == ["pools +row 1 (name web)"]  # the call's own, alone
        wait_for(lambda: len(members(world)) == 2)  # open: the pool scales
        after = store_changes.since(before)
        assert {c.split(" (")[0] for c in after} >= {"vms +row 1", "vms +row 2"}, after
        assert any(c.startswith("vms +row") and "(name web-" in c for c in after), after
        store_changes.close()
    finally:
        world.close()

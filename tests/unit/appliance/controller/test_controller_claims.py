"""The per-host claim totals (store/claims.py) through the real service and
controller (issue 17): after a random sequence of creates, starts, stops, resizes,
suspends, shelves, migrations, drains and deletes, at every step, with their
operations still open and after the controller ran them, the totals equal a full
sum; the controller checks them at its start and hourly and repairs a drift."""
from __future__ import annotations

import logging
import random

import pytest
from tests.unit.appliance.controller.controller_harness import settle

from appliance.controller import loop
from appliance.errors import ApplianceError

VERBS = ["running", "stopped", "force-stop", "suspended", "shelved", "paused"]


def one_step(service, rng: random.Random, names: list[str]) -> str:
    kind = rng.choice(["create", "state", "state", "resize", "migrate", "drain", "delete"])
    if kind == "create" or not names:
        name = f"c{len(names) + rng.randint(0, 10**6)}"
        spec = {"name": name, "cpus": rng.randint(1, 2), "memory": rng.choice([128, 256]),
                "state": rng.choice(["running", "stopped"])}
        if rng.random() < 0.3:
            spec["reserve_when_stopped"] = True
        if rng.random() < 0.5:
            spec["disks"] = [{"name": "data", "size": rng.randint(1, 8)}]
        service.create_vm(spec)
        names.append(name)
        return "create"
    name = rng.choice(names)
    if kind == "state":
        service.set_state(name, rng.choice(VERBS))
    elif kind == "resize":
        service.update_vm(name, {"cpus": rng.randint(1, 3), "memory": rng.choice([128, 192, 256])})
    elif kind == "migrate":
        host = service.store.get_vm(name)["host"]
        service.migrate_vm(name, "b" if host == "local" else "local")
    elif kind == "drain":
        host = rng.choice(["local", "b"])
        service.set_host_state(host, "maintenance")
        service.set_host_state(host, "enabled")
    elif kind == "delete":
        service.delete_vm(name, force=True)
        names.remove(name)
    return kind


@pytest.mark.parametrize("seed", [11, 12])
def test_service_and_controller_keep_the_totals_right(service, controller, clock, seed):
    rng, names, done = random.Random(seed), [], []
    for _ in range(60):
        try:
            done.append(one_step(service, rng, names))
        except ApplianceError:  # refused (a VM busy, a state it cannot take): nothing changed
            done.append("refused")
        assert service.store.claims_drift() == {}  # its operations open
        settle(controller, clock, passes=rng.randint(0, 2))
        assert service.store.claims_drift() == {}
        names[:] = [n for n in names if service.store.vm_exists(n)]
    assert {"create", "state", "resize", "migrate", "drain", "delete"} <= set(done)
    assert any(claim[0] for claim in service.store.host_claims().values())


def test_the_controller_repairs_a_drift_at_its_start_and_hourly(service, controller, config, cloud, clock,
                                                                caplog):
    service.create_vm({"name": "web1"})
    settle(controller, clock)
    right = service.store.host_claims()
    store = service.store
    store.db.execute("UPDATE host_claims SET memory = memory + 512")
    assert store.claims_drift()
    clock.advance(loop.CLAIMS_CHECK_SECONDS / 2)
    controller.tick()
    assert store.claims_drift()  # not yet: hourly
    with caplog.at_level(logging.ERROR, logger="appliance.controller"):
        clock.advance(loop.CLAIMS_CHECK_SECONDS / 2)
        controller.tick()
    assert store.host_claims() == right
    assert "a full sum says" in caplog.text
    # a controller starting over a store whose trigger is gone puts it back at its first pass
    store.db.execute("DROP TRIGGER claims_vm_update")
    fresh = loop.Controller(store, config, "unit-instance", "qemu", drivers=cloud.drivers(), clock=clock,
                            pool=controller.pool, connector=controller._connector, monotonic=clock,
                            sleep=clock.sleep)
    try:
        fresh.tick()
        assert store.db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'claims_vm_update'").fetchone()[0]
        assert fresh.check_claims() is True
    finally:
        fresh.stop()

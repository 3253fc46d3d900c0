"""The per-host claim totals that SQLite's triggers keep (store/claims.py, issue 17):
after any sequence of writes, through the store's functions or raw SQL, committed or
rolled back, they equal a full sum over every VM (the GROUP BY of before) and a sum
made here in Python with placement's rule for one VM; a drift or a missing trigger
is found and repaired."""
from __future__ import annotations

import ctypes
import ctypes.util
import itertools
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from appliance import placement
from appliance.model import OPEN_OP_STATES, DesiredState, OpKind, OpStatus, VMState
from appliance.model.states import MOVING_OP_KINDS, SAVED_OBSERVED_STATES
from appliance.store import Store
from appliance.store.claims import VIEW, trigger_sql, view_sql

HOSTS = ["h1", "h2", "h3", "h4"]
IMAGES = {"img": 1 << 30, "big": 5 << 30}
MIB = 1 << 20


@pytest.fixture
def db(tmp_path) -> Store:
    clock = itertools.count(1)
    store = Store(tmp_path / "a.db", clock=lambda: float(next(clock)))
    for name, size in IMAGES.items():
        store.insert_image({"name": name, "path": f"/x/{name}", "format": "qcow2", "virtual_size": size,
                            "actual_size": 1, "created": 0.0, "source": "test"})
    return store


def python_sum(store: Store) -> dict[str, list[float]]:
    """host -> [vCPUs, MiB, disk, dedicated, hugepages], from the rows, with placement's
    rule for one VM (claims_cpu_ram), not with SQL."""
    vms = {r["id"]: r for r in store.list_vms(with_xml=False)}
    images = {i["name"]: i["virtual_size"] or 0 for i in store.list_images()}
    out: dict[str, list[float]] = {}

    def add(host: str, vm: dict, placed: bool) -> None:
        spec = vm["spec"]
        active = (vm["desired_state"] in placement.CLAIMING_DESIRED_STATES
                  or vm["observed_state"] in placement.CLAIMING_OBSERVED_STATES
                  or bool(spec.get("reserve_when_stopped")))
        if placed:
            assert active == placement.claims_cpu_ram(vm)
        cpus, memory = (spec["cpus"], spec["memory"]) if active else (0, 0)
        disk = images.get(spec["image"], 0) + MIB * sum(d["size"] for d in spec["disks"])
        disk += MIB * spec["memory"] if vm["observed_state"] in SAVED_OBSERVED_STATES else 0
        dedicated = cpus if (spec.get("cpu") or {}).get("dedicated") else 0
        hugepages = memory if spec.get("hugepages") else 0
        slot = out.setdefault(host, [0, 0, 0, 0, 0])
        for n, value in enumerate((cpus, memory, disk, dedicated, hugepages)):
            slot[n] += value

    for vm in vms.values():
        if vm["host"] is not None and vm["observed_state"] not in placement.UNPLACED_OBSERVED_STATES:
            add(vm["host"], vm, placed=True)
    for op in store.list_operations(limit=100000):
        if op["kind"] in MOVING_OP_KINDS and op["status"] in OPEN_OP_STATES and op["vm_id"] in vms:
            target = (op.get("params") or {}).get("target")
            if target:
                add(target, vms[op["vm_id"]], placed=False)
    return out


def assert_right(store: Store) -> None:
    assert store.claims_drift() == {}
    kept = store.host_claims()
    assert kept == python_sum(store)
    assert placement.allocations(store) == {h: c[:3] for h, c in kept.items()}
    assert placement.pinning_allocations(store) == {h: c[3:] for h, c in kept.items()}


def random_spec(rng: random.Random, name: str) -> dict:
    spec = {"name": name, "image": rng.choice([*IMAGES, "missing"]), "cpus": rng.randint(1, 8),
            "memory": rng.choice([128, 256, 1024]), "disks": [{"size": rng.randint(1, 50)}
                                                              for _ in range(rng.randint(0, 2))]}
    if rng.random() < 0.3:
        spec["reserve_when_stopped"] = True
    if rng.random() < 0.2:
        spec["cpu"] = {"dedicated": True}
    if rng.random() < 0.2:
        spec["hugepages"] = True
    return spec


STATES = [str(s) for s in VMState]
DESIRED = [str(s) for s in DesiredState]


def step(store: Store, rng: random.Random, serial: itertools.count) -> str:
    vms = store.list_vms(with_xml=False)
    ops = store.list_operations(limit=100000)
    kind = rng.choice(["create", "create", "state", "resize", "host", "delete", "op", "op_status",
                       "op_target", "op_delete", "image", "raw", "rollback"])
    if kind == "create" or not vms:
        n = next(serial)
        store.insert_vm({"id": f"id{n}", "name": f"vm{n}", "spec": random_spec(rng, f"vm{n}"),
                         "desired_state": rng.choice(DESIRED), "observed_state": rng.choice(STATES),
                         "host": rng.choice([*HOSTS, None]), "generation": 1, "created": 0.0,
                         "updated": 0.0, "mac": f"52:54:00:00:{n >> 8 & 255:02x}:{n & 255:02x}"})
        return "create"
    vm = rng.choice(vms)
    if kind == "state":
        store.update_vm(vm["id"], bump=False, observed_state=rng.choice(STATES),
                        **({"desired_state": rng.choice(DESIRED)} if rng.random() < 0.5 else {}))
    elif kind == "resize":
        store.update_vm(vm["id"], spec=random_spec(rng, vm["name"]))
    elif kind == "host":
        store.update_vm(vm["id"], host=rng.choice([*HOSTS, None]))
    elif kind == "delete":
        store.delete_vm(vm["id"])
    elif kind == "op":
        op_kind = rng.choice([*MOVING_OP_KINDS, OpKind.START, OpKind.STOP])
        store.add_operation(f"op{next(serial)}", vm, op_kind,
                            {"target": rng.choice(HOSTS)} if rng.random() < 0.9 else {})
    elif kind == "op_status" and ops:
        store.update_operation(rng.choice(ops)["id"], status=rng.choice([str(s) for s in OpStatus]))
    elif kind == "op_target" and ops:
        store.update_operation(rng.choice(ops)["id"], params={"target": rng.choice(HOSTS), "bandwidth": 1})
    elif kind == "op_delete" and ops:
        store.db.execute("DELETE FROM operations WHERE id = ?", [rng.choice(ops)["id"]])
    elif kind == "image":
        name = rng.choice([*IMAGES, "missing"])
        if store.image_exists(name) and rng.random() < 0.5:
            store.db.execute("UPDATE images SET virtual_size = ? WHERE name = ?", [rng.randint(1, 9) << 30, name])
        elif store.image_exists(name):
            store.delete_image(name)
        else:
            store.insert_image({"name": name, "path": f"/x/{name}", "format": "qcow2",
                                "virtual_size": rng.randint(1, 9) << 30, "actual_size": 1, "created": 0.0,
                                "source": "test"})
    elif kind == "raw":  # many rows at once, as a writer without the store's functions would
        store.db.execute("UPDATE vms SET observed_state = ?, host = ? WHERE host = ?",
                         [rng.choice(STATES), rng.choice(HOSTS), rng.choice(HOSTS)])
    elif kind == "rollback":  # a transaction that fails leaves the totals as they were
        before = store.host_claims()
        with pytest.raises(RuntimeError), store.transaction():
            store.update_vm(vm["id"], spec=random_spec(rng, vm["name"]), host=rng.choice(HOSTS))
            store.delete_vm(rng.choice(vms)["id"])
            raise RuntimeError("abort")
        assert store.host_claims() == before
    return kind


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_writes_keep_the_totals_equal_to_a_full_sum(db, seed):
    rng, serial = random.Random(seed), itertools.count(1)
    done = []
    for _ in range(300):
        done.append(step(db, rng, serial))
        assert_right(db)
    # the sequence did touch every kind of claim (a test of nothing would pass too)
    assert {"create", "state", "resize", "host", "delete", "op", "op_status", "image", "raw", "rollback"} <= set(done)
    kept = db.host_claims()
    assert any(c[0] for c in kept.values()) and any(c[3] for c in kept.values())
    assert any(c[4] for c in kept.values())


def test_a_totals_drift_is_found_and_repaired(db):
    rng, serial = random.Random(9), itertools.count(1)
    for _ in range(40):
        step(db, rng, serial)
    right = db.host_claims()
    host = sorted(right)[0]
    db.db.execute("UPDATE host_claims SET cpus = cpus + 3, disk = disk - 1 WHERE host = ?", [host])
    drift = db.claims_drift()
    assert list(drift) == [host]
    assert drift[host][1] == right[host]  # the full sum
    assert db.repair_claims() == (False, drift)
    assert db.host_claims() == right
    assert db.repair_claims() == (False, {})


def test_a_missing_or_older_trigger_is_remade_and_the_totals_rebuilt(db):
    rng, serial = random.Random(5), itertools.count(1)
    for _ in range(30):
        step(db, rng, serial)
    db.db.execute("DROP TRIGGER claims_vm_update")  # e.g. a table rebuilt by a migration
    vm = db.list_vms(with_xml=False)[0]
    db.update_vm(vm["id"], host="h9", observed_state=VMState.RUNNING, desired_state=DesiredState.RUNNING)
    assert "h9" in db.claims_drift()
    assert db.repair_claims() == (True, {})
    assert_right(db)
    names = {r[0] for r in db.db.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")}
    assert set(trigger_sql()) <= names
    db.update_vm(vm["id"], host="h1")
    assert_right(db)
    # an older rule's trigger text is replaced too
    db.db.execute("DROP TRIGGER claims_vm_insert")
    db.db.execute("CREATE TRIGGER claims_vm_insert AFTER INSERT ON vms BEGIN SELECT 1; END")
    assert db.repair_claims() == (True, {})
    sql = db.db.execute("SELECT sql FROM sqlite_master WHERE name = 'claims_vm_insert'").fetchone()[0]
    assert sql == trigger_sql()["claims_vm_insert"]
    # and the view the triggers read the rule from
    db.db.execute(f"DROP VIEW {VIEW}")
    db.db.execute(f"CREATE VIEW {VIEW} (vm_id, host, cpus, memory, disk, dedicated, hugepages, image) "
                  "AS SELECT id, host, 0, 0, 0, 0, 0, NULL FROM vms")
    assert db.repair_claims() == (True, {})
    sql = db.db.execute("SELECT sql FROM sqlite_master WHERE name = ?", [VIEW]).fetchone()[0]
    assert sql == view_sql()
    db.update_vm(vm["id"], host="h2")
    assert_right(db)


def test_reading_the_totals_does_not_read_the_vms(db):
    """O(hosts): the placement read asks host_claims, whatever the VMs are."""
    for n in range(50):
        db.insert_vm({"id": f"id{n}", "name": f"vm{n}", "spec": random_spec(random.Random(n), f"vm{n}"),
                      "desired_state": "running", "observed_state": "running", "host": HOSTS[n % 4],
                      "generation": 1, "created": 0.0, "updated": 0.0, "mac": f"52:54:00:00:00:{n:02x}"})
    seen: list[str] = []
    db.db.conn.set_trace_callback(seen.append)
    try:
        placement.host_states(db, 0.0, 30.0)
    finally:
        db.db.conn.set_trace_callback(None)
    assert seen and not any("vms" in sql or "operations" in sql for sql in seen)
    assert json.dumps(db.host_claims(), sort_keys=True) == json.dumps(python_sum(db), sort_keys=True)


def test_a_trigger_finds_its_vm_by_index(db):
    """The rule is written once, in the view; a trigger's `vm_id = NEW.id` reaches both of
    its arms (vms by its key, operations by vm_id): no arm reads every VM or operation."""
    plan = [row[3] for row in db.db.execute(
        f"EXPLAIN QUERY PLAN SELECT * FROM {VIEW} WHERE vm_id = ?", ["x"])]  # noqa: S608 - constant
    # the only scans: of the view's own rows (a co-routine), and of a spec's disks (json_each)
    tables = [step for step in plan if step.startswith("SCAN") and " VIRTUAL TABLE" not in step
              and step not in (f"SCAN {VIEW}",) and not step.startswith("SCAN (subquery")]
    assert tables == [], plan
    assert any(step.startswith("SEARCH v USING") for step in plan), plan
    assert any(step.startswith("SEARCH o USING") for step in plan), plan


def test_each_connection_parses_a_small_schema(db):
    """Every connection (one per thread, in every process) keeps its own parse of the
    schema: the claim rule written out in each of 11 triggers made it 568 KiB a
    connection, ~17 MiB over a serve's ~30 (issue 10's memory goal). SQLite's own count
    of the memory it holds, through the library the sqlite3 module uses."""
    lib = ctypes.util.find_library("sqlite3")
    path = getattr(sqlite3, "__file__", None) or ""
    linked = lib and "libsqlite3" in Path(f"/proc/{os.getpid()}/maps").read_text()
    if not linked:
        pytest.skip(f"sqlite3 not linked dynamically here ({path or lib})")
    used = ctypes.CDLL(lib).sqlite3_memory_used
    used.restype = ctypes.c_int64
    conns = []
    before = used()
    for _ in range(4):
        conn = sqlite3.connect(db.path)
        conn.execute("SELECT count(*) FROM vms").fetchone()  # reads the schema
        conns.append(conn)
    per_connection = (used() - before) / len(conns)
    for conn in conns:
        conn.close()
    assert per_connection < 320 * 1024, f"{per_connection / 1024:.0f} KiB a connection"

"""What every host has claimed on it, kept current by SQLite itself (issue 17).

Summing every VM's claims for each scheduling decision cost O(VMs): 260 ms at
20,000 VMs (py-spy: the two GROUP BY queries over every spec's JSON were all of
a create's, start's and migrate's time). Instead two tables hold the answer:

- vm_claims: one row per claim a VM makes, on the host its record names (unless
  it is shelved) and on the target of each open move of it (MOVING_OP_KINDS):
  vCPUs, MiB, disk bytes, dedicated vCPUs, hugepage MiB, as the rule in
  model/states.py says (placement.claims_cpu_ram for one VM, and an open
  operation marked booting: a start in flight claims even once a force-stop
  changed the desired state, until the VM is observed stopped);
- host_claims: per host, the sums of its vm_claims rows and how many there are.

Triggers on vms, operations and images rewrite a VM's vm_claims rows (from the
view vm_claims_due, which writes the rule once) whenever what its claims depend on
changes; triggers on vm_claims add each row to its host's totals and take it away
again. So every writer (the service, the controller, a raw INSERT of the scale
bench) keeps them current in its own transaction, and a read of the totals is
O(hosts). A row is taken away with the values it was added with, so the totals
never drift from the ledger.

The rule lives in the view's and the triggers' text: install() (re)creates them
when their text is not today's (a newer rule, or a table rebuilt without them) and
rebuilds the ledger then; drift() compares the totals with a full sum made by
another path (the GROUP BY queries of before, kept for this); repair() rebuilds
both tables (store.Aggregates: claims_drift, repair_claims). The controller checks
at its start.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import sqlite_utils

from appliance.model.states import (
    BOOTING,
    CLAIMING_DESIRED_STATES,
    CLAIMING_OBSERVED_STATES,
    MOVING_OP_KINDS,
    OPEN_OP_STATES,
    SAVED_OBSERVED_STATES,
    UNPLACED_OBSERVED_STATES,
)

# The numbers each claim carries, in host_claims' and vm_claims' column order.
CLAIM_COLUMNS = ("cpus", "memory", "disk", "dedicated", "hugepages")
_NAME = re.compile(r"^[a-z][a-z_-]*$")


def _literals(values: Sequence[str]) -> str:
    """`'a', 'b'`: state and kind names (the model's constants) as SQL literals, for
    trigger text, which takes no bound parameters. Anything but a plain lowercase
    word is refused, so that no quote can reach the SQL."""
    for value in values:
        if not _NAME.match(str(value)):
            raise ValueError(f"not a state name: {value!r}")
    return ", ".join(f"'{v}'" for v in values)


def _booting(params: str) -> str:
    """Whether an operation's `params` (NEW.params, OLD.params, o.params) mark it booting."""
    _literals([BOOTING])
    return f"coalesce(json_extract({params}, '$.{BOOTING}'), 0)"


def _vm_values() -> str:
    """What the rule reads of one VM `v` (its image `i` LEFT JOINed): whether it claims
    CPU and RAM now (`c`), its vCPUs and MiB, its disk bytes (claimed always), whether
    its vCPUs are dedicated and its memory hugepages, and its image's name."""
    booting = (  # an open operation booting it: wanted running when it was marked (model/states.py)
        "EXISTS (SELECT 1 FROM operations b WHERE b.vm_id = v.id "  # noqa: S608 - constants
        f"AND b.status IN ({_literals(OPEN_OP_STATES)}) AND {_booting('b.params')})"
    )
    claims = (
        f"(v.desired_state IN ({_literals(CLAIMING_DESIRED_STATES)}) "
        f"OR v.observed_state IN ({_literals(CLAIMING_OBSERVED_STATES)}) "
        f"OR coalesce(json_extract(v.spec, '$.reserve_when_stopped'), 0) OR {booting})"
    )
    return f"""{claims} AS c,
       coalesce(json_extract(v.spec, '$.cpus'), 0) AS cpus,
       coalesce(json_extract(v.spec, '$.memory'), 0) AS memory,
       coalesce(i.virtual_size, 0)
           + 1048576 * coalesce((SELECT sum(json_extract(d.value, '$.size'))
                                 FROM json_each(v.spec, '$.disks') d), 0)
           + CASE WHEN v.observed_state IN ({_literals(SAVED_OBSERVED_STATES)})
                  THEN 1048576 * coalesce(json_extract(v.spec, '$.memory'), 0) ELSE 0 END AS disk,
       coalesce(json_extract(v.spec, '$.cpu.dedicated'), 0) AS dedicated,
       coalesce(json_extract(v.spec, '$.hugepages'), 0) AS hugepages,
       json_extract(v.spec, '$.image') AS image"""  # noqa: S608 - constants


# The claims of every VM by the rule, as vm_claims rows (and each VM's image name, for
# the image triggers): a view, so that the rule's text is parsed once per connection.
# Written out in each trigger, as before, it made every connection's schema 568 KiB
# (11 triggers, 51 kB of SQL; 21 KiB without them), ~17 MiB over the ~30 connections
# of a serve with its API workers and mount (issue 10, tests/bench/notes.md). A
# trigger's `WHERE vm_id = NEW.id` reaches both arms (SQLite pushes it down into the
# compound subquery), where vms' and operations' indexes find the rows, as before.
# The inner arms say whether the VM claims (`c`) once, the outer query applies it
# (a compiled trigger program, kept by every statement that fires it, ~40 KiB smaller
# than with the test written out in each of the four columns).
VIEW = "vm_claims_due"


def view_sql() -> str:
    """The CREATE VIEW statement, as sqlite_master keeps it."""
    values = _vm_values()
    image = "LEFT JOIN images i ON i.name = json_extract(v.spec, '$.image')"
    arms = (
        f"SELECT v.id AS vm_id, v.host AS host, {values} FROM vms v {image} "  # noqa: S608 - constants
        "WHERE v.host IS NOT NULL "
        f"AND v.observed_state NOT IN ({_literals(UNPLACED_OBSERVED_STATES)}) "
        "UNION ALL "
        f"SELECT v.id, json_extract(o.params, '$.target'), {values} "
        f"FROM operations o JOIN vms v ON v.id = o.vm_id {image} "
        f"WHERE o.kind IN ({_literals(MOVING_OP_KINDS)}) "
        f"AND o.status IN ({_literals(OPEN_OP_STATES)}) "
        "AND json_extract(o.params, '$.target') IS NOT NULL"
    )
    return (
        f"CREATE VIEW {VIEW} (vm_id, host, {', '.join(CLAIM_COLUMNS)}, image) AS "  # noqa: S608 - constants
        "SELECT vm_id, host, CASE WHEN c THEN cpus ELSE 0 END, CASE WHEN c THEN memory ELSE 0 END, "
        "disk, CASE WHEN c AND dedicated THEN cpus ELSE 0 END, "
        f"CASE WHEN c AND hugepages THEN memory ELSE 0 END, image FROM ({arms})"
    )


def _insert_claims(where: str) -> str:
    """The statement that adds the vm_claims rows of the VMs matching `where` (over
    the view's columns; their rows must be gone first)."""
    cols = ", ".join(CLAIM_COLUMNS)
    return (f"INSERT INTO vm_claims (vm_id, host, {cols}) "  # noqa: S608 - constants
            f"SELECT vm_id, host, {cols} FROM {VIEW} WHERE {where}")


def _refresh(vm_id: str) -> str:
    """A trigger's body part: the VM `vm_id` (NEW.x or OLD.x) claims anew."""
    return f"DELETE FROM vm_claims WHERE vm_id = {vm_id};\n  {_insert_claims(f'vm_id = {vm_id}')};"  # noqa: S608 - constants


def _refresh_image(name: str) -> str:
    """Every VM of the image `name` (NEW.name or OLD.name) claims anew: its size changed."""
    of_image = f"json_extract(v.spec, '$.image') = {name}"
    delete = f"DELETE FROM vm_claims WHERE vm_id IN (SELECT v.id FROM vms v WHERE {of_image});"  # noqa: S608 - constants
    return f"{delete}\n  {_insert_claims(f'image = {name}')};"


def trigger_sql() -> dict[str, str]:
    """name -> CREATE TRIGGER statement, as sqlite_master keeps it."""
    moving = _literals(MOVING_OP_KINDS)
    cols = ", ".join(CLAIM_COLUMNS)
    add = ", ".join(f"{c} = {c} + excluded.{c}" for c in CLAIM_COLUMNS)
    sub = ", ".join(f"{c} = {c} - OLD.{c}" for c in CLAIM_COLUMNS)
    changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}"
                          for c in ("id", "host", "desired_state", "observed_state", "spec"))
    op_changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}"
                             for c in ("vm_id", "kind", "status", "params"))
    bodies = {
        "claims_ledger_insert": (
            "AFTER INSERT ON vm_claims",
            f"INSERT INTO host_claims (host, claims, {cols}) "  # noqa: S608 - constants
            f"VALUES (NEW.host, 1, {', '.join(f'NEW.{c}' for c in CLAIM_COLUMNS)}) "
            f"ON CONFLICT (host) DO UPDATE SET claims = claims + 1, {add};"),
        "claims_ledger_delete": (
            "AFTER DELETE ON vm_claims",
            f"UPDATE host_claims SET claims = claims - 1, {sub} WHERE host = OLD.host;"),  # noqa: S608 - constants
        "claims_vm_insert": ("AFTER INSERT ON vms", _refresh("NEW.id")),
        "claims_vm_update": (
            f"AFTER UPDATE OF id, host, desired_state, observed_state, spec ON vms WHEN {changed}",
            f"DELETE FROM vm_claims WHERE vm_id = OLD.id;\n  {_refresh('NEW.id')}"),  # noqa: S608 - constants
        "claims_vm_delete": ("AFTER DELETE ON vms", "DELETE FROM vm_claims WHERE vm_id = OLD.id;"),
        "claims_op_insert": (
            f"AFTER INSERT ON operations WHEN NEW.kind IN ({moving}) OR {_booting('NEW.params')}",
            _refresh("NEW.vm_id")),
        "claims_op_update": (
            f"AFTER UPDATE OF vm_id, kind, status, params ON operations WHEN "
            f"(OLD.kind IN ({moving}) OR NEW.kind IN ({moving}) OR {_booting('OLD.params')} "
            f"OR {_booting('NEW.params')}) AND ({op_changed})",
            f"{_refresh('OLD.vm_id')}\n  {_refresh('NEW.vm_id')}"),
        "claims_op_delete": (
            f"AFTER DELETE ON operations WHEN OLD.kind IN ({moving}) OR {_booting('OLD.params')}",
            _refresh("OLD.vm_id")),
        "claims_image_insert": ("AFTER INSERT ON images", _refresh_image("NEW.name")),
        "claims_image_update": (
            "AFTER UPDATE OF name, virtual_size ON images WHEN OLD.name IS NOT NEW.name "
            "OR OLD.virtual_size IS NOT NEW.virtual_size",
            f"{_refresh_image('OLD.name')}\n  {_refresh_image('NEW.name')}"),
        "claims_image_delete": ("AFTER DELETE ON images", _refresh_image("OLD.name")),
    }
    return {name: f"CREATE TRIGGER {name} {when}\nBEGIN\n  {body}\nEND"
            for name, (when, body) in bodies.items()}


def create_tables(db: sqlite_utils.Database) -> None:
    db.execute(
        f"CREATE TABLE IF NOT EXISTS vm_claims (vm_id TEXT NOT NULL, host TEXT NOT NULL, "
        f"{', '.join(f'{c} NOT NULL DEFAULT 0' for c in CLAIM_COLUMNS)})")
    db.execute("CREATE INDEX IF NOT EXISTS idx_vm_claims_vm_id ON vm_claims (vm_id)")
    db.execute(
        "CREATE TABLE IF NOT EXISTS host_claims (host TEXT PRIMARY KEY, "
        "claims INTEGER NOT NULL DEFAULT 0, "
        f"{', '.join(f'{c} NOT NULL DEFAULT 0' for c in CLAIM_COLUMNS)})")


def rebuild(db: sqlite_utils.Database) -> None:
    """Both tables anew from every VM and open operation (inside the caller's transaction)."""
    db.execute("DELETE FROM vm_claims")
    db.execute("DELETE FROM host_claims")
    db.execute(_insert_claims("1"))


def install(db: sqlite_utils.Database) -> bool:
    """The tables, and the view and triggers as today's rule writes them; the ledger
    rebuilt when any of them was missing or different (whatever it let pass is
    unknown). Inside the caller's transaction. Whether anything was (re)made."""
    create_tables(db)
    wanted = trigger_sql()
    have = dict(db.execute(
        "SELECT name, sql FROM sqlite_master WHERE type = 'trigger' AND name LIKE ?", ["claims_%"]
    ).fetchall())
    view = db.execute(
        "SELECT sql FROM sqlite_master WHERE type = 'view' AND name = ?", [VIEW]).fetchone()
    if have == wanted and view is not None and view[0] == view_sql():
        return False
    for name in have:
        db.execute(f"DROP TRIGGER IF EXISTS [{name}]")
    db.execute(f"DROP VIEW IF EXISTS {VIEW}")
    db.execute(view_sql())
    for sql in wanted.values():
        db.execute(sql)
    rebuild(db)
    return True

"""Sums and counts over several tables, computed in SQLite: the claims the
scheduler weighs (kept per host by store/claims.py; summed here to check them)
and the figures the exporter reports. The rules (which states claim, which
buckets) are the callers'; they arrive as parameters, except the claims' rule
that the triggers hold (model/states.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from appliance.access.principal import DEFAULT_PROJECT
from appliance.model import FINAL_OP_STATES, OPEN_OP_STATES, DesiredState, OpStatus, VMState
from appliance.model.states import (
    BOOTING,
    CLAIMING_DESIRED_STATES,
    CLAIMING_OBSERVED_STATES,
    MOVING_OP_KINDS,
    SAVED_OBSERVED_STATES,
    UNPLACED_OBSERVED_STATES,
)
from appliance.store import claims
from appliance.store.base import StoreBase, marks
from appliance.store.claims import CLAIM_COLUMNS

_MOVING_KINDS = [str(k) for k in MOVING_OP_KINDS]
_OPEN = [str(s) for s in OPEN_OP_STATES]
_FINAL = [str(s) for s in FINAL_OP_STATES]
# A VM's name where several projects' meet (access.principal.qualified_name), in SQL;
# the default project's name is the one bound parameter.
_QUALIFIED = (
    "CASE WHEN {project} IS NULL OR {project} = ? THEN {name} ELSE {project} || '/' || {name} END"
)


def _claims_sums(desired: Sequence[str], observed: Sequence[str], saved: Sequence[str]) -> str:
    """Per group: vCPUs and MiB of the VMs that claim them, disk bytes of all (with
    their memory for those observed in `saved`: a managed save's file), and of the
    vCPUs and MiB those of a dedicated CPU and of hugepages. Only `?` marks are
    formatted in; the states are bound (desired, observed, then the open operation
    states, four times: vCPUs, memory, dedicated, hugepages; `saved` after the second).
    A VM with an open operation marked booting claims too (model/states.py)."""
    claims = (
        f"(v.desired_state IN ({marks(desired)}) OR v.observed_state IN ({marks(observed)}) "  # noqa: S608 - ? marks only
        "OR coalesce(json_extract(v.spec, '$.reserve_when_stopped'), 0) "
        "OR EXISTS (SELECT 1 FROM operations b WHERE b.vm_id = v.id "
        f"AND b.status IN ({marks(_OPEN)}) AND coalesce(json_extract(b.params, '$.{BOOTING}'), 0)))"
    )
    return f"""
       sum(CASE WHEN {claims} THEN json_extract(v.spec, '$.cpus') ELSE 0 END),
       sum(CASE WHEN {claims} THEN json_extract(v.spec, '$.memory') ELSE 0 END),
       sum(coalesce(i.virtual_size, 0)
           + 1048576 * coalesce((SELECT sum(json_extract(d.value, '$.size'))
                                 FROM json_each(v.spec, '$.disks') d), 0)
           + CASE WHEN v.observed_state IN ({marks(saved)})
                  THEN 1048576 * json_extract(v.spec, '$.memory') ELSE 0 END),
       sum(CASE WHEN {claims} AND coalesce(json_extract(v.spec, '$.cpu.dedicated'), 0)
           THEN json_extract(v.spec, '$.cpus') ELSE 0 END),
       sum(CASE WHEN {claims} AND coalesce(json_extract(v.spec, '$.hugepages'), 0)
           THEN json_extract(v.spec, '$.memory') ELSE 0 END)"""  # noqa: S608 - ? marks only


class Aggregates(StoreBase):
    # -- for placement -------------------------------------------------------
    def summed_claims_by_host(
        self, desired: Sequence[str], observed: Sequence[str], unplaced: Sequence[str] = (),
        saved: Sequence[str] = (), moving: Sequence[str] = _MOVING_KINDS,
    ) -> dict[str, list[float]]:
        """host -> [vCPUs, MiB, disk bytes, dedicated vCPUs, hugepage MiB] claimed by
        the VMs placed there and by those moving there (an open operation of a kind
        in `moving` naming it as its target), summed over every VM now: O(VMs).
        A VM claims vCPUs and MiB when its desired state is one of `desired` or
        its observed one of `observed` (or its spec reserves them when stopped); a
        VM observed in one of `unplaced` (shelved) claims nothing where it is; one
        observed in `saved` (suspended) claims disk for its memory's save file.
        The check of the totals that store/claims.py keeps (host_claims), by
        another path: placement reads those."""
        sums = _claims_sums(desired, observed, saved)
        claim = [*desired, *observed, *_OPEN]
        states = [*claim, *claim, *saved, *claim, *claim]
        placed = (
            f"SELECT v.host,{sums} FROM vms v "  # noqa: S608 - only ? marks are formatted in
            "LEFT JOIN images i ON i.name = json_extract(v.spec, '$.image') "
            f"WHERE v.host IS NOT NULL AND v.observed_state NOT IN ({marks(unplaced)}) "
            "GROUP BY v.host"
        )
        moving_sql = (
            f"SELECT json_extract(o.params, '$.target'),{sums} "  # noqa: S608 - only ? marks are formatted in
            "FROM operations o JOIN vms v ON v.id = o.vm_id "
            "LEFT JOIN images i ON i.name = json_extract(v.spec, '$.image') "
            f"WHERE o.kind IN ({marks(moving)}) AND o.status IN ({marks(_OPEN)}) GROUP BY 1"
        )
        out: dict[str, list[float]] = {}
        queries = ((placed, [*states, *unplaced]), (moving_sql, [*states, *moving, *_OPEN]))
        for sql, params in queries:
            for host, *values in self.db.execute(sql, params):
                if host is None:
                    continue
                slot = out.setdefault(host, [0] * len(values))
                for n, value in enumerate(values):
                    slot[n] += value or 0
        return out

    def host_claims(self) -> dict[str, list[float]]:
        """host -> [vCPUs, MiB, disk bytes, dedicated vCPUs, hugepage MiB] claimed by
        the VMs placed there and by those moving there, with the rule of
        model/states.py; hosts nothing claims left out. O(hosts): the totals that
        store/claims.py's triggers keep in every writer's transaction."""
        rows = self.db.execute(
            f"SELECT host, {', '.join(CLAIM_COLUMNS)} FROM host_claims WHERE claims > 0"  # noqa: S608 - constants
        ).fetchall()
        return {host: list(values) for host, *values in rows}

    def claims_drift(self) -> dict[str, tuple[list[float], list[float]]]:
        """host -> (kept totals, a full sum now) where they differ; {} when the totals
        are right. The full sum: summed_claims_by_host, with the same rule (O(VMs))."""
        full = self.summed_claims_by_host(
            CLAIMING_DESIRED_STATES, CLAIMING_OBSERVED_STATES, UNPLACED_OBSERVED_STATES,
            SAVED_OBSERVED_STATES, MOVING_OP_KINDS)
        kept = self.host_claims()
        zero = [0.0] * len(CLAIM_COLUMNS)
        out = {}
        for host in sorted(set(full) | set(kept)):
            a, b = kept.get(host, zero), full.get(host, zero)
            if any(abs(x - y) > 1e-6 * max(1.0, abs(y)) for x, y in zip(a, b, strict=True)):
                out[host] = (a, b)
        return out

    def repair_claims(self) -> tuple[bool, dict[str, tuple[list[float], list[float]]]]:
        """Triggers as today's rule writes them and totals equal to a full sum, in one
        transaction: whether the triggers were (re)made (the ledger rebuilt then),
        and where the totals differed from the full sum (rebuilt then); (False, {})
        when all was right. O(VMs): the controller's start."""
        with self.transaction() as db:
            if claims.install(db):
                return True, {}
            drift = self.claims_drift()
            if drift:
                claims.rebuild(db)
        return False, drift

    def pins_moving_to(self, host: str) -> dict[str, str]:
        """vm id -> the host CPUs (cpuset text) chosen on `host` for the VMs
        migrating there now (issue 14, F: kept in their operation's params)."""
        sql = (
            "SELECT o.vm_id, json_extract(o.params, '$.pinned_cpus') FROM operations o "  # noqa: S608 - ? marks only
            f"WHERE o.kind IN ({marks(_MOVING_KINDS)}) AND o.status IN ({marks(_OPEN)}) "
            "AND json_extract(o.params, '$.target') = ? "
            "AND json_extract(o.params, '$.pinned_cpus') IS NOT NULL"
        )
        return {vm_id: str(pins) for vm_id, pins in
                self.db.execute(sql, [*_MOVING_KINDS, *_OPEN, host])}

    def vms_by_host(self) -> dict[str, int]:
        """host -> how many VMs are placed there, running or not."""
        return dict(
            self.db.execute(
                "SELECT host, count(*) FROM vms WHERE host IS NOT NULL GROUP BY host"
            ).fetchall()
        )

    def group_members_by_host(
        self, group: str, excluding: str | None, project: str = DEFAULT_PROJECT
    ) -> dict[str, int]:
        """host -> members of the project's server group (other than the VM
        `excluding`) placed there, or on their way there (an open migration or move)."""
        members: dict[str, int] = {}
        rows = self.db.execute(
            "SELECT host, count(*) FROM vms "
            "WHERE project = ? AND json_extract(spec, '$.group') = ? AND id IS NOT ? "
            "AND host IS NOT NULL AND desired_state != ? GROUP BY host",
            [project, group, excluding, DesiredState.DELETED],
        )
        for host, count in rows:
            members[host] = count
        for (params,) in self.db.execute(
            "SELECT o.params FROM operations o JOIN vms v ON v.id = o.vm_id "  # noqa: S608 - ? marks only
            f"WHERE o.kind IN ({marks(_MOVING_KINDS)}) AND o.status IN ({marks(_OPEN)}) "
            "AND v.project = ? AND json_extract(v.spec, '$.group') = ? AND v.id IS NOT ?",
            [*_MOVING_KINDS, *_OPEN, project, group, excluding],
        ):
            target = json.loads(params).get("target")
            if target:
                members[target] = members.get(target, 0) + 1
        return members

    # -- for quotas ------------------------------------------------------------
    def usage_by_project(
        self, project: str | None = None, excluding: str | None = None
    ) -> dict[str, tuple[int, int, int, int]]:
        """project -> (VMs, vCPUs, MiB, disk bytes) of its VMs whose deletion is not
        asked for, running or not (appliance/quotas.py says why); of one project
        if named, without the VM `excluding` (an id). One query."""
        where, params = "v.desired_state != ? AND v.id IS NOT ?", [DesiredState.DELETED, excluding]
        if project is not None:
            where += " AND v.project = ?"
            params.append(project)
        sql = (
            "SELECT v.project, count(*), sum(json_extract(v.spec, '$.cpus')), "  # noqa: S608 - constants
            "sum(json_extract(v.spec, '$.memory')), sum(coalesce(i.virtual_size, 0) "
            "+ 1048576 * coalesce((SELECT sum(json_extract(d.value, '$.size')) "
            "FROM json_each(v.spec, '$.disks') d), 0)) FROM vms v "
            "LEFT JOIN images i ON i.name = json_extract(v.spec, '$.image') "
            f"WHERE {where} GROUP BY v.project"
        )
        return {
            name: (int(vms), int(cpus or 0), int(memory or 0), int(disk or 0))
            for name, vms, cpus, memory, disk in self.db.execute(sql, params)
        }

    # -- for the exporter ------------------------------------------------------
    def running_since(self) -> dict[str, float]:
        """id -> when each running VM was last seen to start running."""
        return dict(
            self.db.execute(
                "SELECT id, state_changed FROM vms WHERE observed_state = ? "
                "AND state_changed IS NOT NULL",
                [VMState.RUNNING],
            ).fetchall()
        )

    def vm_counts_by_state(
        self,
    ) -> tuple[list[tuple[str | None, int]], list[tuple[str | None, int]]]:
        """(desired state, count) and (observed state, count)."""
        desired = self.db.execute(
            "SELECT desired_state, count(*) FROM vms GROUP BY desired_state"
        ).fetchall()
        observed = self.db.execute(
            "SELECT observed_state, count(*) FROM vms GROUP BY observed_state"
        ).fetchall()
        return desired, observed

    def finished_operation_counts(self) -> list[tuple[str, str, int]]:
        return self.db.execute(
            f"SELECT kind, status, count(*) FROM operations WHERE status IN ({marks(_FINAL)}) "  # noqa: S608 - ? marks
            "GROUP BY kind, status",
            _FINAL,
        ).fetchall()

    def open_operation_counts(self) -> list[tuple[str, str, int]]:
        return self.db.execute(
            f"SELECT kind, status, count(*) FROM operations WHERE status IN ({marks(_OPEN)}) "  # noqa: S608 - ? marks
            "GROUP BY kind, status",
            _OPEN,
        ).fetchall()

    def running_operation_progress(self) -> list[tuple[str | None, str, int | None]]:
        """(VM name, kind, percent done) of each running operation; the name as
        PROJECT/NAME outside the default project (store.vm_ids_and_names)."""
        return self.db.execute(
            f"SELECT {_QUALIFIED.format(project='project', name='vm_name')} AS vm, kind, "  # noqa: S608 - ? marks
            "max(progress) FROM operations WHERE status = ? GROUP BY vm, kind",
            [DEFAULT_PROJECT, OpStatus.RUNNING],
        ).fetchall()

    def operation_duration_buckets(self, bounds: Sequence[float]) -> list[tuple[Any, ...]]:
        """Per (kind, status) of finished operations: how many took at most each
        bound (seconds, start to end), how many in all, and their total seconds."""
        buckets = ", ".join("sum(d <= ?)" for _ in bounds)
        sql = (
            f"SELECT kind, status, {buckets}, count(*), sum(d) FROM "  # noqa: S608 - only ? marks
            "(SELECT kind, status, max(0, finished - coalesce(started, created)) AS d "
            "FROM operations "
            f"WHERE status IN ({marks(_FINAL)}) AND finished IS NOT NULL) GROUP BY kind, status"
        )
        return self.db.execute(sql, [*(float(b) for b in bounds), *_FINAL]).fetchall()

    def event_counts(self) -> list[tuple[str, int]]:
        return self.db.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall()

    def vm_event_counts(self, kinds: Sequence[str]) -> list[tuple[str, str, int]]:
        """(VM name, kind, count) of the events of these kinds about VMs that exist;
        the name as PROJECT/NAME outside the default project."""
        return self.db.execute(
            f"SELECT {_QUALIFIED.format(project='v.project', name='v.name')} AS vm, e.kind, "  # noqa: S608 - ? marks
            "count(*) FROM events e JOIN vms v ON v.id = e.vm_id "
            f"WHERE e.kind IN ({marks(kinds)}) GROUP BY vm, e.kind",
            [DEFAULT_PROJECT, *kinds],
        ).fetchall()

"""The VM records: one row per VM, its spec as JSON."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import pydantic_core

from appliance.access.principal import DEFAULT_PROJECT, qualified_name
from appliance.errors import NotFound, PreconditionFailed
from appliance.gcpause import collector_paused
from appliance.model import DesiredState, VMState
from appliance.store.base import Row, StoreBase, marks
from appliance.store.networks import MORE_NICS, WITH_FIXED_IP, WITH_NIC_MAC
from appliance.store.unchanged import MAX_ROWS, UnchangedRows

T = TypeVar("T")


def _by_name(row: Row) -> str:
    return str(row["name"])


def _decode_vm(row: Row) -> Row:
    row = dict(row)
    # The store's own JSON (json.dumps below), so no depth bound is needed; pydantic-core's
    # parser reads it 3-4x faster than json.loads (a fifth of GET /v1/vms at 1,000 VMs).
    row["spec"] = pydantic_core.from_json(row["spec"])
    row["restart_required"] = bool(row.get("restart_required"))
    return row


def _same(row: Row) -> Row:
    return row


class VMRecords(StoreBase):
    # Set by remember_vm_rows(): reads of one VM's row without its XML served again
    # while nothing was committed (store/unchanged.py).
    _unchanged: UnchangedRows | None = None
    _columns_no_xml: str | None = None

    def remember_vm_rows(self, max_rows: int = MAX_ROWS) -> None:
        """Serve get_vm(..., with_xml=False) again while the store is unchanged (the
        mount, the API), at most max_rows rows per thread."""
        self._unchanged = UnchangedRows(max_rows, self.wal)

    def _vm_select(self, with_xml: bool) -> str:
        """The columns to read: without the domain XML (~4.5 kB each) when the
        caller does not show it. Made once, as columns() is (sorting the names
        was a tenth of the store's part of a GET /v1/vms/NAME)."""
        if with_xml:
            return "*"
        if self._columns_no_xml is None:  # the columns are fixed once migrated
            self._columns_no_xml = ", ".join(
                sorted(c for c in self.columns("vms") if c != "domain_xml"))
        return self._columns_no_xml

    def _vms(
        self, where: str = "", params: Iterable[object] = (), with_xml: bool = True
    ) -> list[Row]:
        """The VMs matching `where`, by name. Sorted here, not by SQLite: its sorter
        keeps cache_size (512 KiB) in memory and spilled every listing of more than
        a few hundred VMs to temporary files, merged back (n log n with I/O; a
        fifth of `GET /v1/vms` at 40,000 VMs). Python's sort is on the same order:
        SQLite's BINARY collation is UTF-8 bytes, which sort as the code points do."""
        with collector_paused():  # ~30 objects per row: see appliance/gcpause.py
            rows = [_decode_vm(r) for r in
                    self._rows("vms", where, list(params), select=self._vm_select(with_xml))]
        rows.sort(key=_by_name)
        return rows

    def get_vm(self, name: str, project: str = DEFAULT_PROJECT, with_xml: bool = True) -> Row:
        """The VM of this name in this project (names are unique per project)."""
        unchanged = self._unchanged
        if unchanged is not None and not with_xml and not getattr(self._local, "depth", 0):
            conn = self.db.conn
            mark, kept = unchanged.get(conn, (project, name))
            if kept is None:
                found = self._rows("vms", "project = ? AND name = ?", [project, name],
                                   select=self._vm_select(False))
                if not found:
                    raise NotFound(f"no VM named {name!r}", "name")
                kept = found[0]
                unchanged.put(mark, (project, name), kept)
            return _decode_vm(kept)
        rows = self._vms("project = ? AND name = ?", [project, name], with_xml=with_xml)
        if not rows:
            raise NotFound(f"no VM named {name!r}", "name")
        return rows[0]

    def vm_derived(self, name: str, project: str, kind: str, make: Callable[[Row], T]) -> T:
        """make(the VM's row without its XML), kept per thread while nothing was committed
        (store/unchanged.py, with the row itself), under `kind`. For values that depend on
        that row alone and that no caller changes: bytes, tuples, a row its readers only
        read. Made anew at every call without remember_vm_rows() or inside a transaction.
        What it saves: the row's decoding and what is made of it, per read of an unchanged
        VM (GET /v1/vms/NAME's view and its JSON; a `cat vms/X/state`'s three reads)."""
        unchanged = self._unchanged
        in_transaction: int = getattr(self._local, "depth", 0)
        if unchanged is None or in_transaction:
            return make(self.get_vm(name, project, with_xml=False))
        key = (project, name, kind)
        mark, kept = unchanged.get(self.db.conn, key)
        if kept is None:
            # get_vm takes the mark again: a commit since `mark` empties the thread's
            # rows there, and put() then keeps nothing under the older mark.
            kept = make(self.get_vm(name, project, with_xml=False))
            unchanged.put(mark, key, kept)
        return kept

    def shared_vm_row(self, name: str, project: str = DEFAULT_PROJECT) -> Row:
        """get_vm(name, project, with_xml=False) for callers that only read the row: while
        nothing was committed, every such read of this thread gets the same dict."""
        return self.vm_derived(name, project, "row", _same)

    def get_vm_by_id(self, vm_id: str) -> Row | None:
        rows = self._vms("id = ?", [vm_id])
        return rows[0] if rows else None

    def vm_exists(self, name: str, project: str = DEFAULT_PROJECT) -> bool:
        found = self.db.execute(
            "SELECT 1 FROM vms WHERE project = ? AND name = ?", [project, name]
        ).fetchone()
        return found is not None

    def list_vms(self, with_xml: bool = True, project: str | None = None) -> list[Row]:
        """Every VM (of one project, if named), by name."""
        if project is None:
            return self._vms(with_xml=with_xml)
        return self._vms("project = ?", [project], with_xml=with_xml)

    def vms_on_host(
        self,
        host: str,
        include_deleted: bool = False,
        observed: Iterable[VMState] | None = None,
        with_xml: bool = False,
    ) -> list[Row]:
        """The VMs placed on a host; `observed`: only those in these observed states."""
        where, params = "host = ?", [host]
        if not include_deleted:
            where += " AND desired_state != ?"
            params.append(DesiredState.DELETED)
        if observed is not None:
            states = [str(s) for s in observed]
            where += f" AND observed_state IN ({marks(states)})"
            params += states
        return self._vms(where, params, with_xml=with_xml)

    def vms_in_states(self, states: Iterable[VMState], with_xml: bool = False) -> list[Row]:
        """The VMs whose observed state is one of these."""
        values = [str(s) for s in states]
        return self._vms(f"observed_state IN ({marks(values)})", values, with_xml=with_xml)

    def vm_by_mac(self, mac: str, excluding: str | None = None) -> Row | None:
        """The VM (other than `excluding`, an id) that has this MAC."""
        # Indexed (schema v19): the first NIC's MAC, and only the VMs with further NICs
        # for theirs; a scan of every spec's JSON was a third of a create at 20,000 VMs.
        where = (f"id IN (SELECT id FROM vms WHERE mac = ? UNION SELECT id FROM vms "  # noqa: S608 - constants
                 f"WHERE {MORE_NICS} AND {WITH_NIC_MAC}) AND id IS NOT ?")
        rows = self._vms(where, [mac, mac, excluding], with_xml=False)
        return rows[0] if rows else None

    def vm_with_fixed_ip(self, network: str, ip: str, excluding: str | None = None) -> Row | None:
        """The VM (other than `excluding`) given this address on this libvirt network."""
        rows = self._vms(
            f"({WITH_FIXED_IP}) AND id IS NOT ?",
            [network, ip, network, ip, excluding],
            with_xml=False,
        )
        return rows[0] if rows else None

    def vm_names_on_host(self, host: str, project: str | None = None) -> list[str]:
        """The names of the VMs placed on a host: of one project, or (None) of
        every project, as PROJECT/NAME outside the default one."""
        if project is not None:
            return [
                r[0]
                for r in self.db.execute(
                    "SELECT name FROM vms WHERE host = ? AND project = ? ORDER BY name",
                    [host, project],
                )
            ]
        rows = self.db.execute(
            "SELECT project, name FROM vms WHERE host = ? ORDER BY project != ?, project, name",
            [host, DEFAULT_PROJECT],
        )
        return [qualified_name(p, n) for p, n in rows]

    def vm_names_using_image(self, image: str) -> list[str]:
        """Every project's VMs made from an image or holding it in a CD-ROM drive (images
        are shared), as PROJECT/NAME
        outside the default project."""
        return [
            qualified_name(p, n)
            for p, n in self.db.execute(
                "SELECT project, name FROM vms WHERE json_extract(spec, '$.image') = ? "
                # an ISO in a CD-ROM drive is in use too (issue 14)
                "OR EXISTS (SELECT 1 FROM json_each(spec, '$.cdroms') WHERE value = ?) "
                "ORDER BY project != ?, project, name",
                [image, image, DEFAULT_PROJECT],
            )
        ]

    def vm_ids_and_names(self) -> dict[str, str]:
        """id (the libvirt domain's UUID) -> name, as PROJECT/NAME outside the default
        project (the metrics' `vm` label: one name may be in several projects)."""
        return {
            vm_id: qualified_name(project, name)
            for vm_id, project, name in self.db.execute("SELECT id, project, name FROM vms")
        }

    def vm_hosts(self) -> dict[str, str | None]:
        """id -> the host the VM is on (None: not placed yet), every VM in one query."""
        return dict(self.db.execute("SELECT id, host FROM vms"))

    def group_members(self, project: str, group: str) -> list[tuple[str, str | None]]:
        """(name, host) of each VM in a server group (of the group's project)."""
        return [
            (name, host)
            for name, host in self.db.execute(
                "SELECT name, host FROM vms "
                "WHERE project = ? AND json_extract(spec, '$.group') = ? ORDER BY name",
                [project, group],
            )
        ]

    def insert_vm(self, row: Row) -> None:
        row = {"project": DEFAULT_PROJECT, **row}
        row["spec"] = json.dumps(row["spec"], sort_keys=True)
        self.db.table("vms").insert(row)

    def update_vm(
        self, vm_id: str, expect_generation: int | None = None, bump: bool = True, **fields: Any
    ) -> None:
        """Update one VM. With expect_generation, fail unless it is still current
        (compare-and-set); with bump, the generation advances (spec changes do;
        observed-state updates from the controller do not)."""
        if "spec" in fields:
            fields["spec"] = json.dumps(fields["spec"], sort_keys=True)
        fields["updated"] = self.clock()
        cas = expect_generation is not None
        changed = self._update(
            "vms",
            "id",
            vm_id,
            fields,
            extra_set="generation = generation + 1" if bump else "",
            extra_where=" AND generation = ?" if cas else "",
            extra_params=[expect_generation] if cas else [],
        )
        if changed == 0:
            if cas and self.get_vm_by_id(vm_id) is not None:
                raise PreconditionFailed(
                    "the VM was changed by someone else; read it again", "generation"
                )
            raise NotFound(f"no VM with id {vm_id}", "name")

    def clear_ready_unless_running(self) -> None:
        """A VM that is not running is not ready; its next boot is judged afresh."""
        self.db.execute(
            "UPDATE vms SET ready = NULL WHERE ready IS NOT NULL AND observed_state != ?",
            [VMState.RUNNING],
        )

    def clear_ready(self, vm_ids: Iterable[str]) -> None:
        """Clear readiness of these VMs only (those that just left running)."""
        self.db.conn.executemany(
            "UPDATE vms SET ready = NULL WHERE id = ? AND ready IS NOT NULL",
            [(vm_id,) for vm_id in vm_ids],
        )

    def list_vms_for_resync(self, ids: Sequence[str] | None = None) -> list[Row]:
        """Every VM (or those of `ids`) as the resync compares it with libvirt:
        neither its domain XML (~4.5 kB each; `has_domain_xml` says whether it
        has one) nor its spec, of which only `network_type` is read (decoding
        2,000 specs every pass was half of the pass's CPU)."""
        sql = (
            "SELECT id, name, project, host, desired_state, observed_state, observed_reason, "
            "state_changed, mac, addresses, domain_xml IS NOT NULL AS has_domain_xml, "
            "json_extract(spec, '$.network.type') AS network_type FROM vms"
        )
        if ids is None:
            return self._select(sql)
        rows: list[Row] = []
        wanted = list(ids)
        for start in range(0, len(wanted), 500):  # under SQLite's bound-parameter limit
            chunk = wanted[start:start + 500]
            rows += self._select(f"{sql} WHERE id IN ({marks(chunk)})", chunk)
        return rows

    def delete_vm(self, vm_id: str) -> None:
        with self.transaction() as db:
            db.execute("DELETE FROM snapshots WHERE vm_id = ?", [vm_id])  # its foreign key
            db.execute("DELETE FROM vms WHERE id = ?", [vm_id])

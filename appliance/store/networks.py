"""The records of the appliance's networks (issue 15): one row per network,
(project, name) its key, as server groups; and the questions asked about the
VMs on one (a VM's spec names the network as `network.name`, or a further NIC's
`networks[i].network`, in its project)."""

from __future__ import annotations

from typing import Any

from appliance.errors import NotFound
from appliance.model import DesiredState
from appliance.store.base import Row, StoreBase

# SQL conditions on a row of vms: a NIC on the network (1 parameter, twice); a NIC on
# the network with this fixed IP (network, ip, twice); a NIC with this MAC besides
# the first's (the vms.mac column): 1 parameter.
ON_NETWORK = (
    "(json_extract(vms.spec, '$.network.type') = 'network' AND "
    "json_extract(vms.spec, '$.network.name') = ?) OR EXISTS (SELECT 1 FROM "
    "json_each(vms.spec, '$.networks') WHERE json_extract(value, '$.network') = ?)")
WITH_FIXED_IP = (
    "(json_extract(vms.spec, '$.network.name') = ? AND json_extract(vms.spec, '$.network.ip') "
    "= ?) OR EXISTS (SELECT 1 FROM json_each(vms.spec, '$.networks') WHERE "
    "json_extract(value, '$.network') = ? AND json_extract(value, '$.ip') = ?)")
WITH_NIC_MAC = ("EXISTS (SELECT 1 FROM json_each(vms.spec, '$.networks') WHERE "
                "json_extract(value, '$.mac') = ?)")
# The VMs with NICs besides the first: the WHERE of a partial index (schema v19),
# which a query uses when it names this term exactly.
MORE_NICS = "json_array_length(vms.spec, '$.networks') > 0"


def _decode(row: Row) -> Row:
    row = dict(row)
    start, end = row.pop("dhcp_start", None), row.pop("dhcp_end", None)
    row["dhcp"] = {"start": start, "end": end} if start else None
    return row


def _encode(fields: dict[str, Any]) -> dict[str, Any]:
    fields = dict(fields)
    dhcp = fields.pop("dhcp", None)
    fields["dhcp_start"] = dhcp["start"] if dhcp else None
    fields["dhcp_end"] = dhcp["end"] if dhcp else None
    return fields


class NetworkRecords(StoreBase):
    def list_networks(self, project: str | None = None) -> list[Row]:
        """The networks of one project (every project's: None), by name."""
        if project is None:
            return [_decode(r) for r in self._rows("networks", "", order_by="project, name")]
        return [_decode(r)
                for r in self._rows("networks", "project = ?", [project], order_by="name")]

    def find_network(self, project: str, name: str) -> Row | None:
        rows = self._rows("networks", "project = ? AND name = ?", [project, name])
        return _decode(rows[0]) if rows else None

    def get_network(self, project: str, name: str) -> Row:
        row = self.find_network(project, name)
        if row is None:
            raise NotFound(f"no network named {name!r}", "name")
        return row

    def count_networks(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM networks").fetchone()[0])

    def insert_network(self, row: Row) -> None:
        self.db.table("networks").insert(_encode(row))

    def delete_network(self, project: str, name: str) -> None:
        self.db.execute("DELETE FROM networks WHERE project = ? AND name = ?", [project, name])

    def network_users(self, project: str, name: str) -> list[str]:
        """The names of the project's VMs whose spec puts a NIC on the network NAME
        (those being deleted too: their domain may still be defined), by name."""
        return [r[0] for r in self.db.execute(
            f"SELECT name FROM vms WHERE project = ? AND ({ON_NETWORK}) ORDER BY name",  # noqa: S608 - constants
            [project, name, name])]

    def network_reservations(self, project: str, name: str) -> list[dict[str, str]]:
        """The fixed IPs the project's VMs have on the network NAME: [{vm, ip}], by IP."""
        rows = self.db.execute(
            "SELECT name, json_extract(spec, '$.network.ip') FROM vms WHERE project = ? "
            "AND json_extract(spec, '$.network.type') = 'network' AND "
            "json_extract(spec, '$.network.name') = ? AND "
            "json_extract(spec, '$.network.ip') IS NOT NULL "
            "UNION ALL SELECT vms.name, json_extract(nic.value, '$.ip') FROM vms, "
            "json_each(vms.spec, '$.networks') AS nic WHERE vms.project = ? AND "
            "json_extract(nic.value, '$.network') = ? AND "
            "json_extract(nic.value, '$.ip') IS NOT NULL",
            [project, name, project, name]).fetchall()
        found = [{"vm": vm, "ip": ip} for vm, ip in rows]
        return sorted(found, key=lambda r: tuple(int(part) for part in r["ip"].split(".")))

    def fixed_ip_holder(self, project: str, network: str, ip: str,
                        excluding: str | None = None) -> Row | None:
        """The project's VM (other than `excluding`, not deleted) reserving `ip` on its
        network NAME, as {id, name}."""
        row = self.db.execute(
            f"SELECT id, name FROM vms WHERE project = ? AND ({WITH_FIXED_IP}) "  # noqa: S608
            "AND id IS NOT ? AND desired_state != ? LIMIT 1",
            [project, network, ip, network, ip, excluding, DesiredState.DELETED]).fetchone()
        return {"id": row[0], "name": row[1]} if row else None

"""The schema, as migrations: each runs once, in a transaction, in order;
PRAGMA user_version records how many have run. Append, never edit."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from appliance.model import DEFAULT_CPU_RATIO, DEFAULT_DISK_RATIO, DEFAULT_RAM_RATIO


def _v1(db: sqlite_utils.Database) -> None:
    db.table("meta").create({"key": str, "value": str}, pk="key")
    db.table("vms").create(
        {
            "id": str,  # uuid; also the libvirt domain's uuid
            "name": str,
            "spec": str,  # JSON, normalised by spec.validate
            "desired_state": str,  # model.DesiredState
            "observed_state": str,  # model.VMState
            "observed_reason": str,
            "host": str,
            "generation": int,
            "created": float,
            "updated": float,
            "state_changed": float,
            "mac": str,
            "domain_xml": str,
            "restart_required": int,
            "last_error": str,
            "addresses": str,  # JSON list, as DHCP leases / the guest agent report them
        },
        pk="id",
        not_null={"name", "spec", "desired_state", "generation"},
    )
    db.table("vms").create_index(["name"], unique=True)
    db.table("operations").create(
        {
            "id": str,
            "vm_id": str,
            "vm_name": str,
            "kind": str,  # model.OpKind
            "status": str,  # model.OpStatus
            "progress": int,
            "params": str,
            "error": str,
            "created": float,
            "started": float,
            "finished": float,
        },
        pk="id",
    )
    db.table("operations").create_index(["status", "created"])
    db.table("operations").create_index(["vm_id", "status"])
    db.table("events").create(
        {
            "id": int,
            "time": float,
            "vm_id": str,
            "vm_name": str,
            "kind": str,
            "message": str,
            "operation": str,
        },
        pk="id",
    )
    db.table("events").create_index(["vm_id", "id"])
    db.table("images").create(
        {
            "name": str,
            "path": str,
            "format": str,
            "virtual_size": int,
            "actual_size": int,
            "created": float,
            "source": str,
        },
        pk="name",
    )
    db.table("hosts").create(
        {
            "name": str,
            "uri": str,
            "state": str,  # model.HostAdminState
            "up": int,
            "last_seen": float,
            "info": str,  # JSON inventory from libvirt
        },
        pk="name",
    )


def _v2(db: sqlite_utils.Database) -> None:
    """Probes: readiness as the prober last judged it, and where the console
    log stood when the guest last started (console probes read from there)."""
    db.table("vms").add_column("ready", int)
    db.table("vms").add_column("boot_console_offset", int)


def _v3(db: sqlite_utils.Database) -> None:
    """Several hosts: per-host overcommit ratios, labels and storage; server
    groups; a VM is always placed (its host holds its claim, stopped or not)."""
    hosts = db.table("hosts")
    for column, kind in (
        ("cpu_ratio", float),
        ("ram_ratio", float),
        ("disk_ratio", float),
        ("reserved_memory_mib", int),
        ("labels", str),
        ("storage", str),
        ("migration_address", str),
        ("created", float),
        ("down_since", float),
    ):
        hosts.add_column(column, kind)
    db.execute(
        "UPDATE hosts SET cpu_ratio = ?, ram_ratio = ?, disk_ratio = ?, reserved_memory_mib = 0, "
        "labels = '{}', storage = 'shared'",
        [DEFAULT_CPU_RATIO, DEFAULT_RAM_RATIO, DEFAULT_DISK_RATIO],
    )
    db.table("groups").create({"name": str, "policy": str, "created": float}, pk="name")
    # Before hosts could be added, every VM lived on the one local host.
    db.execute("UPDATE vms SET host = 'local' WHERE host IS NULL OR host = ''")


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [_v1, _v2, _v3]

"""The schema, as migrations: each runs once, in a transaction, in order;
PRAGMA user_version records how many have run. Append, never edit."""

from __future__ import annotations

from collections.abc import Callable

import sqlite_utils

from appliance.model import DEFAULT_CPU_RATIO, DEFAULT_DISK_RATIO, DEFAULT_RAM_RATIO
from appliance.store.schema_later import (
    _v10_pools,
    _v11_disks,
    _v12_networks,
    _v13_refusals,
    _v14_null_projects,
    _v15_host_attempts,
    _v16_keys,
    _v17_state_index,
    _v18_group_firewall,
    _v19_host_claims,
)


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


def _v4(db: sqlite_utils.Database) -> None:
    """Teams (issue 11): projects, users and their hashed tokens, the mount's
    Unix identity map; VMs and server groups belong to a project (names are
    unique per project); VM locks; who did what in the event log."""
    db.table("projects").create(
        {"name": str, "description": str, "quota": str, "created": float}, pk="name"
    )
    db.execute(
        "INSERT INTO projects (name, description, quota, created) VALUES (?, ?, '{}', ?)",
        ["default", "the project every VM made before projects belongs to", 0.0],
    )
    db.table("users").create(
        {"name": str, "role": str, "projects": str, "created": float, "disabled": int},
        pk="name",
        not_null={"role", "projects"},
    )
    db.table("tokens").create(
        {
            "id": str,  # shown, never secret: the token's handle for list and revoke
            "user": str,
            "hash": str,  # SHA-256 of the whole token (tokens are 256-bit random)
            "prefix": str,  # its first characters, to recognise it by
            "description": str,
            "created": float,
            "expires": float,  # NULL: never
            "last_used": float,
            "revoked": float,
        },
        pk="id",
        not_null={"user", "hash"},
        foreign_keys=[("user", "users", "name")],
    )
    db.table("tokens").create_index(["hash"], unique=True)
    db.table("tokens").create_index(["user"])
    # Unix users and groups of the mount: kind "user" names an appliance user;
    # kind "group" gives its members a role in a project.
    db.table("unix_identities").create(
        {"kind": str, "unix_name": str, "user": str, "role": str, "project": str},
        pk=("kind", "unix_name"),
    )
    vms = db.table("vms")
    for column in ("project", "locked_by", "lock_reason"):
        vms.add_column(column, str)
    vms.add_column("locked_at", float)
    db.execute("UPDATE vms SET project = 'default'")
    db.execute("DROP INDEX IF EXISTS idx_vms_name")
    vms.create_index(["project", "name"], unique=True)
    db.table("groups").add_column("project", str)
    db.execute("UPDATE groups SET project = 'default'")
    db.table("groups").transform(pk=("project", "name"))
    events = db.table("events")
    for column in ("project", "actor", "source", "result"):
        events.add_column(column, str)
    db.table("operations").add_column("project", str)
    db.execute("UPDATE operations SET project = 'default'")


def _v5_projects(db: sqlite_utils.Database) -> None:
    """The events recorded before projects belong to the default project, the
    only one there was: a VM's and a server group's (their project is
    known). Events of hosts and images stay the appliance's (project NULL),
    which every project sees."""
    db.execute(
        "UPDATE events SET project = 'default' WHERE project IS NULL "
        "AND (vm_id IS NOT NULL OR kind IN ('group-created', 'group-deleted'))"
    )


def _v5_audit(db: sqlite_utils.Database) -> None:
    """The audit trail (issue 11): which credential acted (a token's id, a Unix
    uid) beside the actor and source _v4 added; `?user=` reads by actor."""
    db.table("events").add_column("credential", str)
    db.table("events").create_index(["actor", "id"])


def _v6_tickets(db: sqlite_utils.Database) -> None:
    """Console tickets (issue 12): one-use, short-lived credentials a browser puts
    in a WebSocket's URL (appliance/access/tickets.py). Stored hashed; bound to
    the token that asked (no foreign key: deleting a user's tokens must not wait
    for their tickets, and a ticket whose token is gone is useless anyway), the
    VM and the kind of console."""
    db.table("tickets").create(
        {
            "hash": str,  # SHA-256 of the ticket (256 random bits)
            "token_id": str,
            "vm_id": str,
            "project": str,  # the project it was asked in (the VM's)
            "kind": str,  # console | vnc
            "created": float,
            "expires": float,
        },
        pk="hash",
        not_null={"token_id", "vm_id", "project", "kind", "expires"},
    )
    db.table("tickets").create_index(["token_id"])
    db.table("tickets").create_index(["expires"])


def _v7_backups(db: sqlite_utils.Database) -> None:
    """Snapshots, backups and backup targets (issue 13), and an operation's
    progress in bytes (a backup's, a restore's, a copying clone's).

    A snapshot row is written before libvirt takes the snapshot and keeps
    libvirt's own snapshot XML once taken: the store, not libvirt's metadata,
    is the source of truth, and the controller redefines what a host lacks
    (after a move, a migration, a lost /var/lib/libvirt). Backups outlive
    their VM (vm_id has no foreign key; vm_name and project are kept): a
    deleted VM's backups can still be restored."""
    db.table("snapshots").create(
        {
            "id": str,  # uuid
            "vm_id": str,
            "name": str,
            "description": str,
            "memory": int,  # 1: RAM and device state too (a revert resumes the programs)
            "parent": str,  # the snapshot's parent's name, as libvirt says it
            "current": int,  # 1: libvirt's current snapshot (the VM's disks descend from it)
            "state": str,  # model.SnapshotState
            "vm_state": str,  # the VM's observed state when it was taken
            "size": int,  # bytes (see the snapshot code for how it is counted)
            "xml": str,  # libvirt's snapshot XML (snapshotGetXMLDesc), for a redefine
            "error": str,
            "created": float,
        },
        pk="id",
        not_null={"vm_id", "name", "state", "created"},
        foreign_keys=[("vm_id", "vms", "id")],
    )
    db.table("snapshots").create_index(["vm_id", "name"], unique=True)
    db.table("backup_targets").create(
        {
            "name": str,
            "path": str,  # an absolute directory on the appliance's machine (or an NFS mount)
            "created": float,
        },
        pk="name",
        not_null={"path", "created"},
    )
    db.table("backups").create(
        {
            "id": str,  # sortable: "YYYYMMDDTHHMMSSZ-xxxxxx"
            "vm_id": str,
            "vm_name": str,
            "project": str,
            "target": str,  # backup_targets.name
            "kind": str,  # model.BackupKind
            "parent": str,  # the backup an incremental applies on (NULL for a full)
            "chain": str,  # the id of the chain's full backup
            "checkpoint": str,  # the libvirt checkpoint it ends at (the next incremental's base)
            "status": str,  # model.BackupStatus
            "disks": str,  # JSON: [{"name": "root", "file": "root.qcow2", "size": virtual bytes,
            #                "bytes": bytes written}]
            "size": int,  # bytes on the target
            "quiesced": int,  # 1: the guest's file systems were frozen for the checkpoint
            "scheduled": int,  # 1: started by the schedule (retention prunes only those)
            "operation": str,  # the backup operation's id
            "error": str,
            "created": float,
            "finished": float,
        },
        pk="id",
        not_null={"vm_id", "vm_name", "project", "target", "kind", "chain", "status", "created"},
    )
    db.table("backups").create_index(["vm_id", "created"])
    db.table("backups").create_index(["project", "created"])
    db.table("operations").add_column("bytes_done", int)
    db.table("operations").add_column("bytes_total", int)
    db.table("projects").add_column("backup", str)  # JSON: the project's backup policy
    # The controller's record of each VM's effective schedule (part D): `since`, when
    # it first saw the VM with this schedule, so that a slot before the policy was
    # set is not a missed run, and the alert gives a new schedule its grace.
    db.table("backup_schedules").create(
        {
            "vm_id": str,
            "schedule": str,  # the effective policy's schedule text ("daily 02:00")
            "since": float,
            "queued": float,  # the slot the schedule last queued a backup for
        },
        pk="vm_id",
        not_null={"schedule", "since"},
    )


def _v8_shapes(db: sqlite_utils.Database) -> None:
    """Live shapes (issue 14): templates as resources, replica pools, what a
    running domain was given, rebuilds, shelving and the cluster's CPU model.

    templates: a user's VM shapes (Nova's flavors, with an image and the rest of
    a spec). `project` is '' for a global template (admins own those) or the
    project that owns it. A change bumps `revision`; a VM records the name and
    revision it was made from, and a template change never touches a VM.

    pools: KubeVirt's VirtualMachinePool. `template` is the members' spec
    without a name (the pool's template.json); its change bumps `revision` and
    the roll-out replaces members one at a time, unless `paused`."""
    db.table("templates").create(
        {
            "id": str,  # uuid
            "project": str,  # '' = global
            "name": str,
            "revision": int,  # 1, then +1 per change
            "spec": str,  # JSON: a partial spec (no name), validated against Spec on write
            "description": str,
            "created": float,
            "updated": float,
        },
        pk="id",
        not_null={"project", "name", "revision", "spec", "created"},
    )
    db.table("templates").create_index(["project", "name"], unique=True)
    db.table("pools").create(
        {
            "id": str,  # uuid
            "project": str,
            "name": str,  # members are NAME-0, NAME-1, ...
            "template": str,  # JSON: the members' spec without a name
            "revision": int,  # of `template`: +1 per change; members record theirs
            "replicas": int,
            "paused": int,  # 1: the roll-out of a template change waits
            "group": str,  # a server group the members join (spread / anti-affinity), or NULL
            "created": float,
            "updated": float,
        },
        pk="id",
        not_null={"project", "name", "template", "revision", "replicas", "created"},
    )
    db.table("pools").create_index(["project", "name"], unique=True)
    vms = db.table("vms")
    vms.add_column("template", str)  # the template's name it was made from (NULL: none)
    vms.add_column("template_revision", int)
    vms.add_column("pool", str)  # pools.id of the pool it belongs to (NULL: none)
    vms.add_column("pool_ordinal", int)  # its N in NAME-N
    vms.add_column("pool_revision", int)  # the pool template revision it was made from
    # JSON: the spec the running domain has now (set at boot, updated by every
    # change applied live). spec minus this = the changes waiting for a restart.
    vms.add_column("running_spec", str)
    # cloud-init's instance-id (NULL: the VM's id); a rebuild gives a new one,
    # so that cloud-init runs again as on a first boot.
    vms.add_column("instance_id", str)
    # The host's CPU as libvirt's capabilities show it (<cpu> XML), for the
    # cluster's baseline model; the baseline itself is in meta ("cluster_cpu").
    db.table("hosts").add_column("cpu_xml", str)


def _v9_cpu(db: sqlite_utils.Database) -> None:
    """CPU tuning (issue 14, part F). hosts.cpu_dedicated_set: the host CPUs
    kept for dedicated VMs (Nova's cpu_dedicated_set), as libvirt's cpuset text
    ("2-3,6"); NULL or '': none, every CPU is shared. hosts.cpu_warning: why this
    host's CPU cannot run the model that running VMs use (missing features), or
    NULL. vms.pinned_cpus: the host CPUs a dedicated VM's vCPUs are pinned to
    (cpuset text, vCPU i on the i-th), chosen when it is defined on a host; they
    count only while the VM claims its vCPUs (placement.claims_cpu_ram)."""
    db.table("hosts").add_column("cpu_dedicated_set", str)
    db.table("hosts").add_column("cpu_warning", str)
    db.table("vms").add_column("pinned_cpus", str)


MIGRATIONS: list[Callable[[sqlite_utils.Database], None]] = [
    _v1, _v2, _v3, _v4, _v5_projects, _v5_audit, _v6_tickets,
    _v7_backups, _v8_shapes, _v9_cpu, _v10_pools, _v11_disks, _v12_networks,
    _v13_refusals, _v14_null_projects, _v15_host_attempts, _v16_keys, _v17_state_index,
    _v18_group_firewall, _v19_host_claims]

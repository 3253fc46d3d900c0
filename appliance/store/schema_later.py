"""The schema's later migrations (v10 on: pools, disks, networks, refusals, the
projects fix, host connection attempts, SSH keys, the VMs' state index), out of
schema.py for its size; schema.MIGRATIONS lists them in order. Append, never edit."""

from __future__ import annotations

import sqlite_utils

from appliance.store import claims


def _v10_pools(db: sqlite_utils.Database) -> None:
    """Replica pools (issue 14, part D): what the controller does to the pool
    now, recorded before it acts, so that a restarted controller carries on.

    rollout: JSON {"vm_id", "ordinal", "phase": "stop"|"apply"|"start",
    "start": bool} of the one member being brought to the pool's revision (NULL:
    none); message: why the pool is short of its wanted members, if it is
    (a quota, no host fits, a name taken by a VM not of the pool), '' when not."""
    pools = db.table("pools")
    pools.add_column("rollout", str)
    pools.add_column("message", str)


def _v11_disks(db: sqlite_utils.Database) -> None:
    """Install media (issue 14, part B): an image's kind. "disk" (every image
    before: a qcow2 a VM's root disk is overlaid on) or "iso" (an ISO 9660 file
    kept as it came, read-only media for a VM's CD-ROM drives, never a root disk)."""
    db.table("images").add_column("kind", str, not_null_default="disk")


def _v12_networks(db: sqlite_utils.Database) -> None:
    """Networks the appliance manages (issue 15), a project's as its server groups
    (project, name unique). kind: nat | isolated | bridge (model/networks.py);
    subnet, dhcp_start, dhcp_end, domain: nat and isolated only (the gateway is
    the subnet's first address); bridge: kind bridge only, the host bridge."""
    db.table("networks").create(
        {
            "id": str,  # uuid
            "project": str,
            "name": str,
            "kind": str,
            "subnet": str,
            "dhcp_start": str,
            "dhcp_end": str,
            "domain": str,
            "bridge": str,
            "created": float,
        },
        pk="id",
        not_null={"project", "name", "kind", "created"},
    )
    db.table("networks").create_index(["project", "name"], unique=True)


def _v13_refusals(db: sqlite_utils.Database) -> None:
    """An operation the controller refused for a reason of the request's, not a
    failure of the host (issue 15: a VM on a libvirt network that is not active):
    error_field names the field; such a failure answers 409 (EBUSY), not 500."""
    db.table("operations").add_column("error_field", str)


def _v14_null_projects(db: sqlite_utils.Database) -> None:
    """Server groups and operations made by schema v4's code (commit 10da24f,
    before the service scoped them) have no project, so no project sees them:
    they are the default project's, the only one there was (an operation: its
    VM's). Found by the upgrade test (tests/fixtures/homes/v4). A group whose
    name the default project already has keeps NULL (the pair must stay unique)."""
    db.execute(
        "UPDATE groups SET project = 'default' WHERE project IS NULL "
        "AND name NOT IN (SELECT name FROM groups WHERE project = 'default')"
    )
    db.execute(
        "UPDATE operations SET project = COALESCE("
        "(SELECT vms.project FROM vms WHERE vms.id = operations.vm_id), 'default') "
        "WHERE project IS NULL"
    )


def _v15_host_attempts(db: sqlite_utils.Database) -> None:
    """A host's last connection attempt (issue 16: POST /v1/hosts answers once the
    first one has finished, up or down with the reason). last_attempt: when the
    controller's last connect to it finished (NULL: none since it was added or its
    URI changed; the heartbeat does not count); connect_error: why that connect
    failed (NULL: it connected)."""
    db.table("hosts").add_column("last_attempt", float)
    db.table("hosts").add_column("connect_error", str)


def _v16_keys(db: sqlite_utils.Database) -> None:
    """SSH keys (issue 15, Nova's keypairs): a user's OpenSSH public keys by name
    (user, name unique; `key` the normalised line, `fingerprint` ssh-keygen's
    SHA256). vms.public_keys: JSON {name: key} of the keys its cloud_init.keys
    named, copied from its creator's at create or change (as Nova copies a
    keypair into the instance: deleting the key later changes no VM)."""
    db.table("keys").create(
        {"id": str, "user": str, "name": str, "key": str, "type": str, "bits": int,
         "fingerprint": str, "created": float},
        pk="id", not_null={"user", "name", "key", "type", "fingerprint", "created"})
    db.table("keys").create_index(["user", "name"], unique=True)
    db.table("vms").add_column("public_keys", str)


def _v17_state_index(db: sqlite_utils.Database) -> None:
    """The VMs by observed state and host (issue 17, `make scale`): the prober
    (twice a second), the cluster CPU check and the console mirroring (each
    heartbeat, once per host) ask for the VMs in a few states; each ask read
    every row, domain XML and all, so that 20,000 stopped VMs on 20 hosts kept
    a quarter of a core busy with nothing to do."""
    db.table("vms").create_index(
        ["observed_state", "host"], index_name="idx_vms_observed_state_host", if_not_exists=True
    )


def _v18_group_firewall(db: sqlite_utils.Database) -> None:
    """A server group's firewall rules (issue 15: model/firewall.py's stored form, JSON;
    NULL: none), shared by its members' network filters (controller/firewall.py)."""
    db.table("groups").add_column("firewall", str)


def _v19_host_claims(db: sqlite_utils.Database) -> None:
    """Per-host claim totals kept by triggers (issue 17, `make scale`): every
    scheduling decision summed every VM's claims (JSON and all), 260 ms at 20,000
    VMs; store/claims.py says how the tables and triggers work. Filled here from
    the VMs and operations there are. And the MACs indexed (a create asks whether
    its MAC is free: a scan of every spec's NICs, 90 ms at 20,000 VMs): the first
    NIC's column, and the VMs with further NICs (store.networks.MORE_NICS); and
    the VMs with a backup schedule of their own."""
    claims.install(db)
    db.execute("CREATE INDEX IF NOT EXISTS idx_vms_mac ON vms (mac)")
    db.execute("CREATE INDEX IF NOT EXISTS idx_vms_more_nics ON vms (id) "
               "WHERE json_array_length(spec, '$.networks') > 0")
    # The VMs with a backup schedule of their own (store.backup_schedules.OWN_SCHEDULE):
    # the controller asks for them twice a minute, which read every spec.
    db.execute("CREATE INDEX IF NOT EXISTS idx_vms_own_backup_schedule ON vms (id) "
               "WHERE json_extract(spec, '$.backup.schedule') IS NOT NULL")

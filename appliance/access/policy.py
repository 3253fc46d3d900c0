"""The policy table: what each role may do, per route and per file.

One table decides every REST route (by its route template and method, as
Falcon matched it, never the raw path) and every file of the mount (by the
same file names: appliance/files.py serves both views). Deny by default: a
route or a file with no entry here is refused (403) to everyone, and the
tests generate a role x route matrix from this table and the OpenAPI
document, so a new route without a policy fails CI.

Projects are not decided here: a VM of a project the caller is not in is
not found (404, ENOENT), so that its existence is not revealed; the service
scopes every lookup to the caller's project (appliance/service/base.py).
"""
from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum

from appliance.access.principal import Principal, Role
from appliance.errors import Forbidden


class Action(StrEnum):
    READ = "read"  # see the VMs, operations, events of one's projects; hosts; images
    OWN_TOKENS = "own-tokens"  # who am I; one's own tokens and SSH keys
    VM_CHANGE = "vm-change"  # create, change, rename, delete VMs; server groups
    VM_POWER = "vm-power"  # start, stop, restart, pause (the state file)
    VM_MIGRATE = "vm-migrate"  # move a VM to another host (the host file, migrate)
    CONSOLE_INPUT = "console-input"  # type into a console (reading its log is READ)
    VM_LOCK = "vm-lock"  # lock and unlock a VM
    METRICS = "metrics"  # scrape /metrics (every project's figures)
    ADMIN = "admin"  # hosts, images, users, projects, quotas, other users' tokens


_VIEWER = frozenset({Action.READ, Action.OWN_TOKENS})
_OPERATOR = _VIEWER | {
    Action.VM_CHANGE, Action.VM_POWER, Action.VM_MIGRATE, Action.CONSOLE_INPUT, Action.VM_LOCK}
ROLE_ACTIONS: Mapping[Role, frozenset[Action]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: frozenset(_OPERATOR),
    Role.ADMIN: frozenset(Action),
    # Prometheus: the figures and nothing else (no VM, no write).
    Role.MONITOR: frozenset({Action.METRICS}),
}

# Writes to the files of a VM directory, by file name (PUT /v1/vms/NAME/FILE, or
# a write in the mount). Reading any of them is READ.
VM_FILE_WRITES: Mapping[str, Action] = {
    "state": Action.VM_POWER,
    "spec.json": Action.VM_CHANGE,
    "cpus": Action.VM_CHANGE,
    "memory": Action.VM_CHANGE,
    "host": Action.VM_MIGRATE,
    "console": Action.CONSOLE_INPUT,
    "lock": Action.VM_LOCK,
    "rebuild": Action.VM_CHANGE,
}
# Actions at a VM file's path (POST /v1/vms/NAME/FILE): the rebuild alone.
VM_FILE_ACTIONS: Mapping[str, Action] = {"rebuild": Action.VM_CHANGE}
# Writes to a snapshot directory's files (vms/NAME/snapshots/S/): `action` reverts.
SNAPSHOT_FILE_WRITES: Mapping[str, Action] = {"action": Action.VM_CHANGE}
# Writes to a pool directory's files (pools/NAME/): every one changes VMs (its members).
POOL_FILE_WRITES: Mapping[str, Action] = {
    "template.json": Action.VM_CHANGE, "replicas": Action.VM_CHANGE, "paused": Action.VM_CHANGE}
# Writes to a host directory's files: every one is the admin's.
HOST_FILE_WRITES: Mapping[str, Action] = {"state": Action.ADMIN}

# REST: (route template, method) -> the action it takes; a Mapping value picks the
# action by the route's {file} parameter (a file not in it is the admin's, whose
# request then gets the file table's 404).
Rule = Action | Mapping[str, Action]
ROUTES: Mapping[tuple[str, str], Rule] = {
    ("/v1/vms", "GET"): Action.READ,
    ("/v1/vms", "POST"): Action.VM_CHANGE,
    ("/v1/vms/{name}", "GET"): Action.READ,
    ("/v1/vms/{name}", "PATCH"): Action.VM_CHANGE,
    ("/v1/vms/{name}", "DELETE"): Action.VM_CHANGE,
    ("/v1/vms/{name}/{file}", "GET"): Action.READ,
    ("/v1/vms/{name}/{file}", "PUT"): VM_FILE_WRITES,
    ("/v1/vms/{name}/{file}", "DELETE"): VM_FILE_WRITES,  # DELETE .../lock unlocks
    ("/v1/vms/{name}/{file}", "POST"): VM_FILE_ACTIONS,  # POST .../rebuild (Nova's action)
    # Snapshots, backups, restores, clones (issue 13): listing is READ, the rest changes
    # VMs (a locked VM's refusals are the service's); backup targets name host
    # directories: the admin's.
    ("/v1/vms/{name}/snapshots", "GET"): Action.READ,
    ("/v1/vms/{name}/snapshots", "POST"): Action.VM_CHANGE,
    ("/v1/vms/{name}/snapshots/{snapshot}", "GET"): Action.READ,
    ("/v1/vms/{name}/snapshots/{snapshot}", "DELETE"): Action.VM_CHANGE,
    ("/v1/vms/{name}/snapshots/{snapshot}/revert", "POST"): Action.VM_CHANGE,
    ("/v1/vms/{name}/snapshots/{snapshot}/{file}", "GET"): Action.READ,
    ("/v1/vms/{name}/snapshots/{snapshot}/{file}", "PUT"): SNAPSHOT_FILE_WRITES,
    ("/v1/vms/{name}/clone", "POST"): Action.VM_CHANGE,
    # Issue 16: adopting takes a host's libvirt domain (no project's) and references
    # host files: the admin's. An export reads the VM.
    ("/v1/vms/adopt", "POST"): Action.ADMIN,
    ("/v1/vms/{name}/export", "GET"): Action.READ,
    # data disks and CD-ROM media (issue 14): grown, added, removed, changed live
    ("/v1/vms/{name}/disks", "GET"): Action.READ,
    ("/v1/vms/{name}/disks/{disk}", "GET"): Action.READ,
    ("/v1/vms/{name}/disks/{disk}", "PUT"): Action.VM_CHANGE,
    ("/v1/vms/{name}/disks/{disk}", "DELETE"): Action.VM_CHANGE,
    ("/v1/vms/{name}/disks/{disk}/size", "GET"): Action.READ,
    ("/v1/vms/{name}/disks/{disk}/size", "PUT"): Action.VM_CHANGE,
    ("/v1/vms/{name}/cdroms", "GET"): Action.READ,
    ("/v1/vms/{name}/cdroms/{index}", "GET"): Action.READ,
    ("/v1/vms/{name}/cdroms/{index}", "PUT"): Action.VM_CHANGE,
    ("/v1/vms/{name}/backups", "GET"): Action.READ,
    ("/v1/vms/{name}/backups", "POST"): Action.VM_CHANGE,
    ("/v1/backups", "GET"): Action.READ,
    ("/v1/backups/{backup_id}", "GET"): Action.READ,
    ("/v1/backups/{backup_id}", "DELETE"): Action.VM_CHANGE,
    ("/v1/backups/{backup_id}/restore", "POST"): Action.VM_CHANGE,
    ("/v1/backup-targets", "GET"): Action.READ,
    ("/v1/backup-targets", "POST"): Action.ADMIN,
    ("/v1/backup-targets/{name}", "GET"): Action.READ,
    ("/v1/backup-targets/{name}", "DELETE"): Action.ADMIN,
    ("/v1/operations", "GET"): Action.READ,
    ("/v1/operations/{op_id}", "GET"): Action.READ,
    ("/v1/operations/{op_id}", "DELETE"): Action.VM_CHANGE,
    ("/v1/events", "GET"): Action.READ,
    ("/v1/images", "GET"): Action.READ,
    ("/v1/images", "POST"): Action.ADMIN,
    ("/v1/images/{name}", "GET"): Action.READ,
    ("/v1/images/{name}", "PUT"): Action.ADMIN,
    ("/v1/images/{name}", "DELETE"): Action.ADMIN,
    ("/v1/hosts", "GET"): Action.READ,
    ("/v1/hosts", "POST"): Action.ADMIN,
    ("/v1/hosts/{name}", "GET"): Action.READ,
    ("/v1/hosts/{name}", "PATCH"): Action.ADMIN,
    ("/v1/hosts/{name}", "DELETE"): Action.ADMIN,
    ("/v1/hosts/{name}/{file}", "GET"): Action.READ,
    ("/v1/hosts/{name}/{file}", "PUT"): HOST_FILE_WRITES,
    ("/v1/groups", "GET"): Action.READ,
    ("/v1/groups", "POST"): Action.VM_CHANGE,
    ("/v1/groups/{name}", "GET"): Action.READ,
    ("/v1/groups/{name}", "PATCH"): Action.VM_CHANGE,
    ("/v1/groups/{name}", "DELETE"): Action.VM_CHANGE,
    # Networks (issue 15): a project's; the service asks ADMIN as well for a bridge one.
    ("/v1/networks", "GET"): Action.READ,
    ("/v1/networks", "POST"): Action.VM_CHANGE,
    ("/v1/networks/{name}", "GET"): Action.READ,
    ("/v1/networks/{name}", "DELETE"): Action.VM_CHANGE,
    # Templates: a project's are its operators' (VM_CHANGE); the service asks ADMIN
    # as well for a global one (appliance/service/templates.py).
    ("/v1/templates", "GET"): Action.READ,
    ("/v1/templates", "POST"): Action.VM_CHANGE,
    ("/v1/templates/{name}", "GET"): Action.READ,
    ("/v1/templates/{name}", "PUT"): Action.VM_CHANGE,
    ("/v1/templates/{name}", "PATCH"): Action.VM_CHANGE,
    ("/v1/templates/{name}", "DELETE"): Action.VM_CHANGE,
    # Replica pools (issue 14): their members are VMs of the pool's project.
    ("/v1/pools", "GET"): Action.READ,
    ("/v1/pools", "POST"): Action.VM_CHANGE,
    ("/v1/pools/{name}", "GET"): Action.READ,
    ("/v1/pools/{name}", "PATCH"): Action.VM_CHANGE,
    ("/v1/pools/{name}", "DELETE"): Action.VM_CHANGE,
    ("/v1/pools/{name}/{file}", "GET"): Action.READ,
    ("/v1/pools/{name}/{file}", "PUT"): POOL_FILE_WRITES,
    # SSH keys (issue 15): one's own, as tokens (a key changes no VM until a spec names
    # it); an admin reads and deletes anyone's (?user=, the service's check).
    ("/v1/keys", "GET"): Action.OWN_TOKENS,
    ("/v1/keys", "POST"): Action.OWN_TOKENS,
    ("/v1/keys/{name}", "GET"): Action.OWN_TOKENS,
    ("/v1/keys/{name}", "DELETE"): Action.OWN_TOKENS,
    ("/v1/me", "GET"): Action.OWN_TOKENS,
    ("/v1/users", "GET"): Action.ADMIN,
    ("/v1/users", "POST"): Action.ADMIN,
    ("/v1/users/{name}", "GET"): Action.ADMIN,
    ("/v1/users/{name}", "PATCH"): Action.ADMIN,
    ("/v1/users/{name}", "DELETE"): Action.ADMIN,
    # Tokens: one's own (the service refuses another user's unless admin).
    ("/v1/tokens", "GET"): Action.OWN_TOKENS,
    ("/v1/tokens", "POST"): Action.OWN_TOKENS,
    ("/v1/tokens/{token_id}", "GET"): Action.OWN_TOKENS,
    ("/v1/tokens/{token_id}", "DELETE"): Action.OWN_TOKENS,
    # A console ticket for a VM one may see; its WebSocket is read-write only for
    # roles that may CONSOLE_INPUT (WEBSOCKETS below).
    ("/v1/tickets", "POST"): Action.READ,
    ("/v1/projects", "GET"): Action.READ,  # the caller's projects (all, for an admin)
    ("/v1/projects", "POST"): Action.ADMIN,
    ("/v1/projects/{name}", "GET"): Action.READ,
    ("/v1/projects/{name}", "PATCH"): Action.ADMIN,
    ("/v1/projects/{name}", "DELETE"): Action.ADMIN,
    ("/metrics", "GET"): Action.METRICS,
}

# WebSockets (appliance/api/websocket.py, in the ASGI front, not Falcon's router): the
# action that attaches to each; typing into it (console input, VNC keys and pointer)
# takes WEBSOCKET_INPUT as well, and without it the session is read-only.
WEBSOCKETS: Mapping[str, Action] = {
    "/v1/vms/{name}/console": Action.READ,
    "/v1/vms/{name}/vnc": Action.READ,
}
WEBSOCKET_INPUT = Action.CONSOLE_INPUT

# A VM's snapshots directory, as the mount's policy names it: vms/NAME/snapshots/S... is
# decided as if SNAPSHOTS_DIR were a top directory holding S.
SNAPSHOTS_DIR = "vms/NAME/snapshots"
# A VM's disks and CD-ROM drives (issue 14), the same way: vms/NAME/disks/D/size is
# (DISKS_DIR, D, "size"), vms/NAME/cdroms/N is (CDROMS_DIR, N).
DISKS_DIR, CDROMS_DIR = "vms/NAME/disks", "vms/NAME/cdroms"
# The mount: what each change of the tree takes, by (top directory, verb). A write
# (or truncate) of a file goes by the file tables above; reading anything is READ;
# a verb or a directory with no entry is refused to everyone (EACCES).
MOUNT_CHANGES: Mapping[tuple[str, str], Rule] = {
    ("vms", "mkdir"): Action.VM_CHANGE,  # mkdir vms/NAME creates a VM
    ("vms", "rmdir"): Action.VM_CHANGE,  # deletes it
    ("vms", "rename"): Action.VM_CHANGE,  # mv vms/A vms/B
    ("vms", "write"): VM_FILE_WRITES,  # vms/NAME/FILE
    ("vms", "unlink"): VM_FILE_WRITES,  # rm vms/NAME/lock: unlock
    ("hosts", "mkdir"): Action.ADMIN,  # stages a host
    ("hosts", "rmdir"): Action.ADMIN,
    ("hosts", "write"): {**HOST_FILE_WRITES, "uri": Action.ADMIN},  # uri: a staged host's
    ("groups", "create"): Action.VM_CHANGE,  # groups/NAME.json, written once
    ("groups", "write"): Action.VM_CHANGE,
    ("groups", "unlink"): Action.VM_CHANGE,
    # networks/NAME.json (issue 15): as groups; a bridge one asks ADMIN too (the service).
    ("networks", "create"): Action.VM_CHANGE,
    ("networks", "write"): Action.VM_CHANGE,
    ("networks", "unlink"): Action.VM_CHANGE,
    # templates/NAME.json: made by a write or cp, replaced by a write, deleted by rm (a
    # global template's change takes ADMIN as well: the service's check)
    ("templates", "create"): Action.VM_CHANGE,
    ("templates", "write"): Action.VM_CHANGE,
    ("templates", "unlink"): Action.VM_CHANGE,
    # vms/NAME/snapshots/S: mkdir takes a snapshot, rmdir deletes it, S/action reverts
    (SNAPSHOTS_DIR, "mkdir"): Action.VM_CHANGE,
    (SNAPSHOTS_DIR, "rmdir"): Action.VM_CHANGE,
    (SNAPSHOTS_DIR, "write"): SNAPSHOT_FILE_WRITES,
    # images/FILE: `cp FILE images/` imports an image, as PUT /v1/images/NAME (its writes and
    # truncates are decided as this: fs/image_imports.py); rm images/NAME.json deletes one
    ("images", "create"): Action.ADMIN,
    ("images", "unlink"): Action.ADMIN,
    ("pools", "mkdir"): Action.VM_CHANGE,  # mkdir pools/NAME: a pool of 0 replicas
    ("pools", "rmdir"): Action.VM_CHANGE,  # deletes it and its members
    ("pools", "write"): POOL_FILE_WRITES,  # pools/NAME/FILE
    # vms/NAME/disks/D: mkdir adds a disk, rmdir removes it, D/size grows it
    (DISKS_DIR, "mkdir"): Action.VM_CHANGE,
    (DISKS_DIR, "rmdir"): Action.VM_CHANGE,
    (DISKS_DIR, "write"): {"size": Action.VM_CHANGE},
    (CDROMS_DIR, "write"): Action.VM_CHANGE,  # vms/NAME/cdroms/N: insert or eject
}
MOUNT_VERBS = ("read", "mkdir", "rmdir", "rename", "create", "write", "unlink")


def mount_action(path: tuple[str, ...], verb: str) -> Action | None:
    """The action a request of the mount takes on path; None: refused to everyone.
    projects/P/REST is REST in project P (the caller's project is decided apart)."""
    if verb == "read":
        return Action.READ
    if len(path) >= 3 and path[0] == "projects":
        path = path[2:]
    if len(path) >= 4 and path[0] == "vms" and path[2] == "snapshots":
        path = (SNAPSHOTS_DIR, *path[3:])
    if len(path) >= 4 and path[0] == "vms" and path[2] in ("disks", "cdroms"):
        path = (DISKS_DIR if path[2] == "disks" else CDROMS_DIR, *path[3:])
    rule = MOUNT_CHANGES.get((path[0] if path else "", verb))
    if isinstance(rule, Action):  # a name in the top directory: vms/NAME, groups/NAME.json
        return rule if len(path) == 2 else None
    if rule is None or len(path) != 3:
        return None
    return rule.get(path[2])  # a file of vms/NAME/ or hosts/NAME/


# HEAD, on a resource that answers it, reads as GET does (Falcon 4 answers 405 where
# a resource has no on_head).
READ_ALIASES = {"HEAD": "GET"}


def action_for(template: str | None, method: str, params: Mapping[str, str]) -> Action | None:
    """The action a matched route takes; None when the table has no entry (refused)."""
    if template is None:
        return None
    rule = ROUTES.get((template, READ_ALIASES.get(method, method)))
    if rule is None or isinstance(rule, Action):
        return rule
    return rule.get(params.get("file", ""), Action.ADMIN)


def allows(role: Role, action: Action) -> bool:
    return action in ROLE_ACTIONS.get(role, frozenset())


def least_role(action: Action) -> Role:
    """The weakest role allowed the action (for the refusal's reason)."""
    for role in (Role.MONITOR, Role.VIEWER, Role.OPERATOR, Role.ADMIN):
        if allows(role, action):
            return role
    return Role.ADMIN


def check(principal: Principal, action: Action) -> None:
    """Forbidden (403, EACCES) unless the caller's role allows the action."""
    if not allows(principal.role, action):
        raise Forbidden(
            f"{principal.user} has the role {principal.role}, which may not {action} "
            f"(needs {least_role(action)})",
            "role",
        )

"""appliance/access/policy.py: the roles' actions, the table's lookups and the
refusal's reason. (The role x route matrix over the real app is
tests/unit/appliance/api/test_policy_matrix.py.)"""
from __future__ import annotations

import errno

import pytest

from appliance.access import policy
from appliance.access.policy import Action
from appliance.access.principal import Principal, Role
from appliance.errors import Forbidden

LEAST = {
    Action.READ: Role.VIEWER,
    Action.OWN_TOKENS: Role.VIEWER,
    Action.VM_CHANGE: Role.OPERATOR,
    Action.VM_POWER: Role.OPERATOR,
    Action.VM_MIGRATE: Role.OPERATOR,
    Action.CONSOLE_INPUT: Role.OPERATOR,
    Action.VM_LOCK: Role.OPERATOR,
    Action.METRICS: Role.MONITOR,
    Action.ADMIN: Role.ADMIN,
}


def test_every_action_has_its_least_role():
    assert set(LEAST) == set(Action)
    for action, role in LEAST.items():
        assert policy.least_role(action) == role, action


def test_the_roles_nest_and_the_monitor_scrapes_alone():
    actions = policy.ROLE_ACTIONS
    assert set(actions) == set(Role)
    assert actions[Role.VIEWER] < actions[Role.OPERATOR] < actions[Role.ADMIN] == frozenset(Action)
    assert actions[Role.MONITOR] == {Action.METRICS}
    assert Action.METRICS not in actions[Role.OPERATOR]  # every project's figures: not theirs
    assert Action.ADMIN not in actions[Role.OPERATOR]


def test_a_viewer_reads_and_changes_nothing():
    assert {a for a in Action if policy.allows(Role.VIEWER, a)} == {Action.READ, Action.OWN_TOKENS}


def test_an_unknown_role_may_do_nothing():
    for action in Action:
        assert not policy.allows("root", action)  # type: ignore[arg-type]


@pytest.mark.parametrize("action", list(Action))
@pytest.mark.parametrize("role", list(Role))
def test_check_refuses_with_the_role_and_the_role_needed(role, action):
    alice = Principal(user="alice", role=role)
    if policy.allows(role, action):
        assert policy.check(alice, action) is None
        return
    with pytest.raises(Forbidden) as refused:
        policy.check(alice, action)
    err = refused.value
    assert err.http_status == 403 and err.errno == errno.EACCES and err.field == "role"
    assert err.reason == (f"alice has the role {role}, which may not {action} "
                          f"(needs {LEAST[action]})")


def test_action_for_a_plain_route():
    assert policy.action_for("/v1/vms", "GET", {}) == Action.READ
    assert policy.action_for("/v1/vms", "POST", {}) == Action.VM_CHANGE
    assert policy.action_for("/v1/hosts/{name}", "DELETE", {"name": "h1"}) == Action.ADMIN
    assert policy.action_for("/metrics", "GET", {}) == Action.METRICS


def test_head_is_decided_as_get():
    assert policy.action_for("/v1/vms/{name}", "HEAD", {}) == Action.READ


@pytest.mark.parametrize("template, method", [
    (None, "GET"),  # no route matched: refused
    ("/v1/nothing", "GET"),
    ("/v1/vms", "DELETE"),  # a method the table has no entry for
    ("/v1/vms", "get"),  # Falcon hands the method upper-case; anything else is no entry
    ("/v1/vms/", "GET"),  # templates are matched exactly, never as paths
])
def test_no_entry_is_no_action(template, method):
    assert policy.action_for(template, method, {}) is None


def test_file_writes_are_decided_per_file():
    route = "/v1/vms/{name}/{file}"
    for name, action in policy.VM_FILE_WRITES.items():
        assert policy.action_for(route, "PUT", {"name": "web1", "file": name}) == action
    assert policy.action_for(route, "PUT", {"file": "state"}) == Action.VM_POWER
    assert policy.action_for(route, "PUT", {"file": "host"}) == Action.VM_MIGRATE
    assert policy.action_for(route, "DELETE", {"file": "lock"}) == Action.VM_LOCK
    # A file without a write entry (read-only ones, made-up names) is the admin's.
    for name in ("addresses", "domain.xml", "events", "../state", "", "STATE"):
        assert policy.action_for(route, "PUT", {"file": name}) == Action.ADMIN, name
    assert policy.action_for(route, "PUT", {}) == Action.ADMIN
    # Reading any file is reading.
    assert policy.action_for(route, "GET", {"file": "console"}) == Action.READ
    host = "/v1/hosts/{name}/{file}"
    assert policy.action_for(host, "PUT", {"file": "state"}) == Action.ADMIN
    assert policy.action_for(host, "PUT", {"file": "uri"}) == Action.ADMIN


def test_every_table_entry_is_an_action_or_a_file_table():
    for (template, method), rule in policy.ROUTES.items():
        assert template.startswith("/") and method == method.upper()
        assert isinstance(rule, Action) or rule in (policy.VM_FILE_WRITES,
                                                    policy.HOST_FILE_WRITES,
                                                    policy.SNAPSHOT_FILE_WRITES,
                                                    policy.POOL_FILE_WRITES,
                                                    policy.VM_FILE_ACTIONS), template


# -- what the table says, by route family (issue 11's roles) -------------------------------------
ADMIN_ONLY = ("/v1/hosts", "/v1/images", "/v1/users", "/v1/projects")
# POST /v1/tickets: a one-use ticket to watch (and, for a role that may type, type
# into) a console; the WebSocket decides the rest (policy.WEBSOCKETS).
READING_POSTS = {("/v1/tickets", "POST")}


def _actions(rule: policy.Rule) -> set[Action]:
    return {rule} if isinstance(rule, Action) else {*rule.values(), Action.ADMIN}


@pytest.mark.parametrize("route", sorted(policy.ROUTES), ids=" ".join)
def test_each_entry_keeps_to_the_roles_of_the_issue(route):
    template, method = route
    actions = _actions(policy.ROUTES[route])
    family = "/".join(template.split("/")[:3])
    if route in READING_POSTS:
        # A POST that changes nothing but asks for a way to read: every role that reads.
        assert actions == {Action.READ}
    elif method != "GET":
        # A viewer changes nothing; hosts, images, users and projects are the admin's.
        assert not any(policy.allows(Role.VIEWER, a) for a in actions - {Action.OWN_TOKENS})
        assert Action.READ not in actions
        if family in ADMIN_ONLY:
            assert actions == {Action.ADMIN}
        if family == "/v1/tokens":
            assert actions == {Action.OWN_TOKENS}  # the service keeps each to their own
    elif family in ("/v1/users",):
        assert actions == {Action.ADMIN}
    elif template == "/metrics":
        assert actions == {Action.METRICS}
    else:
        # Every other read is for every role but the monitor's (the viewer's READ).
        assert actions <= {Action.READ, Action.OWN_TOKENS}


# -- issue 13: snapshots, backups, restores, clones, backup targets ------------------------------
def test_snapshots_backups_and_clones_are_operators_work_and_targets_the_admin_s():
    """The contract: taking, deleting, reverting snapshots, backups, restores, clones and
    deleting a backup are VM_CHANGE; listing is READ; backup targets: GET READ, writes ADMIN."""
    changes = [("/v1/vms/{name}/snapshots", "POST"), ("/v1/vms/{name}/snapshots/{snapshot}",
                                                       "DELETE"),
               ("/v1/vms/{name}/snapshots/{snapshot}/revert", "POST"),
               ("/v1/vms/{name}/clone", "POST"), ("/v1/vms/{name}/backups", "POST"),
               ("/v1/backups/{backup_id}", "DELETE"), ("/v1/backups/{backup_id}/restore", "POST")]
    for route in changes:
        assert policy.ROUTES[route] == Action.VM_CHANGE, route
    assert policy.action_for("/v1/vms/{name}/snapshots/{snapshot}/{file}", "PUT",
                             {"file": "action"}) == Action.VM_CHANGE
    assert policy.action_for("/v1/vms/{name}/snapshots/{snapshot}/{file}", "PUT",
                             {"file": "info.json"}) == Action.ADMIN  # read-only: no entry
    for template in ("/v1/backup-targets", "/v1/backup-targets/{name}"):
        assert policy.ROUTES[(template, "GET")] == Action.READ
    assert policy.ROUTES[("/v1/backup-targets", "POST")] == Action.ADMIN
    assert policy.ROUTES[("/v1/backup-targets/{name}", "DELETE")] == Action.ADMIN


@pytest.mark.parametrize("prefix", [(), ("projects", "web")])
def test_the_mount_s_snapshot_directories(prefix):
    """mkdir/rmdir vms/NAME/snapshots/S and writing S/action are VM_CHANGE; nothing else
    below vms/NAME/snapshots or vms/NAME/backups changes (None: refused to everyone)."""
    def action(verb: str, *path: str):
        return policy.mount_action((*prefix, "vms", "web1", *path), verb)

    assert action("mkdir", "snapshots", "s1") == Action.VM_CHANGE
    assert action("rmdir", "snapshots", "s1") == Action.VM_CHANGE
    assert action("write", "snapshots", "s1", "action") == Action.VM_CHANGE
    assert action("write", "snapshots", "s1", "info.json") is None
    assert action("mkdir", "snapshots", "s1", "deeper") is None
    assert action("rename", "snapshots", "s1") is None
    assert action("create", "snapshots", "s1", "x") is None
    assert action("write", "snapshots") is None
    assert action("mkdir", "backups", "b1") is None
    assert action("write", "backups", "b1.json") is None
    assert action("unlink", "backups", "b1.json") is None
    assert action("read", "backups", "b1.json") == Action.READ
    assert policy.mount_action(("backup-targets", "nas.json"), "write") is None
    assert policy.mount_action(("backup-targets", "nas.json"), "create") is None

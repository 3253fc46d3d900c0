"""The mount's callers (fs/identity.py), its policy (fs/guard.py, policy.mount_action) and its map
(appliance/access/mountmap.py), without a mount: FUSE operations called as the kernel would."""
from __future__ import annotations

import errno
import os
import subprocess
import time
from types import SimpleNamespace

import pyfuse3
import pytest
import trio

from appliance.access import mountmap, policy
from appliance.access.principal import SYSTEM, Principal, Role, acting_as, caller
from appliance.errors import Invalid, NotFound
from fs import identity
from fs.identity import Grant, Identities, combine, thread_groups
from fs.guard import makes_names as _makes_names
from fs.operations import ApplianceFS

VMOPS, VIEWERS, WHEEL = 5100, 5101, 5102
UID = 5001


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleeper():
    """A process of uid 5001, gid 5001, in groups 5100 and 5101: a caller whose groups /proc knows."""
    proc = subprocess.Popen(["setpriv", f"--reuid={UID}", f"--regid={UID}", f"--groups={VMOPS},{VIEWERS}",
                             "sleep", "60"])
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:  # until setpriv has exec'd sleep with the new ids
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                if f"\t{UID}\t" in next(line for line in f if line.startswith("Uid:")):
                    break
        except (OSError, StopIteration):
            pass
        time.sleep(0.01)
    yield proc
    proc.kill()
    proc.wait()


@pytest.fixture
def projects(store):
    for name in ("web", "db"):
        store.insert_project({"name": name, "description": "", "quota": {}, "created": 0.0})
    return store


def test_groups_come_from_proc_only_while_the_thread_is_the_caller(sleeper):
    assert thread_groups(sleeper.pid, UID, UID) == {VMOPS, VIEWERS}
    assert thread_groups(sleeper.pid, UID + 1, UID) == frozenset()  # another uid asked: not its groups
    assert thread_groups(sleeper.pid, UID, UID + 1) == frozenset()
    assert thread_groups(0, UID, UID) == frozenset()  # a pid the mount cannot see
    sleeper.kill()
    sleeper.wait()
    assert thread_groups(sleeper.pid, UID, UID) == frozenset()  # gone: the primary gid alone counts


def test_roles_combine_per_project_the_strongest_winning():
    role, project, roles, user = combine([Grant(Role.VIEWER, ("web",)), Grant(Role.OPERATOR, ("web",)),
                                          Grant(Role.VIEWER, ("db",))])
    assert (role, project, roles, user) == (Role.OPERATOR, "web", {"web": Role.OPERATOR, "db": Role.VIEWER}, None)
    # a user entry's own first project comes first, whatever the groups give
    assert combine([Grant(Role.OPERATOR, ("web",)), Grant(Role.VIEWER, ("db", "web"), "carol")])[:2] == \
        (Role.VIEWER, "db")
    assert combine([Grant(Role.VIEWER, ("web",)), Grant(Role.ADMIN, ("db",))])[0] == Role.ADMIN
    assert combine([]) is None
    principal = Principal("x", Role.OPERATOR, ("web", "db"), project="web",
                          project_roles=(("db", Role.VIEWER), ("web", Role.OPERATOR)))
    assert principal.in_project("db").role == Role.VIEWER and principal.in_project("web").role == Role.OPERATOR


def test_the_map_names_callers_by_uid_and_groups(projects, sleeper):
    store, clock = projects, Clock()
    store.insert_user({"name": "carol", "role": "viewer", "projects": ["db"], "created": 0.0, "disabled": 0})
    store.insert_user({"name": "dave", "role": "admin", "projects": ["default"], "created": 0.0, "disabled": 1})
    mountmap.set_group(store, str(VMOPS), "operator", "web")
    mountmap.set_group(store, str(VIEWERS), "viewer", "db")
    mountmap.set_user(store, "5005", "carol")
    mountmap.set_user(store, "5006", "dave")
    ids = Identities(store, owner_uid=0, clock=clock)
    root = ids.principal(0, 0, 1)
    assert root is not None and root.is_admin and root.uid == 0 and root.source == "mount"
    assert ids.principal(5003, 5003, 0) is None  # unmapped: nothing
    assert ids.principal(5006, 5006, 0) is None  # a disabled user: nothing
    by_primary = ids.principal(5004, VMOPS, 0)
    assert by_primary is not None and (by_primary.role, by_primary.project) == (Role.OPERATOR, "web")
    assert by_primary.user == "unix:5004" and by_primary.who() == "unix:5004 (uid 5004)"
    both = ids.principal(UID, UID, sleeper.pid)  # the supplementary groups, from /proc
    assert both is not None and (both.role, both.project, both.projects) == (Role.OPERATOR, "web", ("web", "db"))
    assert both.in_project("db").role == Role.VIEWER
    carol = ids.principal(5005, 5005, 0)
    assert carol is not None and (carol.user, carol.role, carol.project) == ("carol", Role.VIEWER, "db")
    for pid in range(10_000, 10_000 + 2 * identity.GROUPS_CACHE):  # the groups cache stays bounded
        ids.principal(5004, VMOPS, pid)
    assert len(ids._thread_groups) == identity.GROUPS_CACHE
    # a change counts after MAP_SECONDS, not before
    mountmap.remove(store, "group", str(VMOPS))
    assert ids.principal(5004, VMOPS, 0) is not None
    clock.now += identity.MAP_SECONDS
    assert ids.principal(5004, VMOPS, 0) is None


def test_the_mount_group_is_an_operator_in_default_unless_the_map_names_it(projects):
    ids = Identities(projects, owner_uid=0, mount_group=WHEEL, clock=Clock())
    member = ids.principal(5001, WHEEL, 0)
    assert member is not None and (member.role, member.project) == (Role.OPERATOR, "default")
    mountmap.set_group(projects, str(WHEEL), "viewer", "web")
    ids = Identities(projects, owner_uid=0, mount_group=WHEEL, clock=Clock())
    member = ids.principal(5001, WHEEL, 0)
    assert member is not None and (member.role, member.project) == (Role.VIEWER, "web")


def test_the_mount_table_denies_by_default():
    for file, action in policy.VM_FILE_WRITES.items():
        assert policy.mount_action(("vms", "web1", file), "write") == action
    assert policy.mount_action(("vms", "web1", "events"), "write") is None
    assert policy.mount_action(("vms", "web1", "x"), "mkdir") is None
    assert policy.mount_action(("images", "demo.json"), "write") is None
    assert policy.mount_action(("hosts", "h2"), "mkdir") == policy.Action.ADMIN
    assert policy.mount_action(("groups", "g.json"), "create") == policy.Action.VM_CHANGE
    assert policy.mount_action(("projects", "web", "vms", "a", "state"), "write") == policy.Action.VM_POWER
    assert policy.mount_action((), "read") == policy.Action.READ
    assert [d for d in ((), ("vms",), ("hosts",), ("groups",), ("images",), ("vms", "a")) if _makes_names(d)] == \
        [("vms",), ("hosts",), ("groups",), ("images",)]  # images/: cp FILE images/, rm (issue 16)


def test_a_worker_thread_acts_as_its_task_and_tasks_do_not_share_a_caller():
    seen: dict[str, str] = {}

    async def one(name: str) -> None:
        with acting_as(Principal(name, Role.VIEWER)):
            await trio.sleep(0.01)  # the other task runs meanwhile
            seen[name] = await trio.to_thread.run_sync(lambda: caller().user)

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, "alice")
            nursery.start_soon(one, "bob")

    trio.run(main)
    assert seen == {"alice": "alice", "bob": "bob"} and caller() is SYSTEM


def test_the_map_refuses_bad_entries(projects):
    for name in ("bad name", "Alice", "a" * 40, "-x", "99999999999", ""):
        with pytest.raises(Invalid):
            mountmap.set_group(projects, name, "viewer", "web")
    with pytest.raises(Invalid):
        mountmap.set_group(projects, "vmops", "monitor", "web")
    with pytest.raises(NotFound):
        mountmap.set_group(projects, "vmops", "operator", "nope")
    with pytest.raises(NotFound):
        mountmap.set_user(projects, "alice", "nobody-here")
    with pytest.raises(NotFound):
        mountmap.remove(projects, "group", "vmops")
    assert projects.list_unix_identities() == []
    entry = mountmap.set_group(projects, "root", "operator", "web")
    assert entry["known"] and mountmap.entries(projects) == [entry]
    assert "mount-map" in [e["kind"] for e in projects.list_events()]


def _ctx(uid: int, gid: int) -> SimpleNamespace:
    return SimpleNamespace(uid=uid, gid=gid, pid=0, umask=0o022)


def test_operations_refuse_with_eacces_and_a_refused_event(service):
    with acting_as(SYSTEM):
        service.create_vm({"name": "web1", "state": "stopped"})
    mountmap.set_group(service.store, str(VIEWERS), "viewer", "default")
    fs = ApplianceFS(service)
    viewer, nobody = _ctx(5002, VIEWERS), _ctx(5003, 5003)

    async def main() -> list[int]:
        vms = (await fs.lookup(pyfuse3.ROOT_INODE, b"vms", viewer)).st_ino
        web1 = (await fs.lookup(vms, b"web1", viewer)).st_ino
        state = (await fs.lookup(web1, b"state", viewer)).st_ino
        info = await fs.open(state, os.O_RDONLY, viewer)
        assert await fs.read(info.fh, 0, 100) == b"provisioning\n"  # no controller here
        await fs.release(info.fh)
        codes = []
        for call in (lambda: fs.open(state, os.O_WRONLY, viewer), lambda: fs.mkdir(vms, b"x", 0o755, viewer),
                     lambda: fs.lookup(vms, b"web1", nobody), lambda: fs.getattr(state, nobody)):
            with pytest.raises(pyfuse3.FUSEError) as caught:
                await call()
            codes.append(caught.value.errno)
        return codes

    assert trio.run(main) == [errno.EACCES] * 4
    with acting_as(SYSTEM):
        refused = [(e["actor"], e["credential"], e["message"], e["result"])
                   for e in service.list_events() if e["kind"] == "refused"]
        assert service.list_vms()[0]["name"] == "web1" and len(service.list_vms()) == 1
    assert len(refused) == 3, refused  # the second read refused to 5003 within a minute is not recorded
    assert refused[0][:3] == ("unix:5002", "uid 5002", "write vms/web1/state")
    assert refused[2][:2] == ("unix:5003", "uid 5003") and "uid 5003 (gid 5003) has no entry" in refused[2][3]


def test_projects_p_is_decided_by_the_role_in_p_not_by_the_default_projects(service, sleeper):
    """Security review (issue 11): a caller who is operator in web (group VMOPS) and viewer in
    db (group VIEWERS) is a viewer under projects/db/: writing there is EACCES, and the VM of
    db is unchanged (the guard used the role of the caller's default project, web's)."""
    service.store.insert_project({"name": "db", "description": "", "quota": {}, "created": 0.0})
    service.store.insert_project({"name": "web", "description": "", "quota": {}, "created": 0.0})
    with acting_as(SYSTEM.in_project("db")):
        service.create_vm({"name": "data1", "state": "stopped"})
    mountmap.set_group(service.store, str(VMOPS), "operator", "web")
    mountmap.set_group(service.store, str(VIEWERS), "viewer", "db")
    fs = ApplianceFS(service)
    both = SimpleNamespace(uid=UID, gid=UID, pid=sleeper.pid, umask=0o022)

    async def main() -> int:
        node = pyfuse3.ROOT_INODE
        for name in (b"projects", b"db", b"vms", b"data1", b"state"):
            node = (await fs.lookup(node, name, both)).st_ino
        with pytest.raises(pyfuse3.FUSEError) as caught:
            info = await fs.open(node, os.O_WRONLY, both)
            await fs.write(info.fh, 0, b"running\n")
            await fs.release(info.fh)
        return caught.value.errno

    assert trio.run(main) == errno.EACCES
    with acting_as(SYSTEM.in_project("db")):
        assert service.get_vm("data1")["desired_state"] == "stopped"


def test_an_unmapped_callers_refused_changes_do_not_grow_the_log_per_call(service):
    """Security review (issue 11): a uid the map does not name reaches vms/ through the
    kernel's cache of the top directories (someone else's lookup) and loops `mkdir vms/x`:
    each refusal was an event (a SQLite write), without bound, by someone with no account
    (as a REST request without a token is not recorded). Like its refused reads, its refused
    changes are recorded once per READ_REFUSALS_EVERY."""
    mountmap.set_group(service.store, str(VIEWERS), "viewer", "default")  # the map names someone
    fs = ApplianceFS(service)
    root, stranger = _ctx(0, 0), _ctx(5003, 5003)

    async def main() -> list[int]:
        vms = (await fs.lookup(pyfuse3.ROOT_INODE, b"vms", root)).st_ino  # the kernel's cache
        codes = []
        for n in range(20):
            with pytest.raises(pyfuse3.FUSEError) as caught:
                await fs.mkdir(vms, f"x{n}".encode(), 0o755, stranger)
            codes.append(caught.value.errno)
        return codes

    assert trio.run(main) == [errno.EACCES] * 20
    with acting_as(SYSTEM):
        refused = [e for e in service.list_events(all_projects=True) if e["kind"] == "refused"]
        assert len(refused) == 1, [e["message"] for e in refused]

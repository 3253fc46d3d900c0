"""The mount for several users (issue 11): real shell commands run as other uids
(setpriv, numeric uids and gids with no passwd or group entry) on a real FUSE
mount, mapped with `vmctl mount-map`, checked by errno, by the store, and by the
`refused` events."""
from __future__ import annotations

import errno
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.access import mountmap, policy
from appliance.access.principal import SYSTEM, Role, acting_as
from appliance.files import VM_FILES
from tests.fs.conftest import ROOT, Mount

EACCES = os.strerror(errno.EACCES)
ENOENT = os.strerror(errno.ENOENT)

# gids of the map's groups, and the uids that run commands (none has a passwd entry).
VMOPS, VIEWERS = 5100, 5101
OPERATOR, VIEWER, NOBODY, PRIMARY, CAROL = 5001, 5002, 5003, 5004, 5005


def run_as(uid: int, command: str, cwd: Path, gid: int | None = None,
           groups: tuple[int, ...] = ()) -> subprocess.CompletedProcess:
    """command in bash as uid (primary gid: gid, or uid), in exactly these supplementary groups."""
    who = [f"--reuid={uid}", f"--regid={uid if gid is None else gid}",
           f"--groups={','.join(map(str, groups))}" if groups else "--clear-groups"]
    return subprocess.run(["setpriv", *who, "bash", "-c", command], cwd=cwd, capture_output=True,
                          text=True, timeout=60, check=False)


def vmctl(home: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "--home", str(home), *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)


def refusals(m: Mount) -> list[str]:
    with acting_as(SYSTEM):
        return [f"{e['actor']} ({e['credential']}): {e['message']}: {e['result']}"
                for e in m.service.list_events(all_projects=True) if e["kind"] == "refused"]


def in_web(m: Mount, name: str) -> dict:
    with acting_as(SYSTEM.in_project("web")):
        return m.service.get_vm(name)


@pytest.fixture
def team(tmp_path, open_dir) -> Iterator[Mount]:
    """A mount with project web: vmops operate it, viewers see it, carol is a viewer user of it."""
    m = Mount(tmp_path, mnt=open_dir / "mnt")
    try:
        m.start()
        store = m.service.store
        store.insert_project({"name": "web", "description": "", "quota": {}, "created": time.time()})
        store.insert_user({"name": "carol", "role": "viewer", "projects": ["web"],
                           "created": time.time(), "disabled": 0})
        for args in (("group", str(VMOPS), "--role", "operator", "--project", "web"),
                     ("group", str(VIEWERS), "--role", "viewer", "--project", "web"),
                     ("user", str(CAROL), "--as", "carol")):
            result = vmctl(m.home, "mount-map", *args)
            assert result.returncode == 0, result.stderr
        time.sleep(2.1)  # the mount reads its map again at most every 2 s (fs/identity.py)
        m.mkvm("db1")  # root's: an admin in the default project
        yield m
    finally:
        m.stop()


def test_a_vmops_member_runs_a_vm_of_web_and_nobody_else_changes_it(team):
    m = team
    result = run_as(OPERATOR, "mkdir vms/web1 && echo running > vms/web1/state && cat vms/web1/state"
                              " && ls vms", m.mnt, groups=(VMOPS,))
    assert result.returncode == 0, result.stderr
    assert result.stdout == "running\nweb1\n"  # web's VMs alone: db1 is the default project's
    assert in_web(m, "web1")["desired_state"] == "running"
    assert run_as(OPERATOR, "cat vms/db1/state", m.mnt, groups=(VMOPS,)).stderr.count(ENOENT) == 1

    # a viewer of web reads it and changes nothing; so does carol (a viewer user)
    for uid, groups in ((VIEWER, (VIEWERS,)), (CAROL, ())):
        result = run_as(uid, "cat vms/web1/state", m.mnt, groups=groups)
        assert (result.returncode, result.stdout) == (0, "running\n"), result.stderr
        result = run_as(uid, "echo stopped > vms/web1/state; echo 2 > vms/web1/cpus; mkdir vms/web2;"
                             " rmdir vms/web1; mv vms/web1 vms/web9", m.mnt, groups=groups)
        assert result.stderr.count(EACCES) == 5, result.stderr
    vm = in_web(m, "web1")
    assert (vm["desired_state"], vm["spec"]["cpus"]) == ("running", 1)
    assert [v["name"] for v in m.service.list_vms()] == ["db1"]  # root's project: no web2, no web9
    refused = refusals(m)
    assert any(r.startswith("unix:5002 (uid 5002): write vms/web1/state:") and "viewer" in r
               for r in refused), refused
    assert any(r.startswith("carol (uid 5005): mkdir vms/web2:") for r in refused), refused
    with acting_as(SYSTEM.in_project("web")):  # the VM's own events show who was refused
        assert "refused" in [e["kind"] for e in m.service.list_events("web1")]

    # an unmapped uid: every request EACCES, nothing changed, the refusal recorded
    result = run_as(NOBODY, "ls vms; ls .; cat vms/web1/state; echo stopped > vms/web1/state;"
                            " mkdir vms/x; cat hosts/local/state", m.mnt, gid=VMOPS + 50)
    assert result.stderr.count(EACCES) == 6, result.stderr
    assert in_web(m, "web1")["desired_state"] == "running"
    assert any("uid 5003 (gid 5150) has no entry in the mount's map" in r for r in refusals(m))
    # nor does the kernel answer them from what it cached for root a moment ago
    for _ in range(3):
        assert m.sh("stat vms/db1/state >/dev/null").returncode == 0
        result = run_as(NOBODY, "stat vms/db1/state", m.mnt)
        assert result.returncode == 1 and EACCES in result.stderr, result.stdout
    assert stat.S_IMODE(os.stat(m.mnt / "vms" / "db1" / "state").st_mode) == 0o666  # the policy says who

    # a member by the primary gid alone is a member; hosts stay the admins'
    result = run_as(PRIMARY, "echo 2 > vms/web1/cpus", m.mnt, gid=VMOPS)
    assert result.returncode == 0, result.stderr
    assert in_web(m, "web1")["spec"]["cpus"] == 2
    result = run_as(OPERATOR, "echo disabled > hosts/local/state", m.mnt, groups=(VMOPS,))
    assert EACCES in result.stderr and m.service.get_host("local")["state"] == "enabled"
    # root is admin
    result = m.sh("echo disabled > hosts/local/state && echo enabled > hosts/local/state && ls vms")
    assert (result.returncode, result.stdout) == (0, "db1\n"), result.stderr


def test_the_map_changes_take_effect_without_a_new_mount(team):
    m = team
    assert run_as(OPERATOR, "mkdir vms/web1", m.mnt, groups=(VMOPS,)).returncode == 0
    assert vmctl(m.home, "mount-map", "rm", "group", str(VMOPS)).returncode == 0
    assert vmctl(m.home, "mount-map", "group", str(VMOPS), "--role", "viewer",
                 "--project", "web").returncode == 0
    time.sleep(2.1)
    result = run_as(OPERATOR, "cat vms/web1/state && echo running > vms/web1/state", m.mnt, groups=(VMOPS,))
    assert result.stdout == "stopped\n" and EACCES in result.stderr
    assert in_web(m, "web1")["desired_state"] == "stopped"
    assert vmctl(m.home, "mount-map", "rm", "group", str(VMOPS)).returncode == 0
    time.sleep(2.1)
    assert EACCES in run_as(OPERATOR, "cat vms/web1/state", m.mnt, groups=(VMOPS,)).stderr


def test_an_open_file_acts_as_whoever_opened_it(team):
    """read and write carry no caller: the opener's identity is kept with the open file, as Unix
    checks permissions at open. root's descriptor handed to an unmapped uid writes as root; an
    unmapped uid cannot open one at all."""
    m = team
    inherit = (f"exec 3>vms/db1/cpus; setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups "
               "bash -c 'echo 2 >&3'")
    result = m.sh(inherit)
    assert result.returncode == 0, result.stderr
    assert m.service.get_vm("db1")["spec"]["cpus"] == 2
    result = run_as(NOBODY, "exec 3>vms/db1/cpus", m.mnt)
    assert EACCES in result.stderr


# -- the role x file matrix, generated from the policy table --------------------------------------
# One uid per role, mapped as an admin would: a user entry for the admin and the monitor (users of
# those roles), a group entry for the operator and the viewer; and a uid nobody mapped.
MATRIX_UIDS = {"admin": 5010, "operator": 5011, "viewer": 5012, "monitor": 5013, "unmapped": 5014}
MATRIX_GROUPS = {"operator": 5111, "viewer": 5112}


def expected_allowed(role: str, path: tuple[str, ...], verb: str) -> bool:
    action = policy.mount_action(path, verb)
    return role != "unmapped" and action is not None and policy.allows(Role(role), action)


def matrix_cases() -> list[tuple[str, tuple[str, ...], str]]:
    """(shell command, the path it acts on, the verb the policy decides): every file of a VM read,
    every writable one written, and each change of the tree."""
    cases = [(f"cat vms/web1/{f.name} >/dev/null", ("vms", "web1", f.name), "read")
             for f in VM_FILES.entries]
    # a value every writer refuses (EINVAL), so that an allowed write changes nothing either
    cases += [(f"printf '%s\\n' '!' > vms/web1/{f.name}", ("vms", "web1", f.name), "write")
              for f in VM_FILES.entries if f.writable]
    cases += [("mkdir vms/made", ("vms", "made"), "mkdir"),
              ("mv vms/mvsrc vms/mvdst && mv vms/mvdst vms/mvsrc", ("vms", "mvsrc"), "rename"),
              ("rmdir vms/rmme", ("vms", "rmme"), "rmdir"),
              ("cat hosts/local/state >/dev/null", ("hosts", "local", "state"), "read"),
              ("printf '%s\\n' '!' > hosts/local/state", ("hosts", "local", "state"), "write"),
              ("mkdir hosts/h9 && rmdir hosts/h9", ("hosts", "h9"), "mkdir"),
              ("""echo '{"policy": "affinity"}' > groups/g.json && rm groups/g.json""",
               ("groups", "g.json"), "create"),
              ("""echo '{"cpus": 2}' > templates/t.json && rm templates/t.json""",
               ("templates", "t.json"), "create")]
    return cases


@pytest.mark.parametrize("role", list(MATRIX_UIDS))
def test_each_role_may_do_in_the_mount_what_the_policy_table_says(tmp_path, open_dir, role):
    m = Mount(tmp_path, mnt=open_dir / "mnt")
    try:
        m.start()
        store = m.service.store
        store.insert_project({"name": "web", "description": "", "quota": {}, "created": time.time()})
        for user in ("admin", "monitor"):
            store.insert_user({"name": f"{user}-user", "role": user, "projects": ["web"],
                               "created": time.time(), "disabled": 0})
            mountmap.set_user(store, str(MATRIX_UIDS[user]), f"{user}-user")
        for group_role, gid in MATRIX_GROUPS.items():
            mountmap.set_group(store, str(gid), group_role, "web")
        with acting_as(SYSTEM.in_project("web")):
            for name in ("web1", "mvsrc", "rmme"):
                m.service.create_vm({"name": name, "state": "stopped"})
        time.sleep(2.1)  # the mount's map
        uid, gid = MATRIX_UIDS[role], MATRIX_GROUPS.get(role, MATRIX_UIDS[role])
        wrong = []
        for command, path, verb in matrix_cases():
            with acting_as(SYSTEM.in_project("web")):
                before = (sorted((v["name"], v["generation"]) for v in m.service.list_vms()),
                          m.service.get_host("local")["state"], m.service.list_groups())
            result = run_as(uid, command, m.mnt, gid=gid)
            refused = EACCES in result.stderr
            if refused == expected_allowed(role, path, verb):
                wrong.append((command, "refused" if refused else "allowed", result.stderr.strip()))
            with acting_as(SYSTEM.in_project("web")):
                after = (sorted((v["name"], v["generation"]) for v in m.service.list_vms()),
                         m.service.get_host("local")["state"], m.service.list_groups())
            if refused and after != before:
                wrong.append((command, "refused but changed", before, after))
            if verb == "mkdir" and path[0] == "vms" and not refused:
                assert run_as(uid, "rmdir vms/made", m.mnt, gid=gid).returncode == 0
        assert not wrong, wrong
    finally:
        m.stop()

"""VM locks (Nova's lock): a locked VM refuses every change but its locker's and an
admin's, over REST and over the mount, with who locked it and why.

Every write path is generated from the policy table's routes and the VM file table,
so a new writable file or a new VM route is covered (or fails here until it is).
Typing into the console (a file that takes bytes) uses the guest, as ssh does, and
changes nothing of the VM: the lock does not govern it (nor does Nova's its consoles)."""
from __future__ import annotations

import errno
import json
import os

import pytest
import trio
from falcon import testing

from appliance.access import Principal, Role, acting_as, mountmap
from appliance.access.audit import WRITE_METHODS
from appliance.access.policy import ROUTES
from appliance.api.app import create_app
from appliance.files import VM_FILES
from tests.unit.appliance.fuse_calls import FuseCalls
from tests.unit.appliance.teams import add_user

HOME_TOKEN = "home-token-secret"
ADMIN = {"Authorization": f"Bearer {HOME_TOKEN}"}
REASON = "exam running"
LOCKED = f"locked by alice: {REASON}"
# A value each writable file of a VM takes (a new writable file needs one here).
SAMPLES = {"state": "running", "cpus": "2", "memory": "1024", "host": "local",
           "spec.json": json.dumps({"cpus": 2, "memory": 512, "cdroms": [""],
                                    "disks": [{"name": "data", "size": 16}]}),
           "lock": "mine now", "rebuild": "demo"}
# The VM's files a write of which changes the VM: all writable ones but the console.
CHANGES = [file for file in VM_FILES.entries if file.writable and file.write_bytes is None]
# How each VM route's write is made (a new route under /v1/vms/{name} needs one here).
ROUTE_WRITES = {
    ("/v1/vms/{name}", "PATCH"): lambda name: [("PATCH", f"/v1/vms/{name}", {"cpus": 2})],
    ("/v1/vms/{name}", "DELETE"): lambda name: [("DELETE", f"/v1/vms/{name}", None)],
    ("/v1/vms/{name}/{file}", "PUT"): lambda name: [
        ("PUT", f"/v1/vms/{name}/{file.name}", SAMPLES[file.name]) for file in CHANGES],
    # Issue 14: Nova's rebuild action at the rebuild file's path.
    ("/v1/vms/{name}/{file}", "POST"): lambda name: [("POST", f"/v1/vms/{name}/rebuild", {})],
    ("/v1/vms/{name}/{file}", "DELETE"): lambda name: [
        ("DELETE", f"/v1/vms/{name}/{file.name}", None)
        for file in VM_FILES.entries if file.clear is not None],
    # Issue 13: a revert and a snapshot's delete change the VM (its snapshot s1: _locked_vm).
    ("/v1/vms/{name}/snapshots/{snapshot}", "DELETE"): lambda name: [
        ("DELETE", f"/v1/vms/{name}/snapshots/s1", None)],
    ("/v1/vms/{name}/snapshots/{snapshot}/revert", "POST"): lambda name: [
        ("POST", f"/v1/vms/{name}/snapshots/s1/revert", None)],
    ("/v1/vms/{name}/snapshots/{snapshot}/{file}", "PUT"): lambda name: [
        ("PUT", f"/v1/vms/{name}/snapshots/s1/action", "revert")],
    # Issue 14: a VM's data disk (data: _locked_vm) and CD-ROM drive 0.
    ("/v1/vms/{name}/disks/{disk}", "PUT"): lambda name: [
        ("PUT", f"/v1/vms/{name}/disks/data", {"size": "32M"})],
    ("/v1/vms/{name}/disks/{disk}", "DELETE"): lambda name: [
        ("DELETE", f"/v1/vms/{name}/disks/data", None)],
    ("/v1/vms/{name}/disks/{disk}/size", "PUT"): lambda name: [
        ("PUT", f"/v1/vms/{name}/disks/data/size", "64M")],
    ("/v1/vms/{name}/cdroms/{index}", "PUT"): lambda name: [
        ("PUT", f"/v1/vms/{name}/cdroms/0", "")],
}
# Writes under /v1/vms/{name} that a lock does not hold back (issue 13's contract): taking a
# snapshot or a backup, and cloning, change nothing the VM's users see.
LOCK_ALLOWED = {
    ("/v1/vms/{name}/snapshots", "POST"): lambda name: [
        ("POST", f"/v1/vms/{name}/snapshots", {"name": "s2"})],
    ("/v1/vms/{name}/backups", "POST"): lambda name: [
        ("POST", f"/v1/vms/{name}/backups", {"target": "nas"})],
    ("/v1/vms/{name}/clone", "POST"): lambda name: [
        ("POST", f"/v1/vms/{name}/clone", {"name": f"{name}-copy"})],
}


def test_every_writable_file_and_vm_route_has_a_sample():
    assert {f.name for f in CHANGES} == set(SAMPLES)
    assert {f.name for f in VM_FILES.entries if f.writable} - set(SAMPLES) == {"console"}
    vm_writes = {(t, m) for t, m in ROUTES if t.startswith("/v1/vms/{name}") and m in WRITE_METHODS}
    assert vm_writes == set(ROUTE_WRITES) | set(LOCK_ALLOWED)


def _writes(name: str) -> list[tuple[str, str, object]]:
    return [write for make in ROUTE_WRITES.values() for write in make(name)]


@pytest.fixture
def api(service):
    client = testing.TestClient(create_app(service, HOME_TOKEN))
    client.alice = add_user(service.store, "alice", "operator")
    client.bob = add_user(service.store, "bob", "operator")
    return client


def _send(api, headers, method, path, body, **params):
    kwargs = {"json": body} if isinstance(body, dict) else {"body": body}
    return api.simulate_request(method, path, headers={**headers, "Content-Type": (
        "application/json" if isinstance(body, dict) else "text/plain")},
        params={"wait": "false", "force": "true", **params}, **kwargs)


def _locked_vm(api, service, name: str = "web1", snapshot: bool = True) -> dict:
    """A stopped VM with a data disk and a CD-ROM drive, locked by alice; with its
    snapshot s1 (for the snapshot routes: a disk is not removed under a snapshot)."""
    service.create_vm({"name": name, "state": "stopped", "cdroms": [""],
                       "disks": [{"name": "data", "size": 16}]})
    resp = api.simulate_put(f"/v1/vms/{name}/lock", json={"lock": REASON}, headers=api.alice)
    assert resp.status_code == 200, resp.text
    assert resp.json["lock"]["by"] == "alice"
    row = service.store.get_vm(name)
    if not snapshot:
        return row
    service.store.insert_snapshot({
        "id": f"snap-{name}", "vm_id": row["id"], "name": "s1", "description": "", "memory": 0,
        "parent": None, "current": 1, "state": "ready", "vm_state": "stopped", "size": 0,
        "xml": None, "error": None, "created": 0.0})
    return row


def _unchanged(service, before: dict) -> None:
    after = service.store.get_vm(before["name"])
    for key in ("spec", "generation", "desired_state", "host", "locked_by", "lock_reason"):
        assert after[key] == before[key], key


def test_every_write_path_is_refused_to_another_operator(api, service):
    before = _locked_vm(api, service)
    writes = _writes("web1")
    assert len(writes) >= 9
    for method, path, body in writes:
        resp = _send(api, api.bob, method, path, body)
        assert resp.status_code == 409, (method, path, resp.text)
        assert resp.json == {"error": "Conflict", "reason": LOCKED, "field": "lock"}, path
    # Cancelling the VM's pending operation changes it too.
    op = service.set_state("web1", "running")
    before = service.store.get_vm("web1")
    resp = api.simulate_delete(f"/v1/operations/{op['id']}", headers=api.bob)
    assert (resp.status_code, resp.json["reason"]) == (409, LOCKED)
    assert service.get_operation(op["id"])["status"] == "pending"
    _unchanged(service, before)
    # Every refusal is in the VM's log, with who tried.
    refused = [e for e in service.list_events("web1") if e["kind"] == "refused"]
    assert len(refused) == len(writes) + 1
    assert {e["actor"] for e in refused} == {"bob"}
    assert all(e["result"] == f"409 Conflict: {LOCKED}" for e in refused)


@pytest.mark.parametrize("who", ["alice", "admin"])
def test_every_write_path_is_allowed_to_the_locker_and_to_admins(api, service, who):
    headers = api.alice if who == "alice" else ADMIN
    for index, (method, path, body) in enumerate(_writes("web1")):
        name = f"vm{index}"
        _locked_vm(api, service, name, snapshot="/snapshots/" in path)
        resp = _send(api, headers, method, path.replace("web1", name), body)
        assert "locked" not in resp.text, (method, path, resp.text)
        assert resp.status_code < 400, (method, path, resp.text)


def test_unlock_by_another_operator_is_refused_and_by_the_locker_is_not(api, service):
    before = _locked_vm(api, service)
    for method, body in (("DELETE", None), ("PUT", ""), ("PUT", {"lock": None}), ("PUT", "mine")):
        resp = _send(api, api.bob, method, "/v1/vms/web1/lock", body)
        assert (resp.status_code, resp.json["reason"]) == (409, LOCKED), (method, body)
    _unchanged(service, before)
    assert api.simulate_delete("/v1/vms/web1/lock", headers=api.alice).status_code == 204
    assert service.get_vm("web1")["lock"] is None
    # Unlocked, anyone with the role changes it again.
    assert _send(api, api.bob, "PUT", "/v1/vms/web1/cpus", "2").status_code == 202


def test_the_lock_file_reads_and_unlocks_by_an_empty_line(api, service):
    service.create_vm({"name": "web1", "state": "stopped"})
    get = lambda **p: api.simulate_get("/v1/vms/web1/lock", params=p, headers=api.alice)  # noqa: E731
    assert get().json == {"lock": None} and get(format="text").text == ""
    _send(api, api.alice, "PUT", "/v1/vms/web1/lock", f"{REASON}\n")
    assert get(format="text").text == f"alice: {REASON}\n"
    lock = get().json["lock"]
    assert (lock["by"], lock["reason"]) == ("alice", REASON) and lock["at"] > 0
    assert api.simulate_get("/v1/vms/web1", headers=api.alice).json["lock"]["by"] == "alice"
    assert _send(api, api.alice, "PUT", "/v1/vms/web1/lock", "\n").status_code == 200
    assert get().json == {"lock": None}


@pytest.mark.parametrize("body", ["x" * 201, "bell\x07", "two\nlines", {"lock": 5}, {"lock": []}])
def test_a_lock_reason_is_one_printable_line_of_at_most_200_characters(api, service, body):
    service.create_vm({"name": "web1", "state": "stopped"})
    resp = _send(api, api.alice, "PUT", "/v1/vms/web1/lock", body)
    assert (resp.status_code, resp.json["field"]) == (422, "lock"), resp.text
    assert service.get_vm("web1")["lock"] is None


def test_lock_and_unlock_are_audited(api, service):
    _locked_vm(api, service)
    api.simulate_delete("/v1/vms/web1/lock", headers=api.alice)
    events = [(e["kind"], e["message"], e["actor"], e["result"])
              for e in service.list_events("web1") if e["actor"] == "alice"]
    assert events == [
        ("locked", f"locked: {REASON}", "alice", None),
        ("write", "PUT /v1/vms/web1/lock", "alice", "ok"),
        ("unlocked", f"unlocked (was locked by alice: {REASON})", "alice", None),
        ("write", "DELETE /v1/vms/web1/lock", "alice", "ok"),
    ]


def test_only_the_lock_file_can_be_removed(api, service):
    service.create_vm({"name": "web1", "state": "stopped"})
    for file in VM_FILES.entries:
        resp = api.simulate_delete(f"/v1/vms/web1/{file.name}", headers=api.alice)
        assert resp.status_code == (204 if file.name == "lock" else 403), file.name


# -- the mount ------------------------------------------------------------------------------------
def _mount_user(service, name: str, role: Role, uid: int) -> Principal:
    """An appliance user the mount's map names for this uid (`vmctl mount-map user UID --as
    NAME`; fs/identity.py turns the uid into them), and the same principal, to act as."""
    if uid != 0 and not service.store.user_exists(name):
        service.store.insert_user({"name": name, "role": role.value, "projects": ["default"],
                                   "created": 0.0, "disabled": 0})
        mountmap.set_user(service.store, str(uid), name)
    return Principal(user=name, role=role, uid=uid, source="mount")


class _Shell(FuseCalls):
    """The FUSE operations, called as the kernel would for a shell's commands (no mount)."""

    async def echo(self, path: tuple[str, ...], text: str) -> int:
        """`echo TEXT > PATH`: its exit's errno (0: done)."""
        async def write() -> None:
            info = await self.fs.open(await self.inode(*path), os.O_WRONLY | os.O_TRUNC, self.ctx)
            try:
                await self.fs.write(info.fh, 0, (text + "\n").encode())
                await self.fs.flush(info.fh)
            finally:
                await self.fs.release(info.fh)
        return await self.errno_of(write)

    async def rm(self, path: tuple[str, ...]) -> int:
        parent = await self.inode(*path[:-1])
        return await self.errno_of(lambda: self.fs.unlink(parent, path[-1].encode(), self.ctx))

    async def rmdir(self, path: tuple[str, ...]) -> int:
        parent = await self.inode(*path[:-1])
        return await self.errno_of(lambda: self.fs.rmdir(parent, path[-1].encode(), self.ctx))

    async def mv(self, name: str, new: str) -> int:
        vms = await self.inode("vms")
        return await self.errno_of(
            lambda: self.fs.rename(vms, name.encode(), vms, new.encode(), 0, self.ctx))

    async def cat(self, path: tuple[str, ...]) -> str:
        info = await self.fs.open(await self.inode(*path), os.O_RDONLY, self.ctx)
        try:
            return (await self.fs.read(info.fh, 0, 4096)).decode()
        finally:
            await self.fs.release(info.fh)

    async def every_write(self, name: str) -> dict[str, int]:
        """Each file a VM's directory can write, rm of each it can remove, rmdir and mv."""
        out = {f"echo > {file.name}": await self.echo(("vms", name, file.name), SAMPLES[file.name])
               for file in CHANGES}
        for file in VM_FILES.entries:
            if file.clear is not None:
                out[f"rm {file.name}"] = await self.rm(("vms", name, file.name))
        out["mv"] = await self.mv(name, f"{name}-renamed")
        out["rmdir"] = await self.rmdir(("vms", name))
        return out


def test_the_mount_refuses_every_write_of_another_user_with_ebusy(service):
    with acting_as(_mount_user(service, "alice", Role.OPERATOR, 1001)):
        service.create_vm({"name": "web1", "state": "stopped"})
        assert trio.run(_Shell(service, 1001).echo, ("vms", "web1", "lock"), REASON) == 0
    before = service.store.get_vm("web1")
    with acting_as(_mount_user(service, "bob", Role.OPERATOR, 1002)):
        shell = _Shell(service, 1002)
        codes = trio.run(shell.every_write, "web1")
        assert trio.run(shell.cat, ("vms", "web1", "lock")) == f"alice: {REASON}\n"
    assert len(codes) >= 8
    assert all(code == errno.EBUSY for code in codes.values()), codes
    _unchanged(service, before)
    refused = [e for e in service.list_events("web1") if e["kind"] == "refused"]
    assert len(refused) == len(codes)
    assert {(e["actor"], e["source"], e["credential"]) for e in refused} == {
        ("bob", "mount", "uid 1002")}
    assert all(e["result"] == f"EBUSY Conflict: {LOCKED}" for e in refused), refused


@pytest.mark.parametrize("who", ["alice", "root"])
def test_the_mount_lets_the_locker_and_an_admin_write(service, controller, who):
    with acting_as(_mount_user(service, "alice", Role.OPERATOR, 1001)):
        service.create_vm({"name": "web1", "state": "stopped"})
        assert trio.run(_Shell(service, 1001).echo, ("vms", "web1", "lock"), REASON) == 0
    user = _mount_user(service, "alice", Role.OPERATOR, 1001) if who == "alice" else \
        _mount_user(service, "root", Role.ADMIN, 0)
    with acting_as(user):
        shell = _Shell(service, user.uid)
        for file in ("cpus", "memory", "spec.json", "state"):
            assert trio.run(shell.echo, ("vms", "web1", file), SAMPLES[file]) == 0, file
        assert trio.run(shell.rm, ("vms", "web1", "lock")) == 0
    assert service.get_vm("web1")["lock"] is None


def test_the_mount_locks_by_echo_and_unlocks_by_an_empty_line_or_rm(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    shell = _Shell(service, 0)
    lock = ("vms", "web1", "lock")

    async def run() -> None:
        assert await shell.cat(lock) == ""
        assert await shell.echo(lock, REASON) == 0
        assert await shell.cat(lock) == f"unix:root: {REASON}\n"
        assert await shell.echo(lock, "") == 0
        assert await shell.cat(lock) == ""
        assert await shell.echo(lock, REASON) == 0
        assert await shell.rm(lock) == 0
        assert await shell.cat(lock) == ""
        assert await shell.rm(lock) == 0  # unlocking an unlocked VM changes nothing
        assert await shell.rm(("vms", "web1", "state")) == errno.EACCES
        assert await shell.echo(lock, "x" * 201) == errno.EINVAL

    trio.run(run)


def test_an_appliance_user_named_root_is_not_the_locker_of_what_unix_root_locked(service):
    """Security review (issue 11): the mount's admins (uid 0, the owner) were principals named
    by their bare Unix name, the namespace of appliance users: an operator an admin named
    `root` was the locker of every VM root locked through the mount (and could change and
    unlock them). The mount's root is unix:root, a name no appliance user can have."""
    service.create_vm({"name": "web1", "state": "stopped"})
    assert trio.run(_Shell(service, 0).echo, ("vms", "web1", "lock"), REASON) == 0
    api = testing.TestClient(create_app(service, HOME_TOKEN))
    operator_root = add_user(service.store, "root", "operator")
    resp = api.simulate_put("/v1/vms/web1/cpus", body="2", headers=operator_root,
                            params={"wait": "false"})
    assert resp.status_code == 409 and resp.json["field"] == "lock", resp.text
    assert api.simulate_delete("/v1/vms/web1/lock", headers=operator_root).status_code == 409
    assert service.get_vm("web1")["lock"]["by"] == "unix:root"


def test_snapshots_backups_and_clones_are_taken_of_a_locked_vm(api, service, tmp_path):
    (tmp_path / "nas").mkdir()
    service.store.insert_backup_target({"name": "nas", "path": str(tmp_path / "nas"),
                                        "created": 0.0})
    before = _locked_vm(api, service)
    for make in LOCK_ALLOWED.values():
        for method, path, body in make("web1"):
            resp = _send(api, api.bob, method, path, body)
            assert resp.status_code == 202, (method, path, resp.text)
    _unchanged(service, before)
    assert [s["name"] for s in service.list_snapshots("web1")] == ["s1", "s2"]

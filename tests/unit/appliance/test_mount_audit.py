"""The audit trail over the mount: every write, mkdir, rmdir, rename, unlink and create
leaves one event (who, uid, "mount", what, result); a refused open for writing does
too; reads leave none."""
from __future__ import annotations

import errno
import os

import trio

from appliance.access import Role, acting_as
from tests.unit.appliance.test_locks import _mount_user, _Shell

def carol(service):
    """carol, an operator the mount's map names for uid 1003."""
    return _mount_user(service, "carol", Role.OPERATOR, 1003)


def _audit(service) -> list[tuple[str, str, str]]:
    return [(e["kind"], e["message"], e["result"]) for e in service.list_events()
            if e["result"] is not None]


def test_mount_writes_and_their_results(service, controller):
    with acting_as(carol(service)):
        shell = _Shell(service, 1003)

        async def run() -> None:
            vms = await shell.inode("vms")
            await shell.fs.mkdir(vms, b"web1", 0o755, shell.ctx)
            assert await shell.echo(("vms", "web1", "cpus"), "2") == 0
            assert await shell.echo(("vms", "web1", "state"), "flying") == errno.EINVAL
            assert await shell.echo(("vms", "web1", "status.json"), "{}") == errno.EACCES
            assert await shell.mv("web1", "web2") == 0
            assert await shell.rmdir(("vms", "web2")) == 0
            assert await shell.rmdir(("vms", "nope")) == errno.ENOENT

        trio.run(run)
    assert _audit(service) == [
        ("write", "mkdir vms/web1", "ok"),
        ("write", "write vms/web1/cpus", "ok"),
        ("refused", "write vms/web1/state",
         "EINVAL Invalid: 'flying' is not a state; use one of running, stopped, paused, reboot, "
         "force-stop, suspended, shelved"),
        # refused by the policy (fs/guard.py): the same shape, what in the message, why in the result
        ("refused", "write vms/web1/status.json", "EACCES Forbidden: no policy allows this to anyone"),
        ("write", "rename vms/web1 to vms/web2", "ok"),
        ("write", "rmdir vms/web2", "ok"),
        ("refused", "rmdir vms/nope", "ENOENT NotFound: no VM named 'nope'"),
    ]
    mine = [e for e in service.list_events() if e["result"] is not None]
    assert {(e["actor"], e["source"], e["credential"]) for e in mine} == {
        ("carol", "mount", "uid 1003")}
    # The service's own events of those writes name her too.
    updated = [e for e in service.list_events() if e["kind"] == "updated"]
    assert updated and {(e["actor"], e["source"]) for e in updated} == {("carol", "mount")}


def test_a_vms_events_file_shows_who_wrote(service, controller):
    service.create_vm({"name": "web1", "state": "stopped"})
    with acting_as(carol(service)):
        shell = _Shell(service, 1003)
        assert trio.run(shell.echo, ("vms", "web1", "memory"), "1024") == 0
        text = trio.run(shell.cat, ("vms", "web1", "events"))
    assert "web1 write: write vms/web1/memory by carol (mount, uid 1003): ok\n" in text
    assert "web1 updated: spec changed: memory by carol (mount, uid 1003)\n" in text


def test_a_value_split_over_writes_is_recorded_once(service, controller):
    """`1024` written as `10` then `24\n`: the service refuses 10 MiB, the handle keeps it for
    the rest (fs/handles.py), and the value is applied, and recorded, once."""
    service.create_vm({"name": "web1", "state": "stopped"})
    shell = _Shell(service, 0)

    async def run() -> None:
        info = await shell.fs.open(await shell.inode("vms", "web1", "memory"), os.O_WRONLY,
                                   shell.ctx)
        await shell.fs.write(info.fh, 0, b"10")  # refused, and not a whole line yet: kept
        await shell.fs.write(info.fh, 2, b"24\n")
        await shell.fs.flush(info.fh)
        await shell.fs.release(info.fh)

    trio.run(run)
    assert _audit(service) == [("write", "write vms/web1/memory", "ok")]
    assert service.get_vm("web1")["spec"]["memory"] == 1024


def test_reads_record_nothing(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    count = len(service.list_events())
    shell = _Shell(service, 0)

    async def run() -> None:
        for top in ("vms", "hosts", "images", "templates", "groups"):
            fh = await shell.fs.opendir(await shell.inode(top), shell.ctx)
            await shell.fs.releasedir(fh)
        for file in ("state", "spec.json", "events", "lock", "status.json"):
            await shell.cat(("vms", "web1", file))
            inode = await shell.inode("vms", "web1", file)
            await shell.fs.getattr(inode, shell.ctx)

    trio.run(run)
    assert len(service.list_events()) == count


def test_a_write_under_projects_is_that_projects_vms(service, controller):
    """projects/P/vms/NAME/...: the same files, acting in P; the event is that VM's."""
    service.store.insert_project({"name": "web", "description": "", "created": 0.0})
    admin = _mount_user(service, "root", Role.ADMIN, 0)
    with acting_as(admin.in_project("web")):
        service.create_vm({"name": "db1", "state": "stopped"})
    with acting_as(admin):
        shell = _Shell(service, 0)
        lock = ("projects", "web", "vms", "db1", "lock")
        assert trio.run(shell.echo, lock, "exam running") == 0
        assert trio.run(shell.rm, lock) == 0
    vm = service.store.get_vm("db1", "web")
    assert vm["locked_by"] is None
    audit = [(e["message"], e["vm_id"], e["project"]) for e in service.store.list_events()
             if e["result"] is not None]
    assert audit == [("write projects/web/vms/db1/lock", vm["id"], "web"),
                     ("unlink projects/web/vms/db1/lock", vm["id"], "web")]


def test_a_name_cannot_write_lines_or_escapes_into_the_audit_trail(service):
    """Security review (issue 11): a name in the mount is any bytes but / and NUL; the
    audit event of `mkdir $'x\\n...'` carried them raw, so an operator could add a forged
    line ('... by admin (mount, uid 0): ok') or a terminal escape to `vmctl events` and a
    VM's events file. Names are shown escaped, as the guard's refusals show them."""
    with acting_as(carol(service)):
        shell = _Shell(service, 1003)

        async def run() -> list[int]:
            vms = await shell.inode("vms")
            forged = b"x\n2026-11-29 write vms/web1/state by admin (mount, uid 0): ok\x1b[2J"
            return [await shell.errno_of(lambda: shell.fs.mkdir(vms, forged, 0o755, shell.ctx)),
                    await shell.errno_of(lambda: shell.fs.unlink(vms, b"y\r\x07", shell.ctx))]

        assert 0 not in trio.run(run)
    recorded = [e["message"] for e in service.list_events() if e["result"] is not None]
    assert len(recorded) == 2, recorded
    assert all(text.isprintable() for text in recorded), recorded
    assert recorded[0].startswith("mkdir vms/x\\n2026"), recorded

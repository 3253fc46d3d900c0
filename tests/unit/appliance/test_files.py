"""appliance/files.py: the one table of the files of vms/NAME/ and hosts/NAME/, and
that both views (REST and the FUSE operations) serve exactly what it says."""
from __future__ import annotations

import errno
import os
import stat

import pyfuse3
import pytest
import trio
from falcon import testing

from appliance.api.app import create_app
from appliance.errors import Forbidden, Invalid, NotFound
from appliance.files import HOST_FILES, VM_FILES, Directory
from tests.unit.appliance.fake_consoles import FakeConsoles
from tests.unit.appliance.fuse_calls import FuseCalls

# How the two views say the same refusal (DESIGN.md).
STATUS_OF_ERRNO = {errno.EINVAL: 422, errno.ENOENT: 404, errno.EBUSY: 409, errno.EACCES: 403}


def _finish(service, written) -> None:
    for op in written.operations:
        service.finish(op)


def test_vm_files_read_and_write_through_the_service(service, controller):
    service.finish(service.create_vm({"name": "web1", "state": "stopped"})[1])
    assert VM_FILES.read(service, "web1", "state") == "stopped\n"
    _finish(service, VM_FILES.write(service, "web1", "cpus", "2\n"))
    _finish(service, VM_FILES.write(service, "web1", "memory", "1G\n"))
    assert VM_FILES.read(service, "web1", "cpus") == "2\n"
    assert VM_FILES.read(service, "web1", "memory") == "1024\n"
    with pytest.raises(Forbidden):
        VM_FILES.write(service, "web1", "status.json", "{}")
    with pytest.raises(Invalid):
        VM_FILES.write(service, "web1", "spec.json", "{not json")
    with pytest.raises(NotFound):  # writing another host's name migrates; this one does not exist
        VM_FILES.write(service, "web1", "host", "elsewhere")
    with pytest.raises(NotFound) as missing:
        VM_FILES.read(service, "web1", "nothing")
    assert missing.value.field == "file"


def test_a_spec_json_write_that_renames_answers_the_new_name(service, controller):
    service.finish(service.create_vm({"name": "web1", "state": "stopped"})[1])
    spec = VM_FILES.read(service, "web1", "spec.json").replace('"web1"', '"web2"')
    written = VM_FILES.write(service, "web1", "spec.json", spec)
    _finish(service, written)
    assert written.name == "web2" and service.get_vm("web2")["spec"]["name"] == "web2"


def test_a_host_state_write_answers_the_drain_and_waits_for_its_moves(service):
    written = HOST_FILES.write(service, "local", "state", "disabled\n")
    assert written.answer["state"] == "disabled" and written.answer["drain"]["blocked"] == []
    assert written.operations == ()
    assert HOST_FILES.read(service, "local", "state") == "disabled\n"
    assert HOST_FILES.read(service, "local", "vms") == ""
    with pytest.raises(NotFound):
        HOST_FILES.read(service, "nohost", "vms")


# -- one table, two views ------------------------------------------------------------------------
class _Views(FuseCalls):
    """The FUSE operations (called as the kernel would, without a mount) and the REST app,
    on one service."""

    def __init__(self, service):
        super().__init__(service, os.getuid(), os.getgid())
        self.client = testing.TestClient(create_app(service, "t"),
                                         headers={"Authorization": "Bearer t"})

    async def listing(self, path: tuple[str, ...]) -> list[str]:
        fh = await self.fs.opendir(await self.inode(*path), self.ctx)
        names = [name for name, _ in self.fs.dirs[fh][1]]  # what readdir replies, in order
        await self.fs.releasedir(fh)
        return names

    async def cat(self, inode: int) -> bytes:
        info = await self.fs.open(inode, os.O_RDONLY, self.ctx)
        try:
            return await self.fs.read(info.fh, 0, 1 << 20)
        finally:
            await self.fs.release(info.fh)

    async def refusal(self, inode: int, text: bytes) -> int:
        """The errno of writing text as `echo` (and close) would, or of the open itself."""
        try:
            info = await self.fs.open(inode, os.O_WRONLY, self.ctx)
            try:
                await self.fs.write(info.fh, 0, text)
                await self.fs.flush(info.fh)
            finally:
                await self.fs.release(info.fh)
        except pyfuse3.FUSEError as err:
            return err.errno
        return 0


async def _check_directory(views: _Views, top: str, name: str, table: Directory) -> None:
    # the table, in its order; a VM's snapshots/ and backups/ after (fs/backup_tree.py), then
    # its disks/ and cdroms/ (fs/disk_tree.py)
    directories = ["snapshots", "backups", "disks", "cdroms"] if top == "vms" else []
    assert await views.listing((top, name)) == [*table, *directories], "ls shows the table"
    for file in table.entries:
        path = (top, name, file.name)
        inode = await views.inode(*path)
        attrs = await views.fs.getattr(inode, views.ctx)
        assert bool(attrs.st_mode & stat.S_IWUSR) == file.writable, path
        url = f"/v1/{top}/{name}/{file.name}"
        resp = views.client.simulate_get(url, params={"format": "text"})
        assert resp.status_code == 200, (url, resp.text)
        assert resp.headers["content-type"] == file.content_type, url
        assert await views.cat(inode) == resp.content, f"the mount and REST disagree on {url}"
        # A value no file takes: both views refuse it alike, or both say read-only; but a
        # file that takes bytes (the console) types it in both.
        code = await views.refusal(inode, b"\x01!\n")
        put = views.client.simulate_put(url, body=b"\x01!\n", params={"wait": "false"},
                                        headers={"Content-Type": "text/plain"})
        if file.write_bytes is not None:
            assert (code, put.status_code) == (0, 200), (url, put.text)
            continue
        assert code != 0, path
        assert put.status_code == STATUS_OF_ERRNO[code], (url, errno.errorcode[code], put.text)
        assert (code == errno.EACCES) == (not file.writable), path
    missing = views.client.simulate_get(f"/v1/{top}/{name}/nothing")
    assert missing.status_code == 404
    with pytest.raises(pyfuse3.FUSEError) as caught:
        await views.inode(top, name, "nothing")
    assert caught.value.errno == errno.ENOENT


def test_one_table_drives_the_mount_and_rest(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    consoles = FakeConsoles(service)  # the broker's answers for a running VM
    views = _Views(service)

    async def check() -> None:
        await _check_directory(views, "vms", "web1", VM_FILES)
        await _check_directory(views, "hosts", "local", HOST_FILES)

    trio.run(check)
    assert consoles.typed == [b"\x01!\n", b"\x01!\n"]  # the mount's, then REST's
    assert service.get_vm("web1")["spec"]["cpus"] == 1  # every refused write changed nothing
    assert service.get_host("local")["state"] == "enabled"


def test_a_missing_vm_is_404_in_json_for_every_file(service):
    """The refusal is answered before the file's content type is set (the console's was a 415)."""
    client = testing.TestClient(create_app(service, "t"), headers={"Authorization": "Bearer t"})
    for file in VM_FILES:
        resp = client.simulate_get(f"/v1/vms/nope/{file}")
        assert (resp.status_code, resp.json["error"]) == (404, "NotFound"), file

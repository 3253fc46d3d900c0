"""networks/NAME.json in the mount (issue 15), as groups/NAME.json: made by writing
its JSON, read as REST's GET, removed by rm (EBUSY while a VM is on it)."""
from __future__ import annotations

import errno
import json
import os

import pyfuse3
import trio
from falcon import testing

from appliance.access import mountmap
from appliance.api.app import create_app
from tests.unit.appliance.fuse_calls import FuseCalls


class _Shell(FuseCalls):
    async def write_new(self, path: tuple[str, ...], text: str) -> int:
        """`echo TEXT > PATH` of a file that does not exist yet."""
        async def write() -> None:
            parent = await self.inode(*path[:-1])
            info, _attrs = await self.fs.create(parent, path[-1].encode(), 0o644,
                                                os.O_WRONLY | os.O_CREAT, self.ctx)
            try:
                await self.fs.write(info.fh, 0, text.encode())
                await self.fs.flush(info.fh)
            finally:
                await self.fs.release(info.fh)
        return await self.errno_of(write)

    async def ls(self, *path: str) -> list[str]:
        fh = await self.fs.opendir(await self.inode(*path), self.ctx)
        names = [name for name, _ in self.fs.dirs[fh][1]]
        await self.fs.releasedir(fh)
        return names

    async def cat(self, *path: str) -> bytes:
        info = await self.fs.open(await self.inode(*path), os.O_RDONLY, self.ctx)
        try:
            return await self.fs.read(info.fh, 0, 1 << 20)
        finally:
            await self.fs.release(info.fh)

    async def rm(self, *path: str) -> int:
        parent = await self.inode(*path[:-1])
        return await self.errno_of(lambda: self.fs.unlink(parent, path[-1].encode(), self.ctx))


def test_networks_in_the_mount(service):
    shell = _Shell(service, os.getuid(), os.getgid())
    client = testing.TestClient(create_app(service, "t"), headers={"Authorization": "Bearer t"})

    async def run() -> None:
        assert "networks" in await shell.ls()
        assert await shell.write_new(("networks", "lab.json"),
                                     '{"subnet": "10.20.0.0/24"}') == 0
        assert await shell.ls("networks") == ["lab.json"]
        shown = json.loads(await shell.cat("networks", "lab.json"))
        assert shown == client.simulate_get("/v1/networks/lab").json
        assert shown["kind"] == "nat" and shown["gateway"] == "10.20.0.1"
        # A bad body is refused with EINVAL, and nothing is made.
        assert await shell.write_new(("networks", "bad.json"),
                                     '{"subnet": "10.20.0.1/24"}') == errno.EINVAL
        assert service.store.find_network("default", "bad") is None
        assert await shell.write_new(("networks", "lab2.json"), '{"subnet": "10.20.0.0/25"}') \
            == errno.EBUSY  # overlaps lab: 409
        # Read-only once made; rm refused while a VM is on it.
        with_vm = client.simulate_post("/v1/vms", params={"wait": "false"}, json={
            "name": "web1", "state": "stopped", "network": {"type": "network", "name": "lab"}})
        assert with_vm.status_code == 202, with_vm.text
        assert await shell.rm("networks", "lab.json") == errno.EBUSY
        assert service.store.find_network("default", "lab") is not None
        resp = client.simulate_patch("/v1/vms/web1", json={"network": {"type": "none"}},
                                    params={"wait": "false"})
        assert resp.status_code in (200, 202), resp.text
        assert await shell.rm("networks", "lab.json") == 0
        assert await shell.ls("networks") == []
        try:
            await shell.inode("networks", "lab.json")
        except pyfuse3.FUSEError as err:
            assert err.errno == errno.ENOENT
        else:
            raise AssertionError("networks/lab.json is still there")

    trio.run(run)


def test_bridge_network_file_is_admins_only(service):
    service.store.insert_user({"name": "op", "role": "operator", "projects": ["default"],
                               "created": 0.0, "disabled": 0})
    mountmap.set_user(service.store, "1001", "op")
    operator = _Shell(service, 1001, 1001)
    bridge = '{"kind": "bridge", "bridge": "br0"}'

    async def run() -> None:
        assert await operator.write_new(("networks", "lan.json"), bridge) == errno.EACCES
        assert service.store.find_network("default", "lan") is None
        assert await operator.write_new(("networks", "lab.json"),
                                        '{"subnet": "10.20.0.0/24"}') == 0
        admin = _Shell(service, 0, 0)
        assert await admin.write_new(("networks", "lan.json"), bridge) == 0
        assert await operator.ls("networks") == ["lab.json", "lan.json"]

    trio.run(run)

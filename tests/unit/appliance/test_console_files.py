"""The console as a file one types into, and screen.png (appliance/files.py), in both
views: the table's entries, REST (PUT /v1/vms/NAME/console, GET .../screen.png) and the
FUSE operations called as the kernel would. The console broker is faked at the service's
seam (tests/unit/appliance/fake_consoles.py): what reaches it is recorded."""
from __future__ import annotations

import errno
import functools
import os
import stat

import pytest
import trio
from falcon import testing

from appliance.access import Principal, Role, acting_as, mountmap
from appliance.api.app import create_app
from appliance.errors import Conflict, Invalid, TooLarge
from appliance.files import CONSOLE_INPUT_MAX_BYTES, PNG, VM_FILES
from tests.unit.appliance.fake_consoles import PNG_BYTES, FakeConsoles
from tests.unit.appliance.fuse_calls import FuseCalls
from tests.unit.appliance.teams import add_user

TOKEN = "home-token"
ADMIN = {"Authorization": f"Bearer {TOKEN}"}
# Every byte a terminal sends: ^C, ^D, ESC [ A (up), CR, NUL, and bytes that are not UTF-8.
CONTROL = b"\x03\x04\x1b[A\r\n\x00\xff\xfe" + bytes(range(32))


@pytest.fixture
def consoles(service):
    service.create_vm({"name": "web1", "state": "stopped"})
    return FakeConsoles(service)


@pytest.fixture
def api(service):
    return testing.TestClient(create_app(service, TOKEN))


# -- the table ------------------------------------------------------------------------------------
def test_the_console_is_writable_with_bytes_and_screen_png_is_a_read_only_binary_file():
    console, screen = VM_FILES.file("console"), VM_FILES.file("screen.png")
    assert console.writable and console.write_bytes is not None and console.log is not None
    assert not screen.writable and screen.snapshot is not None
    assert screen.content_type == PNG
    assert list(VM_FILES)[-1] == "screen.png"  # a new file goes last: `ls` keeps its order


def test_console_bytes_go_as_they_are_and_start_no_operation(service, consoles):
    written = VM_FILES.file("console").write_bytes(service, "web1", CONTROL)
    assert consoles.typed == [CONTROL]
    assert written.operations == () and written.answer == {"name": "web1", "typed": len(CONTROL)}
    # The text writer (a JSON body's string) is the same, in UTF-8.
    VM_FILES.write(service, "web1", "console", "é\x03\n")
    assert consoles.typed[-1] == "é\x03\n".encode()


def test_one_console_write_is_bounded_and_a_larger_one_types_nothing(service, consoles):
    write = VM_FILES.file("console").write_bytes
    write(service, "web1", b"x" * CONSOLE_INPUT_MAX_BYTES)
    with pytest.raises(TooLarge) as refused:
        write(service, "web1", b"x" * (CONSOLE_INPUT_MAX_BYTES + 1))
    assert refused.value.http_status == 413 and refused.value.errno == errno.EFBIG
    assert [len(d) for d in consoles.typed] == [CONSOLE_INPUT_MAX_BYTES]


def test_nothing_to_type_still_checks_the_vm(service, consoles):
    consoles.running = False
    with pytest.raises(Conflict):
        VM_FILES.file("console").write_bytes(service, "web1", b"")
    assert consoles.typed == []


def test_screen_png_has_no_text_form(service, consoles):
    with pytest.raises(Invalid):
        VM_FILES.read(service, "web1", "screen.png")
    assert VM_FILES.file("screen.png").data(service, "web1") == PNG_BYTES


# -- REST -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None,
                                          "application/x-www-form-urlencoded"])  # curl -d
def test_put_console_types_the_raw_body(api, consoles, content_type):
    headers = {**ADMIN, **({"Content-Type": content_type} if content_type else {})}
    resp = api.simulate_put("/v1/vms/web1/console", body=CONTROL, headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json == {"name": "web1", "typed": len(CONTROL)}
    assert consoles.typed == [CONTROL]


def test_put_console_takes_json_text_with_escapes(api, consoles):
    resp = api.simulate_put("/v1/vms/web1/console", json={"console": "uname -a\r\u0003"},
                            headers=ADMIN)
    assert resp.status_code == 200, resp.text
    assert consoles.typed == [b"uname -a\r\x03"]
    for body in ({"console": 5}, {"other": "x"}, ["x"]):
        resp = api.simulate_put("/v1/vms/web1/console", json=body, headers=ADMIN)
        assert (resp.status_code, resp.json["field"]) == (422, "console"), body
    assert len(consoles.typed) == 1


def test_put_console_past_the_bound_is_413_and_types_nothing(api, consoles):
    resp = api.simulate_put("/v1/vms/web1/console", body=b"x" * (CONSOLE_INPUT_MAX_BYTES + 1),
                            headers={**ADMIN, "Content-Type": "application/octet-stream"})
    assert (resp.status_code, resp.json["field"]) == (413, "console"), resp.text
    assert consoles.typed == []
    # Chunked (no Content-Length): read up to the bound plus one byte, then refused alike.
    resp = api.simulate_put("/v1/vms/web1/console", body=b"y" * (CONSOLE_INPUT_MAX_BYTES + 10),
                            headers={**ADMIN, "Transfer-Encoding": "chunked"})
    assert resp.status_code == 413 and consoles.typed == []


def test_put_console_to_a_stopped_or_missing_vm(api, consoles):
    consoles.running = False
    resp = api.simulate_put("/v1/vms/web1/console", body=b"ls\n", headers=ADMIN)
    assert (resp.status_code, resp.json["reason"]) == (409, "web1 is stopped: start it first")
    assert api.simulate_put("/v1/vms/nope/console", body=b"ls\n", headers=ADMIN).status_code == 404
    assert consoles.typed == []


def test_a_viewer_may_read_the_console_and_the_screen_but_not_type(api, service, consoles):
    viewer = add_user(service.store, "vera", "viewer")
    resp = api.simulate_put("/v1/vms/web1/console", body=b"reboot\n", headers=viewer)
    assert resp.status_code == 403 and resp.json["field"] == "role", resp.text
    assert consoles.typed == []
    refused = [e for e in service.list_events("web1") if e["actor"] == "vera"]
    assert [(e["message"], e["result"].split(":")[0]) for e in refused] == [
        ("PUT /v1/vms/web1/console", "403 Forbidden")]
    assert api.simulate_get("/v1/vms/web1/screen.png", headers=viewer).status_code == 200
    assert api.simulate_get("/v1/vms/web1/console", headers=viewer).status_code == 200


def test_get_screen_png_is_the_png_made_now(api, consoles):
    consoles.screens = [PNG_BYTES, PNG_BYTES + b"2"]
    first = api.simulate_get("/v1/vms/web1/screen.png", headers=ADMIN)
    assert first.status_code == 200 and first.content == PNG_BYTES
    assert first.headers["content-type"] == PNG
    assert first.headers["cache-control"] == "no-store" and "etag" not in first.headers
    second = api.simulate_get("/v1/vms/web1/screen.png", headers=ADMIN)
    assert second.content == PNG_BYTES + b"2"
    consoles.running = False
    stopped = api.simulate_get("/v1/vms/web1/screen.png", headers=ADMIN)
    assert (stopped.status_code, stopped.json["error"]) == (409, "Conflict")
    assert stopped.json["reason"] == "web1 is stopped: start it first"


# -- the mount (the FUSE operations, as the kernel calls them) -----------------------------------
class _Shell(FuseCalls):
    async def append(self, writes: list[bytes], flags: int = os.O_WRONLY | os.O_APPEND,
                     path: tuple[str, ...] = ("vms", "web1", "console")) -> int:
        """`printf ... >> vms/web1/console`, one write() per item; the errno of the first
        refusal (0: done)."""
        async def run() -> None:
            info = await self.fs.open(await self.inode(*path), flags, self.ctx)
            try:
                for index, data in enumerate(writes):
                    assert await self.fs.write(info.fh, 4096 * index, data) == len(data)
                await self.fs.flush(info.fh)
            finally:
                await self.fs.release(info.fh)
        return await self.errno_of(run)

    async def copy(self, *path: str) -> bytes:
        """`cp`: open, read in small pieces up to the end."""
        info = await self.fs.open(await self.inode(*path), os.O_RDONLY, self.ctx)
        out = b""
        try:
            while chunk := await self.fs.read(info.fh, len(out), 16):
                out += chunk
        finally:
            await self.fs.release(info.fh)
        return out


def test_each_write_to_the_console_is_typed_as_it_comes(service, consoles):
    shell = _Shell(service)
    # No newline, control characters, a byte that is not UTF-8: each write as it is.
    assert trio.run(shell.append, [b"echo hi", b"\r", CONTROL]) == 0
    assert consoles.typed == [b"echo hi", b"\r", CONTROL]
    assert trio.run(shell.append, [b"ls\n"], os.O_WRONLY | os.O_TRUNC) == 0  # `>` as `>>`
    assert trio.run(shell.append, [b"x\n"], os.O_RDWR) == 0
    assert consoles.typed[-2:] == [b"ls\n", b"x\n"]
    events = [e for e in service.list_events("web1") if e["kind"] == "write"]
    assert len(events) == 5 and events[-1]["message"] == "write vms/web1/console"


def test_the_console_is_typed_into_under_projects_too(service, consoles):
    path = ("projects", "default", "vms", "web1", "console")
    assert trio.run(functools.partial(_Shell(service).append, [b"id\n"], path=path)) == 0
    assert consoles.typed == [b"id\n"]
    assert trio.run(_Shell(service).copy, "projects", "default", "vms", "web1",
                    "screen.png") == PNG_BYTES


def test_a_console_write_past_the_bound_is_efbig_and_types_nothing(service, consoles):
    shell = _Shell(service)
    assert trio.run(shell.append, [b"y" * (CONSOLE_INPUT_MAX_BYTES + 1)]) == errno.EFBIG
    assert consoles.typed == []
    assert trio.run(shell.append, [b"y" * CONSOLE_INPUT_MAX_BYTES]) == 0
    assert consoles.typed == [b"y" * CONSOLE_INPUT_MAX_BYTES]


def test_the_console_of_a_stopped_vm_is_ebusy(service, consoles):
    consoles.running = False
    assert trio.run(_Shell(service).append, [b"ls\n"]) == errno.EBUSY


def _viewer(service, uid: int) -> Principal:
    service.store.insert_user({"name": "vera", "role": "viewer", "projects": ["default"],
                               "created": 0.0, "disabled": 0})
    mountmap.set_user(service.store, str(uid), "vera")
    return Principal(user="vera", role=Role.VIEWER, uid=uid, source="mount")


def test_a_viewer_cannot_open_the_console_to_type_and_is_recorded(service, consoles):
    with acting_as(_viewer(service, 1003)):
        shell = _Shell(service, 1003)
        assert trio.run(shell.append, [b"reboot\n"]) == errno.EACCES
        assert trio.run(shell.copy, "vms", "web1", "screen.png") == PNG_BYTES  # viewers watch
    assert consoles.typed == []
    refused = [e for e in service.list_events("web1") if e["kind"] == "refused"]
    assert [(e["actor"], e["message"]) for e in refused] == [("vera", "write vms/web1/console")]
    assert "may not console-input" in refused[0]["result"]


def test_screen_png_stat_open_and_reads_see_one_screenshot(service, consoles):
    consoles.screens = [PNG_BYTES, PNG_BYTES + b"-the next screen"]
    shell = _Shell(service)

    async def run() -> None:
        inode = await shell.inode("vms", "web1", "screen.png")
        attrs = await shell.fs.getattr(inode, shell.ctx)
        assert attrs.st_size == len(PNG_BYTES)
        assert stat.S_IMODE(attrs.st_mode) & 0o222 == 0  # read-only
        assert attrs.attr_timeout == 0 and attrs.entry_timeout == 0  # the kernel asks again
        assert await shell.copy("vms", "web1", "screen.png") == PNG_BYTES

    trio.run(run)
    assert consoles.shots == 1  # lookup, getattr and open within FRESH_SECONDS: one screenshot


def test_an_open_screen_png_keeps_its_bytes(service, consoles, monkeypatch):
    """Reads of one open file never mix two screens, however long the copy takes."""
    import fs.handles
    import fs.screenshots
    consoles.screens = [PNG_BYTES, b"\x89PNG-another-screen" * 20]
    shell = _Shell(service)

    async def run() -> bytes:
        info = await shell.fs.open(await shell.inode("vms", "web1", "screen.png"), os.O_RDONLY,
                                   shell.ctx)
        # Every read would fetch anew, and find no screenshot fresh enough to serve again.
        monkeypatch.setattr(fs.handles, "FRESH_SECONDS", -1.0)
        monkeypatch.setattr(fs.screenshots, "FRESH_SECONDS", -1.0)
        head = await shell.fs.read(info.fh, 0, 10)
        rest = await shell.fs.read(info.fh, 10, 1 << 20)
        again = await shell.fs.read(info.fh, 0, 1 << 20)
        await shell.fs.release(info.fh)
        assert again == head + rest
        return head + rest

    assert trio.run(run) == PNG_BYTES


def test_listing_a_vm_takes_no_screenshot_and_a_stopped_vm_lists(service, consoles):
    consoles.running = False
    shell = _Shell(service)

    async def run() -> list[str]:
        fh = await shell.fs.opendir(await shell.inode("vms", "web1"), shell.ctx)
        names = [name for name, _ in shell.fs.dirs[fh][1]]
        await shell.fs.releasedir(fh)
        inode = await shell.inode("vms", "web1", "screen.png")
        assert (await shell.fs.getattr(inode, shell.ctx)).st_size == 0
        code = await shell.errno_of(lambda: shell.fs.open(inode, os.O_RDONLY, shell.ctx))
        assert code == errno.EBUSY
        code = await shell.errno_of(lambda: shell.fs.open(inode, os.O_WRONLY, shell.ctx))
        assert code == errno.EACCES
        return names

    assert trio.run(run) == [*VM_FILES, "snapshots", "backups", "disks", "cdroms"]  # its dirs
    assert consoles.shots == 0


def test_a_slow_screenshot_does_not_hold_up_the_mount(service, consoles):
    """stat and open of screen.png run in a worker thread: other requests are served
    meanwhile (on the loop, a 1 s screenshot stalled every caller of the mount)."""
    consoles.delay = 1.0
    shell = _Shell(service)
    done: dict[str, float] = {}

    async def run() -> None:
        state = await shell.inode("vms", "web1", "state")
        start = trio.current_time()

        async def copy() -> None:
            await shell.copy("vms", "web1", "screen.png")
            done["screen"] = trio.current_time() - start

        async with trio.open_nursery() as nursery:
            nursery.start_soon(copy)
            await trio.sleep(0.1)
            await shell.fs.getattr(state, shell.ctx)
            done["state"] = trio.current_time() - start

    trio.run(run)
    assert done["state"] < 0.5 < 1.0 <= done["screen"], done


def test_open_screenshots_hold_a_bounded_number_of_bytes(service, consoles, monkeypatch):
    """Each open screen.png holds its bytes until closed: past the mount's bound, EBUSY."""
    import fs.screenshots
    monkeypatch.setattr(fs.screenshots, "OPEN_BYTES", len(PNG_BYTES) * 2)
    shell = _Shell(service)

    async def run() -> None:
        inode = await shell.inode("vms", "web1", "screen.png")
        held = [await shell.fs.open(inode, os.O_RDONLY, shell.ctx) for _ in range(2)]
        code = await shell.errno_of(lambda: shell.fs.open(inode, os.O_RDONLY, shell.ctx))
        assert code == errno.EBUSY
        await shell.fs.release(held[0].fh)
        again = await shell.fs.open(inode, os.O_RDONLY, shell.ctx)
        assert await shell.fs.read(again.fh, 0, 1 << 20) == PNG_BYTES
        for info in (held[1], again):
            await shell.fs.release(info.fh)
        assert shell.fs.tree.screenshots.lent == 0

    trio.run(run)

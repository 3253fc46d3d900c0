"""An image written piece by piece (the mount's `cp FILE images/`): the image store's
private file, the upload's checks, and an `image-import` operation of no VM that
follows its bytes, ends with the outcome, and is never run by the controller."""
from __future__ import annotations

import os
import subprocess
import time

import pytest

from appliance.errors import Invalid
from appliance.model import OpStatus
from appliance.controller import loop
from appliance.service.images import IMPORT_KIND, started
from tests.unit.conftest import make_disk_image


def _write(fd: int, source) -> int:
    data = source.read_bytes()
    os.pwrite(fd, data, 0)
    os.close(fd)
    return len(data)


def test_a_file_registered_is_an_image_and_its_operation_succeeds(service, config, tmp_path):
    disk = tmp_path / "d.img"
    make_disk_image(disk)
    tmp, fd, op_id = service.begin_image_file("fresh", "a test")
    assert tmp.parent == config.images_dir and tmp.name.startswith(".upload-fresh-")
    assert oct(os.stat(tmp).st_mode & 0o777) == oct(0o600)
    op = service.get_operation(op_id)
    assert (op["kind"], op["status"], op["vm_id"], op["params"]["image"]) == (
        IMPORT_KIND, OpStatus.RUNNING, None, "fresh")
    size = _write(fd, disk)
    service.image_file_progress(op_id, size)
    assert service.get_operation(op_id)["bytes_done"] == size
    image = service.register_image_file("fresh", tmp, "a test", op_id)
    assert image["name"] == "fresh" and image["format"] == "qcow2" and not tmp.exists()
    op = service.get_operation(op_id)
    assert (op["status"], op["progress"], op["error"]) == (OpStatus.SUCCEEDED, 100, None)


def test_a_refused_file_fails_its_operation_and_is_removed(service, tmp_path):
    backed = tmp_path / "backed.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", "/etc/hostname", "-F", "raw",  # noqa: S607
                    str(backed), "1M"], check=True)
    tmp, fd, op_id = service.begin_image_file("evil", "a test")
    _write(fd, backed)
    with pytest.raises(Invalid, match="backing file"):
        service.register_image_file("evil", tmp, "a test", op_id)
    op = service.get_operation(op_id)
    assert op["status"] == OpStatus.FAILED and "backing file" in op["error"]
    assert not tmp.exists() and service.list_images()[-1]["name"] != "evil"


def test_only_the_image_stores_own_files_are_registered(service, config, tmp_path):
    elsewhere = tmp_path / ".upload-x"
    make_disk_image(elsewhere)
    with pytest.raises(Invalid, match="not a file this image store made"):
        service.register_image_file("x", elsewhere, "a test", "no-op")
    assert elsewhere.exists()


def test_an_import_of_a_process_that_is_gone_is_failed_and_the_controller_leaves_them(
        service, controller, monkeypatch):
    _tmp, fd, mine = service.begin_image_file("mine", "a test")
    os.close(fd)
    _tmp2, fd, gone = service.begin_image_file("gone", "a test")
    os.close(fd)
    dead = subprocess.Popen(["true"])  # noqa: S607
    dead.wait()
    service.store.update_operation(gone, params={"image": "gone", "pid": dead.pid})
    submitted: list[str] = []
    monkeypatch.setattr(controller.operations.pool, "submit", lambda _fn, op: submitted.append(op["id"]))
    controller.operations.dispatch()  # no VM: nothing to run, nothing to fail
    assert mine not in submitted and gone not in submitted
    assert service.get_operation(mine)["status"] == OpStatus.RUNNING
    assert service.end_interrupted_image_files() == 1
    assert service.get_operation(gone)["status"] == OpStatus.FAILED
    assert service.get_operation(mine)["status"] == OpStatus.RUNNING  # this process: alive


def test_an_import_whose_mount_exits_after_the_next_mounts_start_is_ended_by_the_controller(
        service, controller, monkeypatch):
    """Found by `make soak PART=kill-serve`: serve SIGKILLed during a `cp` into images/; its
    mount, still exiting, was alive when the new mount's start ended the interrupted
    imports, and the import stayed running until the next start (90 s and more). The
    controller now ends it once its process is gone."""
    monkeypatch.setattr(loop, "IMPORT_SWEEP_SECONDS", 0.2)
    _tmp, fd, op = service.begin_image_file("cut", "a test")
    os.close(fd)
    exiting = subprocess.Popen(["sleep", "60"])  # noqa: S607 - the old mount, still exiting
    try:
        service.store.update_operation(op, params={"image": "cut", "pid": exiting.pid,
                                                   "pid_start": started(exiting.pid)})
        assert service.end_interrupted_image_files() == 0  # the new mount's start: alive
    finally:
        exiting.kill()
        exiting.wait()
    deadline = time.monotonic() + 15
    while service.get_operation(op)["status"] == OpStatus.RUNNING and time.monotonic() < deadline:
        controller._nudge()
        time.sleep(0.1)
    ended = service.get_operation(op)
    assert ended["status"] == OpStatus.FAILED and ended["error"] == "interrupted: the mount stopped"


def test_a_reused_pid_or_another_namespace(service):
    """A pid alive but another process's (its start differs) is gone; one recorded in
    another pid namespace (a mount in a container) is not judged by its pid here, but by
    its mount's beat (the next test): just started, it runs."""
    _tmp, fd, reused = service.begin_image_file("reused", "a test")
    os.close(fd)
    _tmp, fd, elsewhere = service.begin_image_file("elsewhere", "a test")
    os.close(fd)
    me = os.getpid()
    service.store.update_operation(reused, params={"image": "reused", "pid": me,
                                                   "pid_start": started(me) + 1})
    service.store.update_operation(elsewhere, params={"image": "elsewhere", "pid": 2 ** 22 + 1,
                                                      "pid_ns": "pid:[1]"})
    assert service.end_interrupted_image_files() == 1
    assert service.get_operation(reused)["status"] == OpStatus.FAILED
    assert service.get_operation(elsewhere)["status"] == OpStatus.RUNNING


def test_an_import_of_a_mount_that_died_but_was_not_reaped_is_ended(service):
    """Security review (session 14): a zombie keeps its /proc/PID/stat and its start time,
    and an import of a mount killed but not yet reaped (its parent busy, or a container's
    pid 1 that reaps nothing) was judged alive for as long as that lasted."""
    _tmp, fd, op = service.begin_image_file("zombie", "a test")
    os.close(fd)
    dead = subprocess.Popen(["sleep", "60"])  # noqa: S607 - the mount, killed, not reaped
    try:
        start = started(dead.pid)
        service.store.update_operation(op, params={"image": "zombie", "pid": dead.pid,
                                                   "pid_start": start})
        dead.kill()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # a zombie once its exit is done (not reaped)
            with open(f"/proc/{dead.pid}/stat", "rb") as stat:
                if stat.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    break
            time.sleep(0.01)
        assert service.end_interrupted_image_files() == 1
        assert service.get_operation(op)["status"] == OpStatus.FAILED
    finally:
        dead.kill()
        dead.wait()


def test_an_import_of_another_pid_namespace_ends_when_its_mounts_beats_stop(service):
    """Left open in session 14: an import recorded in another pid namespace (a mount in a
    container over the same home) was never judged, and stayed running until that mount's
    next start. Its mount's beat (params "beat") now tells; before the first beat, its start."""
    ops = {}
    for name in ("beating", "silent", "unbeaten"):
        _tmp, fd, ops[name] = service.begin_image_file(name, "a test")
        os.close(fd)
    now = service.clock()
    elsewhere = {"pid": 2 ** 22 + 1, "pid_ns": "pid:[1]"}
    service.store.update_operation(ops["beating"], params={"image": "beating", **elsewhere,
                                                           "beat": now - 5})
    service.store.update_operation(ops["silent"], params={"image": "silent", **elsewhere,
                                                          "beat": now - 61})
    service.store.update_operation(ops["unbeaten"], started=now - 61,
                                   params={"image": "unbeaten", **elsewhere})
    assert service.end_interrupted_image_files() == 2
    assert service.get_operation(ops["beating"])["status"] == OpStatus.RUNNING
    for name in ("silent", "unbeaten"):
        ended = service.get_operation(ops[name])
        assert (ended["status"], ended["error"]) == (OpStatus.FAILED,
                                                     "interrupted: the mount stopped")


def test_a_beat_is_recorded_on_running_imports_only(service):
    _tmp, fd, running = service.begin_image_file("running", "a test")
    os.close(fd)
    _tmp, fd, ended = service.begin_image_file("ended", "a test")
    os.close(fd)
    service.end_image_file(ended, OpStatus.CANCELLED, "removed before its end")
    before = service.get_operation(running)["params"]
    service.image_files_beat([running, ended, "no-such-operation"])
    after = service.get_operation(running)["params"]
    assert after == {**before, "beat": pytest.approx(service.clock(), abs=5)}
    assert "beat" not in service.get_operation(ended)["params"]


def test_the_sweep_does_not_fail_an_import_its_mount_ended_meanwhile(service, monkeypatch):
    """Review of 407046d: the sweep listed the running imports, then ended those it judged
    gone with no second look: an import whose mount registered it in between was turned
    from succeeded to failed, its image registered."""
    _tmp, fd, op = service.begin_image_file("done", "a test")
    os.close(fd)
    dead = subprocess.Popen(["true"])  # noqa: S607
    dead.wait()
    service.store.update_operation(op, params={"image": "done", "pid": dead.pid})
    listed = service.store.list_operations(status=OpStatus.RUNNING, limit=10000)
    service.end_image_file(op, OpStatus.SUCCEEDED, None)  # its mount's end, after the listing
    monkeypatch.setattr(service.store, "list_operations", lambda **_kw: listed)
    assert service.end_interrupted_image_files() == 0
    assert service.get_operation(op)["status"] == OpStatus.SUCCEEDED

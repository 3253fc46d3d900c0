"""While an import runs, its mount beats its operation every BEAT_SECONDS (fs/import_beat.py),
so that a controller in another pid namespace, where the mount's pid means nothing, can end
the imports of a mount that is gone (appliance/service/images.py). One thread, ended with the
last import; the next import starts another. An import is beaten until its operation ends,
its check and conversion included."""
from __future__ import annotations

import errno
import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pyfuse3
import pytest

from appliance.model import OpStatus
from appliance.service import images
from fs import import_beat
from fs.image_imports import ImageImports
from tests.unit.conftest import make_disk_image

WAIT = 30.0  # bound on waits (never reached when the code is right)


class _Service:
    def __init__(self, home: Path):
        self.home = home
        self.config = SimpleNamespace(max_image_bytes=1 << 30, images_dir=home)
        self.store = SimpleNamespace(image_exists=lambda _name: False)
        self.beats: list[list[str]] = []
        self.count = 0

    def end_interrupted_image_files(self) -> None:
        pass

    def begin_image_file(self, name: str, source: str) -> tuple[Path, int, str]:
        self.count += 1
        tmp = self.home / f".upload-{name}-{self.count}"
        return tmp, os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600), f"op-{self.count}"

    def end_image_file(self, op_id: str, status: str, why: str) -> None:
        pass

    def image_files_beat(self, op_ids: list[str]) -> None:
        self.beats.append(sorted(op_ids))


def _until(check, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _beaters() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "import-beat"]


def test_the_mount_beats_its_running_imports_and_stops_with_the_last(tmp_path, monkeypatch):
    monkeypatch.setattr(import_beat, "BEAT_SECONDS", 0.05)
    service = _Service(tmp_path)
    imports = ImageImports(service)
    first = imports.begin(("images", "a.raw"), 0)
    second = imports.begin(("images", "b.raw"), 0)
    _until(lambda: ["op-1", "op-2"] in service.beats, "both running imports beaten")
    assert len(_beaters()) == 1  # one thread for every import
    imports.drop(("images", "a.raw"), first)
    _until(lambda: service.beats[-1] == ["op-2"], "the dropped import no longer beaten")
    seen = len(service.beats)  # every beat from here on was listed after the drop
    _until(lambda: len(service.beats) >= seen + 2, "beats go on while one import runs")
    assert all(beat == ["op-2"] for beat in service.beats[seen - 1:])
    imports.drop(("images", "b.raw"), second)
    _until(lambda: not _beaters(), "the beat ends with the last import")
    seen = len(service.beats)
    time.sleep(0.2)
    assert len(service.beats) == seen
    third = imports.begin(("images", "c.raw"), 0)
    _until(lambda: ["op-3"] in service.beats, "the next import starts the beat again")
    imports.drop(("images", "c.raw"), third)
    _until(lambda: not _beaters(), "and it ends again")


def test_an_import_being_converted_is_beaten_and_not_ended_elsewhere(
        service, tmp_path, monkeypatch):
    """Review of 407046d: the beat listed the imports still open, and an import's check and
    conversion (minutes for a large image) ran after its close: a judge in another pid
    namespace ended it as interrupted while it was converted, and its end then said it
    succeeded."""
    monkeypatch.setattr(import_beat, "BEAT_SECONDS", 0.05)
    imports = ImageImports(service)
    path = ("images", "big.raw")
    found = imports.begin(path, os.getuid())
    disk = tmp_path / "d.img"
    make_disk_image(disk)
    imports.write(found, 0, disk.read_bytes())
    register, seen = service.register_image_file, {}

    def slow_register(*args):  # a conversion that outlives the beats' 60 s
        beat = service.get_operation(found.op_id)["params"].get("beat")
        _until(lambda: service.get_operation(found.op_id)["params"].get("beat") != beat,
               "beaten while it is converted")
        later = service.get_operation(found.op_id)["params"]["beat"]
        monkeypatch.setattr(images, "pid_namespace", lambda: "pid:[another]")  # the judge's
        images.end_interrupted_imports(service.store, lambda: later + 30)
        seen["during"] = service.get_operation(found.op_id)["status"]
        return register(*args)

    monkeypatch.setattr(service, "register_image_file", slow_register)
    imports.finish(path, found)
    assert seen["during"] == OpStatus.RUNNING
    assert service.get_operation(found.op_id)["status"] == OpStatus.SUCCEEDED
    _until(lambda: not _beaters(), "the beat ends with the import's operation")


def test_no_thread_for_the_beat_is_eagain_and_records_nothing(tmp_path, monkeypatch):
    """Review of 407046d: a thread start refused (pids.max) left the beat's thread set but
    never started, so no later import of that mount was beaten, and left a half-made
    import (its operation and file recorded, its begin failed)."""
    monkeypatch.setattr(import_beat, "BEAT_SECONDS", 0.05)
    service = _Service(tmp_path)
    imports = ImageImports(service)
    real_start = threading.Thread.start

    def refused(self):
        if self.name == "import-beat":
            raise RuntimeError("can't start new thread")
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", refused)
    with pytest.raises(pyfuse3.FUSEError) as refusal:
        imports.begin(("images", "a.raw"), 0)
    assert refusal.value.errno == errno.EAGAIN
    assert (service.count, imports.files) == (0, {})  # nothing recorded
    monkeypatch.setattr(threading.Thread, "start", real_start)
    found = imports.begin(("images", "a.raw"), 0)
    _until(lambda: ["op-1"] in service.beats, "the next import is beaten")
    imports.drop(("images", "a.raw"), found)
    _until(lambda: not _beaters(), "and the beat ends with it")

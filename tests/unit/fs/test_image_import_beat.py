"""While an import runs, its mount beats its operation every BEAT_SECONDS (fs/image_imports.py),
so that a controller in another pid namespace, where the mount's pid means nothing, can end
the imports of a mount that is gone (appliance/service/images.py). One thread, ended with the
last import; the next import starts another."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from fs import image_imports
from fs.image_imports import ImageImports

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
    monkeypatch.setattr(image_imports, "BEAT_SECONDS", 0.05)
    service = _Service(tmp_path)
    imports = ImageImports(service)
    first = imports.begin(("images", "a.raw"), 0)
    second = imports.begin(("images", "b.raw"), 0)
    _until(lambda: ["op-1", "op-2"] in service.beats, "both running imports beaten")
    assert len(_beaters()) == 1  # one thread for every import
    imports.drop(("images", "a.raw"), first)
    service.beats.clear()
    _until(lambda: len(service.beats) >= 2, "beats go on while one import runs")
    assert all(beat == ["op-2"] for beat in service.beats)
    imports.drop(("images", "b.raw"), second)
    _until(lambda: not _beaters(), "the beat ends with the last import")
    service.beats.clear()
    time.sleep(0.2)
    assert service.beats == []
    third = imports.begin(("images", "c.raw"), 0)
    _until(lambda: ["op-3"] in service.beats, "the next import starts the beat again")
    imports.drop(("images", "c.raw"), third)
    _until(lambda: not _beaters(), "and it ends again")

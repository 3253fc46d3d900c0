"""An import's fd is never used after it was closed (fs/image_imports.py). Its write,
truncate, finish (the writer's close) and drop (`rm images/FILE`) run in worker threads
of their own, and an `rm` or a close (a forked child's close-on-exec) can come while a
write of the same import is between its `closed` check and its pwrite. Closed under it,
the fd's number goes to the next file the mount opens (another import, a worker thread's
store connection: the database), and the write's bytes, at the writer's offset, went
there. Found by review (session 13)."""
from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from fs.image_imports import ImageImports, Import

WAIT = 30.0  # bound on waits for a thread (never reached when the code is right)


class _Service:
    def __init__(self, home: Path):
        self.config = SimpleNamespace(max_image_bytes=1 << 30, images_dir=home)
        self.ended: list[tuple[str, str]] = []

    def end_interrupted_image_files(self) -> None:
        pass

    def end_image_file(self, op_id: str, status: str, why: str) -> None:
        self.ended.append((op_id, status))

    def image_file_progress(self, op_id: str, done: int) -> None:
        pass


class _Watched:
    """The import's lock, telling when a second thread asks for it while it is held."""

    def __init__(self, lock, asked: threading.Event):
        self.lock, self.asked = lock, asked

    def __enter__(self):
        if not self.lock.acquire(blocking=False):
            self.asked.set()  # another thread holds it: this one waits
            self.lock.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.lock.release()


def test_an_rm_during_a_write_never_sends_its_bytes_to_a_reused_fd(tmp_path: Path):
    imports = ImageImports(_Service(tmp_path))
    path = ("images", "disk.raw")
    tmp = tmp_path / ".upload-disk-1-x"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    found = imports.files[path] = Import("disk", 0, tmp, fd, time.time(), "op-1", "test")
    other = tmp_path / "victim"  # what the mount opens next (a store connection, say)
    progressed = threading.Event()  # the rm ended, or waits for the write
    if hasattr(found, "lock"):
        found.lock = _Watched(found.lock, progressed)
    opened: list[int] = []
    room = imports._room

    def rm() -> None:
        imports.drop(path, found)
        progressed.set()

    def room_then_rm(found_: Import, end: int, grows: int) -> None:
        room(found_, end, grows)
        remover = threading.Thread(target=rm)
        remover.start()
        assert progressed.wait(WAIT)
        opened.append(os.open(other, os.O_RDWR | os.O_CREAT, 0o600))
        threads.append(remover)

    threads: list[threading.Thread] = []
    imports._room = room_then_rm  # type: ignore[method-assign]
    try:
        imports.write(found, 0, b"attacker's bytes")
    except OSError:  # EBADF: the import was gone (either answer is right)
        pass
    for thread in threads:
        thread.join(WAIT)
    for opened_fd in opened:
        os.close(opened_fd)
    assert opened, "the write never reached its room check"
    assert other.read_bytes() == b"", "an import's bytes went to another file"
    assert found.closed and not tmp.exists()
    assert imports.files == {}
    assert imports.service.ended == [("op-1", "cancelled")]

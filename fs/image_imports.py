"""`cp FILE images/` (issue 16): an image imported through the mount, by the rules of
an upload (appliance/image_store.py, PUT /v1/images/NAME).

A new name in images/ other than NAME.json is an import: `NAME`, or NAME with one
of SUFFIXES (`debian.qcow2`), names the image NAME (a DNS label, else EINVAL; an
image or an import of that name already: EEXIST). Making one takes what an upload
takes (the policy's ADMIN), and at most AT_ONCE run at once (EBUSY).

Its bytes go to a private file the image store makes in HOME/images
(`.upload-NAME-*`, mode 0600, O_EXCL|O_NOFOLLOW: no name from the mount reaches
any other file), written at the offsets they come at, never held in memory:
at most `max_image_bytes` (EFBIG) and only while the disk keeps the image
store's FREE_SPACE_RESERVE free (ENOSPC), as an upload. A write refused
spoils the import: it is dropped at close.

When its writer closes it (the flush of close(), so `cp` reports the answer;
a close that leaves the file held by another process of its writer's uid, a
forked child's copy of the fd, is not the end: held_elsewhere), the file is
checked and converted as an upload is: the format read from its own
bytes, backing files, external data files, encryption and other formats refused
(EINVAL), then stored as a fresh qcow2 (an ISO as it came). Then images/NAME.json
shows it, and the import's own name is gone. Until then the import is its
writer's alone (another uid: ENOENT), `ls -l` shows the bytes received, and `rm`
drops it. An import its writer never closed goes at release. Its progress is an
`image-import` operation of no VM (GET /v1/operations): bytes_done every
PROGRESS_SECONDS, then succeeded, failed with the reason, or cancelled by `rm`;
one left running by a mount that stopped is failed when a mount starts again, or by
the controller within IMPORT_SWEEP_SECONDS of its process's end. Until each ends,
the mount beats their operations (fs/import_beat.py): a controller in another pid
namespace, where the mount's pid means nothing, ends them once the beats stop.

A copy cut short (a killed `cp`) closes the file too: what arrived is checked as
if complete (a cut qcow2 is refused by the check; a cut raw disk is not).

`rm images/NAME.json` deletes an image no VM uses (EBUSY while one does), as
DELETE /v1/images/NAME.
"""
from __future__ import annotations

import dataclasses
import errno
import logging
import os
import threading
import time
from pathlib import Path as FilePath

import pyfuse3

from appliance.errors import Invalid, TooLarge
from appliance.image_store import FREE_SPACE_RESERVE, SPACE_RECHECK_BYTES, free_bytes
from appliance.model import OpStatus
from appliance.service import Service
from fs import limits
from fs.import_beat import ImportBeat
from fs.nodes import Node, Path, json_name

log = logging.getLogger("vmctl.fs")

IMAGES = "images"
SUFFIXES = (".qcow2", ".img", ".raw", ".iso")
AT_ONCE = 4
PROGRESS_SECONDS = 1.0  # how often an import's operation is told its bytes


@dataclasses.dataclass
class Import:
    image: str  # the image's name
    uid: int
    tmp: FilePath
    fd: int
    created: float
    op_id: str  # its `image-import` operation: bytes_done, then the outcome
    source: str  # what the image's record says it came from
    reported: float = 0.0  # when bytes_done was last written (monotonic)
    size: int = 0  # the file's size (the end of the furthest write, or a truncate)
    checked_at: int = 0  # the size at which the free space was last looked at
    spoiled: bool = False  # a write was refused: dropped at close
    closed: bool = False  # registered or dropped: its fd and file are gone
    # Held while its fd is used or closed: write, truncate, finish and drop run in worker
    # threads of their own (an `rm`, a forked child's close, while a write is under way),
    # and a write between its `closed` check and its pwrite sent its bytes to whatever
    # file took the fd's number once it was closed (another import, the store's database).
    lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)


def image_name(file: str) -> str:
    """The image a file named in images/ imports: its name without one of SUFFIXES."""
    for suffix in SUFFIXES:
        if file.endswith(suffix):
            file = file[: -len(suffix)]
            break
    return limits.check_name(file, "name")


def held_elsewhere(file: str, uid: int) -> bool:
    """Whether a process of the import's writer (`uid`: its processes, /proc/PID's owner)
    still has an fd on `file` (an import's path in the mount, as /proc/PID/fd shows it). A
    FLUSH comes at every close() of an fd sharing the open file, and pyfuse3's does not say
    whose; a close (or a process's exit) takes the fd out of its table before the FLUSH is
    sent, so the last close finds none left, and the close of a forked child whose parent
    goes on writing finds the parent's. A second open of an import is EBUSY, so any fd on
    its path is one of its writer's. Other uids' processes are not read: the path is only
    a string, which a file of theirs at the same path has too (in a mount namespace of
    their own), and their fds, as many as they open, would be read at every close
    (security review, session 14). Not seen: fds in another PID namespace, in flight in a
    unix socket, or in a process of another uid (a setuid program, one non-dumpable: its
    /proc/PID is root's); the import then ends at its release (the last close,
    asynchronous to it). ~10 ms for 1,600 fds in 150 processes."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        fds = f"/proc/{pid}/fd"
        try:
            if os.stat(f"/proc/{pid}").st_uid != uid:
                continue
            names = os.listdir(fds)
        except OSError:  # gone, or not ours to read
            continue
        for fd in names:
            try:
                if os.readlink(f"{fds}/{fd}") == file:
                    return True
            except OSError:
                continue
    return False


def takes(path: Path) -> bool:
    """Whether a new name at path is an import (any name in images/ but NAME.json)."""
    return len(path) == 2 and path[0] == IMAGES and not path[1].endswith(".json")


def decided_as(path: Path, verb: str) -> tuple[str, Path] | None:
    """An import's write or truncate is decided by the policy as its making (ADMIN)."""
    return ("create", path) if verb == "write" and takes(path) else None


class ImageImports:
    def __init__(self, service: Service):
        self.service = service
        self.files: dict[Path, Import] = {}
        self.beat = ImportBeat(service)  # for a judge in another pid namespace
        try:  # a mount that stopped mid-copy left its operation running
            service.end_interrupted_image_files()
        except Exception:  # the mount serves whether or not they could be ended
            log.exception("could not end the interrupted image imports")

    def get(self, path: Path, uid: int | None) -> Import | None:
        found = self.files.get(path)
        return found if found is not None and found.uid == uid else None

    @staticmethod
    def node(found: Import) -> Node:
        return Node(False, writable=True, size=found.size, created=found.created,
                    changed=time.time(), volatile=True, private=True)

    def stat(self, path: Path, uid: int | None) -> Node | None:
        found = self.get(path, uid)
        return None if found is None else self.node(found)

    def entries(self, directory: Path, uid: int | None) -> list[tuple[str, Node]]:
        if directory != (IMAGES,):
            return []
        return [(path[1], self.node(found)) for path, found in list(self.files.items())
                if found.uid == uid]

    def begin(self, path: Path, uid: int) -> Import:
        """A new import (a worker thread: it makes the file)."""
        name = image_name(path[1])
        if path in self.files or any(f.image == name for f in self.files.values()):
            raise pyfuse3.FUSEError(errno.EEXIST)
        if self.service.store.image_exists(name):
            raise pyfuse3.FUSEError(errno.EEXIST)
        if len(self.files) >= AT_ONCE:
            raise pyfuse3.FUSEError(errno.EBUSY)
        source = f"the mount (uid {uid}, file {limits.excerpt(path[1], 64)!r})"
        with self.beat.starting() as beaten:
            tmp, fd, op_id = self.service.begin_image_file(name, source)
            beaten(op_id)
        found = self.files[path] = Import(name, uid, tmp, fd, time.time(), op_id, source,
                                          reported=time.monotonic())
        log.info("import of image %s started by uid %s (operation %s)", name, uid, op_id)
        return found

    def _room(self, found: Import, end: int, grows: int) -> None:
        """An upload's bounds for a file growing to `end` bytes (`grows` more on disk)."""
        try:
            if end > self.service.config.max_image_bytes:
                raise TooLarge(f"the image is larger than max_image_bytes "
                               f"({self.service.config.max_image_bytes} bytes)", "file")
            if end - found.checked_at >= SPACE_RECHECK_BYTES or found.checked_at == 0:
                found.checked_at = max(end, 1)
                if free_bytes(self.service.config.images_dir) < FREE_SPACE_RESERVE + grows:
                    raise pyfuse3.FUSEError(errno.ENOSPC)
        except BaseException:
            found.spoiled = True
            raise

    def write(self, found: Import, off: int, buf: bytes) -> None:
        """Bytes at an offset, on disk (a worker thread)."""
        with found.lock:
            if found.closed:
                raise pyfuse3.FUSEError(errno.EBADF)
            end = off + len(buf)
            self._room(found, end, max(0, end - found.size))
            os.pwrite(found.fd, buf, off)
            found.size = max(found.size, end)
        if time.monotonic() - found.reported >= PROGRESS_SECONDS:
            found.reported = time.monotonic()
            self.service.image_file_progress(found.op_id, found.size)

    def truncate(self, found: Import, size: int) -> None:
        with found.lock:
            if found.closed:
                raise pyfuse3.FUSEError(errno.EBADF)
            self._room(found, size, max(0, size - found.size))
            os.ftruncate(found.fd, size)
            found.size = size

    def finish(self, path: Path, found: Import) -> dict | None:
        """Its writer's close (a worker thread): checked and recorded as an upload; a
        spoiled one dropped. None when it was finished already."""
        if not self._close(path, found):
            return None  # finished or dropped already (by another close, an rm)
        try:
            if found.spoiled:
                found.tmp.unlink(missing_ok=True)
                self.service.end_image_file(found.op_id, OpStatus.FAILED, "a write was refused")
                raise Invalid("the copy failed: nothing imported", "file")
            self.service.image_file_progress(found.op_id, found.size)
            return self.service.register_image_file(found.image, found.tmp, found.source,
                                                    found.op_id)
        finally:
            self.beat.done(found.op_id)

    def drop(self, path: Path, found: Import) -> None:
        """An import given up (rm, or released without a close): its file removed."""
        if self._close(path, found):
            try:
                found.tmp.unlink(missing_ok=True)
                self.service.end_image_file(found.op_id, OpStatus.CANCELLED,
                                            "removed before its end")
                log.info("import of image %s dropped", found.image)
            finally:
                self.beat.done(found.op_id)

    def _close(self, path: Path, found: Import) -> bool:
        """Its fd closed, once no write uses it; False: closed before (by another thread)."""
        with found.lock:
            if found.closed:
                return False
            found.closed = True
            if self.files.get(path) is found:
                del self.files[path]
            os.close(found.fd)
            return True

    def remove(self, path: Path, uid: int | None) -> None:
        """rm images/FILE: an import of this uid's dropped, or images/NAME.json deleted."""
        found = self.get(path, uid)
        if found is not None:
            self.drop(path, found)
            return
        if takes(path):
            raise pyfuse3.FUSEError(errno.ENOENT)
        self.service.delete_image(json_name(path[1], "image"))

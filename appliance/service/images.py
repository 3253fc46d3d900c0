"""Images: import (from the admin's folder or a trusted path), upload, list, delete."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from appliance.errors import ApplianceError, Conflict, NotFound
from appliance.image_store import ByteSource, ImageStore
from appliance.model import OpStatus
from appliance.service.base import ServiceBase
from appliance.store import Row, Store

IMPORT_KIND = "image-import"  # an operation of no VM: an image copied in through the mount


def started(pid: int) -> int | None:
    """When the process began (clock ticks after boot, /proc/PID/stat field 22): with
    its pid, which process it is (a pid is reused; that pair is not). None when there is
    none, or only its zombie (state Z or X, field 3: its process is gone, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            fields = stat.read().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[19]) if len(fields) > 19 and fields[0] not in (b"Z", b"X") else None


def pid_namespace() -> str | None:
    """This process's pid namespace ("pid:[4026531836]"): a pid means something only there."""
    try:
        return os.readlink("/proc/self/ns/pid")
    except OSError:
        return None


# An import's mount tells the store it still runs every BEAT_SECONDS (params "beat", the
# store's clock; fs/import_beat.py). A pid means nothing outside its pid namespace: an
# import recorded in another one (a mount in a container over the same home) is judged by
# that beat instead, and ended once none came for BEAT_STALE_SECONDS.
BEAT_SECONDS = 10.0
BEAT_STALE_SECONDS = 60.0


def _alive(op: Row, now: float) -> bool:
    """Whether the process that writes an import (its pid, and its start when recorded)
    runs; one in another pid namespace by its mount's beat (or its start, before one)."""
    params = op["params"]
    namespace = params.get("pid_ns")
    if namespace is not None and namespace != pid_namespace():
        beat = params.get("beat")
        last = beat if isinstance(beat, (int, float)) else (op.get("started") or 0.0)
        return now - last < BEAT_STALE_SECONDS
    running, start = started(params["pid"]), params.get("pid_start")
    return running is not None and (not isinstance(start, int) or running == start)


def end_interrupted_imports(store: Store, clock: Callable[[], float]) -> int:
    """Fail the `image-import` operations still running in a process that is gone (a mount
    that stopped mid-copy; its file goes at the appliance's next start). At each mount's
    start, and by the controller every IMPORT_SWEEP_SECONDS: a mount started while the
    one it replaces was still exiting saw that one's import as alive, and the import
    stayed running until the next start (`make soak PART=kill-serve`, 90 s and more)."""
    ended = 0
    for op in store.list_operations(status=OpStatus.RUNNING, limit=10000):
        pid = op["params"].get("pid") if op["kind"] == IMPORT_KIND else None
        if not isinstance(pid, int) or _alive(op, clock()):
            continue
        with store.transaction():  # as it is now: its mount may have ended it, or beaten it
            try:
                op = store.get_operation(op["id"])
            except NotFound:
                continue
            if op["status"] == OpStatus.RUNNING and not _alive(op, clock()):
                end_image_file(store, clock, op["id"], OpStatus.FAILED,
                               "interrupted: the mount stopped")
                ended += 1
    return ended


def end_image_file(store: Store, clock: Callable[[], float], op_id: str, status: OpStatus,
                   error: str | None) -> None:
    done = {"progress": 100} if status == OpStatus.SUCCEEDED else {}
    store.update_operation(op_id, status=status.value, error=error, finished=clock(), **done)


class Images(ServiceBase):
    def list_images(self) -> list[Row]:
        return self.store.list_images()

    def get_image(self, name: str) -> Row:
        return self.store.get_image(name)

    def _image_store(self) -> ImageStore:
        return ImageStore(self.store, self.config, self.clock)

    def import_image(self, name: str, path: str) -> Row:
        """Copy a file from the admin's image import directory (POST /v1/images {"path"})."""
        return self._image_store().import_from_path(name, path)

    def import_image_file(self, name: str, path: str | Path) -> Row:
        """Copy a file the admin named outside the API (vmctl serve --demo-image, fixtures)."""
        return self._image_store().import_trusted(name, path)

    def upload_image(self, name: str, stream: ByteSource, length: int | None) -> Row:
        return self._image_store().upload(name, stream, length)

    # -- an image written piece by piece (the mount's `cp FILE images/`, fs/image_imports.py),
    # with its progress in an operation of its own: no VM, nothing for the controller to run.
    def begin_image_file(self, name: str, source: str) -> tuple[Path, int, str]:
        """A private file for the image (ImageStore.begin_file): its path, an fd on it, and
        the id of a running `image-import` operation whose bytes_done follow the copy."""
        tmp, fd = self._image_store().begin_file(name)
        now, op_id = self.clock(), str(self.uuidgen())
        try:
            self.store.insert_operation({
                "id": op_id, "vm_id": None, "vm_name": None, "project": self._project(),
                "kind": IMPORT_KIND, "status": OpStatus.RUNNING.value, "progress": 0,
                "bytes_done": 0, "bytes_total": None, "error": None, "created": now,
                "started": now, "finished": None,
                "params": {"image": name, "source": source, "pid": os.getpid(),
                           "pid_start": started(os.getpid()), "pid_ns": pid_namespace()}})
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        return tmp, fd, op_id

    def image_file_progress(self, op_id: str, done: int) -> None:
        self.store.update_operation(op_id, bytes_done=done)

    def image_files_beat(self, op_ids: list[str]) -> None:
        """The mount writing these imports still runs (params "beat": now), for a judge in
        another pid namespace (end_interrupted_imports). Only the mount writes an import's
        params, so reading and writing them back loses nothing."""
        now = self.clock()
        with self.store.transaction():
            for op_id in op_ids:
                try:
                    op = self.store.get_operation(op_id)
                except NotFound:
                    continue
                if op["status"] == OpStatus.RUNNING:
                    self.store.update_operation(op_id, params={**op["params"], "beat": now})

    def register_image_file(self, name: str, tmp: Path, source: str, op_id: str) -> Row:
        """The file from begin_image_file, complete: checked as an upload, then recorded;
        its operation ends with the outcome."""
        try:
            image = self._image_store().register_file(name, tmp, source)
        except ApplianceError as err:
            self.end_image_file(op_id, OpStatus.FAILED, err.reason)
            raise
        except BaseException as err:
            self.end_image_file(op_id, OpStatus.FAILED, type(err).__name__)
            raise
        self.end_image_file(op_id, OpStatus.SUCCEEDED, None)
        return image

    def end_image_file(self, op_id: str, status: OpStatus, error: str | None) -> None:
        end_image_file(self.store, self.clock, op_id, status, error)

    def end_interrupted_image_files(self) -> int:
        return end_interrupted_imports(self.store, self.clock)

    def delete_image(self, name: str) -> None:
        with self.store.transaction():
            image = self.store.get_image(name)
            users = self.store.vm_names_using_image(name)
            if users:
                raise Conflict(f"image is used by {', '.join(users[:5])}", "name")
            self.store.delete_image(name)
            self.store.add_event("image-deleted", f"image {name} deleted")
        Path(image["path"]).unlink(missing_ok=True)

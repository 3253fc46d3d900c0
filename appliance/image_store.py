"""The image store: uploads, imports from the admin's import directory, and
what every accepted image becomes (a fresh standalone qcow2 in HOME/images).

QEMU and the appliance run as root, so an image names nothing but itself when
it is stored: the file that arrives is checked at a format read from its own
bytes (appliance.virt.images) and then rewritten by `qemu-img convert` into a
new qcow2. The stored file is one qemu-img made from guest-visible data only;
no header, extension, snapshot or reference of the uploaded file survives, and
every base image has one format for the overlays and host uploads that follow.

Space is bounded: an image (as sent, and as converted) may not exceed
`max_image_bytes`, and nothing is written when the disk under HOME/images
would not keep FREE_SPACE_RESERVE free. Half-written files are named
`.upload-NAME-PID-*` and removed on failure, at start (remove_stale_uploads), and when
the process writing one dies (remove_uploads_of: a gunicorn worker, the mount).
"""
from __future__ import annotations

import logging
import os
import re
import stat
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO, Protocol

from appliance import paths
from appliance import spec as specs
from appliance.config import Config
from appliance.errors import Conflict, Invalid, NoSpace
from appliance.store import Store
from appliance.virt import images

log = logging.getLogger("vmctl.images")

UPLOAD_PREFIX = ".upload-"
# what qemu-img writes beside an upload file while it converts it (ImageStore._register)
CONVERTED_SUFFIX = ".qcow2"
ISO_KIND, DISK_KIND = "iso", "disk"  # images.kind (store/schema.py _v9_disks)
CHUNK = 1 << 20
# Left free on the images file system, for the store, logs and VM disks that grow.
FREE_SPACE_RESERVE = 256 << 20
# How often a stream of unknown length looks at the free space again.
SPACE_RECHECK_BYTES = 64 << 20


def _mib(n: int) -> str:
    return f"{n / (1 << 20):,.0f} MiB" if n < (1 << 30) else f"{n / (1 << 30):,.1f} GiB"


def free_bytes(directory: Path) -> int:
    st = os.statvfs(directory)
    return st.f_bavail * st.f_frsize


def remove_stale_uploads(config: Config) -> list[Path]:
    """Remove the `.upload-*` files a killed upload or import left in
    HOME/images. Only at appliance start, before any API worker runs: a
    running upload's file must not vanish under it."""
    removed: list[Path] = []
    try:
        entries = list(os.scandir(config.images_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        # Only our own files: regular files (or symlinks, removed themselves) named .upload-*.
        if entry.name.startswith(UPLOAD_PREFIX) and not entry.is_dir(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    if removed:
        log.info("removed %d unfinished image upload(s) from %s", len(removed), config.images_dir)
    return removed


def remove_uploads_of(images_dir: Path, pid: int) -> list[Path]:
    """Remove the `.upload-NAME-PID-*` files of a process that died while writing them
    (a SIGKILLed gunicorn worker in the middle of an upload, the mount in the middle of a
    `cp`): left until the next start otherwise (found by `make soak`'s kill-worker). The
    conversion's output beside it goes too (a writer killed while qemu-img converted)."""
    mine = re.compile(rf"-{int(pid)}-[0-9a-f]{{32}}(?:{re.escape(CONVERTED_SUFFIX)})?$")
    removed: list[Path] = []
    try:
        entries = list(os.scandir(images_dir))
    except FileNotFoundError:
        return removed
    for entry in entries:
        if entry.name.startswith(UPLOAD_PREFIX) and mine.search(entry.name) \
                and not entry.is_dir(follow_symlinks=False):
            Path(entry.path).unlink(missing_ok=True)
            removed.append(Path(entry.path))
    if removed:
        log.info("removed %d unfinished image upload(s) of pid %d", len(removed), pid)
    return removed


class ByteSource(Protocol):
    """What an image is read from: a file, or a request body (falcon's BoundedStream)."""

    def read(self, size: int = -1, /) -> bytes: ...


class ImageStore:
    def __init__(self, store: Store, config: Config, clock: Callable[[], float] = time.time):
        self.store = store
        self.config = config
        self.clock = clock

    # -- entry points ---------------------------------------------------------------------
    def upload(self, name: str, stream: ByteSource, length: int | None) -> dict:
        """An image sent as a request body. A declared length over the cap or
        the free space is refused before a byte is written; a body of unknown
        length is cut off (and its file removed) once it passes the cap."""
        tmp = self._tmp(name)
        if length is not None:
            self._require_room(length, "body")
        self._receive(stream, tmp, length, "body")
        return self._register(name, tmp, "upload")

    def import_from_path(self, name: str, path: str) -> dict:
        """An image copied from the admin's import directory (POST /v1/images
        {"path"}): a path outside it, also through `..` or symlinks, is refused."""
        tmp = self._tmp(name)
        fd, opened = self._open_importable(path)
        with os.fdopen(fd, "rb") as source:
            self._copy_file(source, tmp)
        return self._register(name, tmp, str(opened))

    def import_trusted(self, name: str, path: str | Path) -> dict:
        """An image from a path the admin gave on the command line (vmctl serve
        --demo-image) or a test fixture made: no import-directory rule, every
        other check. Not reachable from the API or the mount."""
        tmp = self._tmp(name)
        source_path = Path(path)
        if not source_path.is_file():
            raise Invalid(f"{source_path} is not a file", "path")
        with open(source_path, "rb") as source:
            self._copy_file(source, tmp)
        return self._register(name, tmp, str(source_path))

    def begin_file(self, name: str) -> tuple[Path, int]:
        """A new private file for an image whose bytes arrive as writes at offsets (the
        mount's `cp FILE images/`): its path (HOME/images/.upload-*, mode 0600, made here
        and nowhere else) and an fd open on it. The writer keeps it within
        `max_image_bytes` and FREE_SPACE_RESERVE as _receive does (fs/image_imports.py);
        register_file checks it."""
        tmp = self._tmp(name)
        self._require_room(0, "file")
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o600)
        return tmp, fd

    def register_file(self, name: str, tmp: Path, source: str) -> dict:
        """A file from begin_file, complete: checked, converted and recorded as an upload
        is (removed whatever the outcome)."""
        if tmp.parent != self.config.images_dir or not tmp.name.startswith(UPLOAD_PREFIX):
            raise Invalid("not a file this image store made", "file")
        if os.lstat(tmp).st_size == 0:
            tmp.unlink(missing_ok=True)
            raise Invalid("the file is empty", "file")
        return self._register(name, tmp, source)

    def _copy_file(self, source: BinaryIO, tmp: Path) -> None:
        size = os.fstat(source.fileno()).st_size
        self._require_room(size, "path")
        self._receive(source, tmp, size, "path")

    # -- the import directory ---------------------------------------------------------------
    def _import_dir(self) -> Path:
        directory = self.config.import_dir
        if directory is None:
            raise Invalid(
                "imports from a path are disabled (image_import_dir); upload the image instead",
                "path",
            )
        return directory.resolve()

    def _open_importable(self, path: str) -> tuple[int, Path]:
        """An fd on a regular file inside the import directory. Checked twice:
        the resolved name before opening, the opened file's real path after
        (so a symlink swapped in between gains nothing)."""
        directory = self._import_dir()
        outside = Invalid(
            f"path must name a file inside the image import directory {directory}", "path"
        )
        if not path or "\x00" in path or len(path) > 4096:
            raise outside
        candidate = Path(path) if os.path.isabs(path) else directory / path
        resolved = paths.real_path(candidate)
        if resolved is None or not paths.inside(resolved, directory, strictly=True):
            raise outside
        try:
            # O_NONBLOCK: a FIFO planted in the directory must not hang the request.
            fd = os.open(resolved, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError:
            raise Invalid(
                "path names no readable file in the image import directory", "path"
            ) from None
        try:
            opened = Path(os.readlink(f"/proc/self/fd/{fd}"))
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                raise Invalid("path must name a regular file", "path")
            if not opened.is_relative_to(directory):
                raise outside
            os.set_blocking(fd, True)
        except BaseException:
            os.close(fd)
            raise
        return fd, opened

    # -- writing ----------------------------------------------------------------------------
    def _tmp(self, name: str) -> Path:
        specs.validate_name(name, "name")
        self._refuse_taken(name)
        # the writer's pid in the name: remove_uploads_of finds a dead writer's files
        return self.config.images_dir / f"{UPLOAD_PREFIX}{name}-{os.getpid()}-{uuid.uuid4().hex}"

    def _refuse_taken(self, name: str) -> None:
        if self.store.image_exists(name):
            raise Conflict(f"an image named {name!r} exists", "name")

    def _require_room(self, size: int, field: str) -> None:
        """Refuse an image of `size` bytes that passes the cap or the free space."""
        cap = self.config.max_image_bytes
        if size > cap:
            raise Invalid(
                f"the image is larger than the maximum of {_mib(cap)} (max_image_bytes)", field
            )
        free = free_bytes(self.config.images_dir)
        if size + FREE_SPACE_RESERVE > free:
            raise NoSpace(f"not enough free space for the image: {_mib(size)} needed, "
                          f"{_mib(max(0, free - FREE_SPACE_RESERVE))} available", field)

    def _receive(self, source: ByteSource, tmp: Path, length: int | None, field: str) -> None:
        """Copy `source` into a new `tmp` (mode 0600), within the cap and the free space."""
        cap = self.config.max_image_bytes
        written = 0
        next_space_check = SPACE_RECHECK_BYTES
        fd = os.open(
            tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600
        )
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = source.read(CHUNK)
                    if not chunk:
                        break
                    written += len(chunk)
                    if written > cap:
                        raise Invalid(
                            f"the image is larger than the maximum of {_mib(cap)} "
                            "(max_image_bytes)",
                            field,
                        )
                    if written >= next_space_check:
                        next_space_check += SPACE_RECHECK_BYTES
                        if free_bytes(self.config.images_dir) < FREE_SPACE_RESERVE + len(chunk):
                            raise NoSpace("the image store's disk is full", field)
                    out.write(chunk)
            if length is not None and written != length:
                raise Invalid(f"upload ended after {written} of {length} bytes", field)
            if written == 0:
                raise Invalid(
                    "the body is empty; send the image file"
                    if field == "body"
                    else "the file is empty",
                    field,
                )
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    # -- storing ----------------------------------------------------------------------------
    def _register(self, name: str, tmp: Path, source: str) -> dict:
        """Check `tmp`, convert it into a fresh qcow2, and record it under `name`."""
        converted = tmp.with_name(tmp.name + CONVERTED_SUFFIX)
        try:
            checked = images.check(tmp)
            if checked["format"] == "raw" and images.is_iso9660(tmp):
                return self._register_iso(name, tmp, source, checked)
            self._require_room(images.converted_size(tmp, checked["format"]), "image")
            details = images.convert_to_qcow2(tmp, checked["format"], converted)
            dest = self.config.images_dir / f"{name}.qcow2"
            with self.store.transaction():
                self._refuse_taken(name)
                os.replace(converted, dest)
                self.store.insert_image({"name": name, "path": str(dest), "created": self.clock(),
                                         "source": source, **details})
                self.store.add_event("image-imported", f"image {name} imported from {source}")
        finally:
            tmp.unlink(missing_ok=True)
            converted.unlink(missing_ok=True)
        return self.store.get_image(name)

    def _register_iso(self, name: str, tmp: Path, source: str, checked: dict) -> dict:
        """An ISO 9660 image (install media, issue 14) is kept as it came: a guest
        only reads it, through a read-only CD-ROM drive opened as raw (never
        probed), so there is no header to strip; converting it would only lose
        its hybrid boot sectors. Its kind "iso" keeps it out of root disks."""
        dest = self.config.images_dir / f"{name}.iso"
        with self.store.transaction():
            self._refuse_taken(name)
            os.replace(tmp, dest)
            os.chmod(dest, 0o644)  # QEMU opens it read-only
            self.store.insert_image({"name": name, "path": str(dest), "created": self.clock(),
                                     "source": source, "kind": ISO_KIND, **checked})
            self.store.add_event("image-imported", f"ISO image {name} imported from {source}")
        return self.store.get_image(name)

"""Editors' temporary files (issue 16): `sed -i`, vim, nano's and Python's atomic
saves write a new file in the directory of the one they edit, then rename it
over the original.

Where: a VM's directory (vms/NAME/, projects/P/vms/NAME/), a pool's (pools/NAME/)
and templates/ (there, a name ending in .json is a template, any other a
scratch file). Any other new name in those directories that is not one of the
directory's own files is a scratch file: bytes in this mount process's memory,
written and read at any offset, truncated, renamed and removed like a file.
Nothing reaches the store or the host's disk until the rename.

Renaming one over a writable file of the same directory (`spec.json`,
`template.json`, templates/NAME.json, a value file) is one write of that file
with the scratch file's content: the same call, validation and audit event as
`cp FILE spec.json` (fs/operations.py). A refused content fails the rename with
the write's errno (EINVAL for a bad spec), changes nothing, leaves a `refused`
event, and the scratch file stays for its writer to remove (sed does).

Private: a scratch file is seen (lookup, listing, open, rename, unlink) by the
uid that made it only; another uid gets ENOENT, and EEXIST for a name taken
(mkstemp then picks another). Making one is decided by the policy as a write of
the directory's JSON file (`decided_as`), so a viewer cannot.

Lifetime: while open, and LINGER_SECONDS after its last close (sed and Python
close it before the rename); unlink and a rename drop it at once, and all go
with the mount. Bounds: MAX_BYTES each (EFBIG, as a JSON file's value),
PER_DIR in one directory, UID_BYTES for one uid and TOTAL_BYTES in the mount
(ENOSPC); a file removed or replaced while open counts until its last release.
"""
from __future__ import annotations

import dataclasses
import errno
import time
from collections.abc import Callable

import pyfuse3

from appliance.errors import Invalid
from appliance.files import VM_FILES
from appliance.pool_files import POOL_FILES
from fs import limits, projects
from fs.backup_tree import VM_DIRS
from fs.disk_tree import VM_DIRS as DISK_DIRS
from fs.nodes import Node, Path

MAX_BYTES = limits.JSON_MAX_BYTES
PER_DIR = 8
TOTAL_BYTES = 32 * MAX_BYTES
# what one uid's scratch files may hold together, so that one writer cannot take the
# whole TOTAL_BYTES from every other user's editor saves
UID_BYTES = 8 * MAX_BYTES
LINGER_SECONDS = 60.0
NAME_MAX_BYTES = 255
TEMPLATES = "templates"
# A directory's own names (never scratch files), and the file whose write decides who
# may make scratch files there.
OWN_NAMES: dict[str, frozenset[str]] = {
    "vms": frozenset((*VM_FILES, *VM_DIRS, *DISK_DIRS)),
    "pools": frozenset(POOL_FILES),
}
DECIDING_FILE = {"vms": "spec.json", "pools": "template.json"}


@dataclasses.dataclass
class Scratch:
    uid: int
    created: float
    changed: float
    data: bytearray = dataclasses.field(default_factory=bytearray)
    opened: int = 0
    closed: float = 0.0


def edit_dir(directory: Path) -> bool:
    """Whether scratch files can be made in this directory."""
    inner = projects.split(directory)[1]
    return (len(inner) == 2 and inner[0] in OWN_NAMES) or inner == (TEMPLATES,)


def is_scratch_name(path: Path) -> bool:
    """Whether a name at path is a scratch file's (made or to be made), not the directory's own."""
    if not path or not edit_dir(path[:-1]):
        return False
    inner, name = projects.split(path)[1], path[-1]
    if inner[0] == TEMPLATES:
        return not name.endswith(".json")
    return name not in OWN_NAMES[inner[0]]


def decided_as(path: Path, verb: str) -> tuple[str, Path] | None:
    """The request the policy decides a change of a scratch file as: the write of the
    directory's JSON file (vms/NAME/spec.json, pools/NAME/template.json), or the making
    of a template; None for any other path or a read."""
    if verb == "read" or not is_scratch_name(path):
        return None
    top = projects.split(path)[1][0]
    if top == TEMPLATES:
        return "create", path[:-1] + ("NAME.json",)
    return "write", path[:-1] + (DECIDING_FILE[top],)


def check_name(name: str) -> str:
    """A name the shell can show: no control character, valid UTF-8, at most 255 bytes."""
    if (not name or len(name.encode("utf-8", "surrogateescape")) > NAME_MAX_BYTES
            or any(ord(c) < 0x20 or ord(c) == 0x7F or 0xDC80 <= ord(c) <= 0xDCFF for c in name)):
        raise Invalid("a temporary file's name must be printable UTF-8 of at most 255 bytes",
                      "name")
    return name


class ScratchFiles:
    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self.files: dict[Path, Scratch] = {}
        # removed or renamed away while a handle still has them open: their bytes are
        # still held (and still counted) until the last release
        self.unlinked: list[Scratch] = []

    def _sweep(self) -> None:
        """Drop the closed ones older than LINGER_SECONDS."""
        now = self.clock()
        for path, file in list(self.files.items()):
            if file.opened <= 0 and now - file.closed > LINGER_SECONDS:
                del self.files[path]

    def get(self, path: Path, uid: int | None) -> Scratch | None:
        """The scratch file at path if this uid made it (and it has not lapsed)."""
        file = self.files.get(path)
        if file is None or file.uid != uid:
            return None
        if file.opened <= 0 and self.clock() - file.closed > LINGER_SECONDS:
            del self.files[path]
            return None
        return file

    def _owned(self, path: Path, uid: int | None) -> Scratch:
        file = self.get(path, uid)
        if file is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return file

    @staticmethod
    def node(file: Scratch) -> Node:
        return Node(False, writable=True, size=len(file.data), created=file.created,
                    changed=file.changed, volatile=True, private=True)

    def stat(self, path: Path, uid: int | None) -> Node | None:
        file = self.get(path, uid)
        return None if file is None else self.node(file)

    def entries(self, directory: Path, uid: int | None) -> list[tuple[str, Node]]:
        if not edit_dir(directory):
            return []
        self._sweep()
        return [(path[-1], self.node(file)) for path, file in list(self.files.items())
                if path[:-1] == directory and file.uid == uid]

    def create(self, path: Path, uid: int) -> Scratch:
        """A new scratch file, open once: EEXIST for a name taken, ENOSPC past PER_DIR."""
        check_name(path[-1])
        self._sweep()
        if path in self.files:
            raise pyfuse3.FUSEError(errno.EEXIST)
        if sum(1 for p in self.files if p[:-1] == path[:-1]) >= PER_DIR:
            raise pyfuse3.FUSEError(errno.ENOSPC)
        now = time.time()
        file = self.files[path] = Scratch(uid, now, now, opened=1)
        return file

    def open(self, path: Path, uid: int | None) -> Scratch:
        file = self._owned(path, uid)
        file.opened += 1
        return file

    def release(self, file: Scratch) -> None:
        """An open handle's close (the file may have been renamed or removed since)."""
        file.opened -= 1
        file.closed = self.clock()
        if file.opened <= 0 and any(f is file for f in self.unlinked):
            self.unlinked = [f for f in self.unlinked if f is not file]
            file.data = bytearray()

    @staticmethod
    def read(file: Scratch, off: int, size: int) -> bytes:
        return bytes(file.data[off: off + size])

    def _resize(self, file: Scratch, size: int) -> None:
        if size > MAX_BYTES:
            raise pyfuse3.FUSEError(errno.EFBIG)
        others = [f for f in (*self.files.values(), *self.unlinked) if f is not file]
        if size > len(file.data) and (
                sum(len(f.data) for f in others) + size > TOTAL_BYTES
                or sum(len(f.data) for f in others if f.uid == file.uid) + size > UID_BYTES):
            raise pyfuse3.FUSEError(errno.ENOSPC)
        if size < len(file.data):
            del file.data[size:]
        else:
            file.data.extend(b"\0" * (size - len(file.data)))
        file.changed = time.time()

    def write(self, file: Scratch, off: int, buf: bytes) -> None:
        if off + len(buf) > len(file.data):
            self._resize(file, off + len(buf))
        file.data[off: off + len(buf)] = buf
        file.changed = time.time()

    def truncate(self, file: Scratch, size: int) -> None:
        self._resize(file, size)

    def remove(self, path: Path, uid: int | None) -> None:
        file = self._owned(path, uid)
        del self.files[path]
        if file.opened > 0:  # an open handle may still write: its bytes stay counted
            self.unlinked.append(file)
        else:
            file.data = bytearray()

    def move(self, old: Path, new: Path, uid: int | None) -> None:
        """A scratch file renamed to another scratch name (replacing one of this uid's)."""
        file = self._owned(old, uid)
        taken = self.files.get(new)
        if taken is not None and taken.uid != uid:
            raise pyfuse3.FUSEError(errno.EACCES)
        check_name(new[-1])
        del self.files[old]
        if taken is not None and taken.opened > 0:  # replaced, still open: still counted
            self.unlinked.append(taken)
        self.files[new] = file

    def text(self, path: Path, uid: int | None) -> str:
        """The content a rename writes: UTF-8 text (EINVAL otherwise)."""
        try:
            return self._owned(path, uid).data.decode("utf-8")
        except UnicodeDecodeError:
            raise Invalid("the value must be UTF-8 text", path[-1]) from None

"""Open files: what a reader was last given, and what a writer wrote that is not applied yet.

Writes: a shell writes a whole value in one write(), and reports errors from
write() but not from close(). So a write applies the value as soon as the
buffer holds a complete one (a newline-terminated value, a complete JSON
document for spec.json and groups/NAME.json, or a value the service accepts
as it is) and fails right there with the service's errno. Anything short of
that is kept per open file and applied at flush (close), where only careful
writers (cp, tee, Python) see the error. A value longer than its file's cap
(fs/limits.py) is EFBIG and dropped whole, never padded out to its offset.

Reads: every file is opened with direct_io, so `cat` sees the current value
whatever size the kernel remembered. The content is fetched at open, and again
when a later read starts at offset 0 or reaches the end of what was fetched, so
`tail -f events` follows growth; a log (the console) is read at each read's
offset instead (`tail -f console`), and a file made when read (screen.png) keeps
the bytes it was opened with (`fixed`: a copy is never a mix of two screens).

The console takes bytes (`typed`): each write goes to the serial port as it
comes, nothing buffered or framed (fs/operations.py).
"""
from __future__ import annotations

import errno
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pyfuse3
import trio

from appliance import errors, jsonio
from appliance.access.principal import ANONYMOUS, Principal
from appliance.files import Log
from fs import limits
from fs.image_imports import Import
from fs.scratch import Scratch

# Within one open file, content younger than this is served again instead of
# fetched anew (a `cat` reads twice: the value, then the end of file).
FRESH_SECONDS = 0.1

# Whether an open reply can carry FOPEN_NOFLUSH: pyfuse3 as packaging/pyfuse3/build.sh
# builds it (FileInfo.noflush; tests/unit/fs/test_pyfuse3_noflush.py fails without).
NOFLUSH = hasattr(pyfuse3.FileInfo, "noflush")

Path = tuple[str, ...]
Apply = Callable[[Path, str], Awaitable[None]]


def file_info(fh: int, read_only: bool) -> pyfuse3.FileInfo:
    """The open reply: direct I/O (see the module docstring) and, for a read-only open,
    FOPEN_NOFLUSH: a reader's close has nothing to apply, so the kernel sends no FLUSH
    (one request of the five of an open/read/close). A writer's close still flushes:
    a value refused there is reported by close() (cp, tee, Python)."""
    info = pyfuse3.FileInfo(fh=fh, direct_io=True, keep_cache=False)
    if NOFLUSH and read_only:
        info.noflush = True
    return info


@dataclass
class Handle:
    """An open file: what was last read, and written bytes not yet applied."""

    path: Path
    writable: bool
    content: bytes | None = None
    fetched: float = 0.0  # when content was read from the service
    buffer: bytearray = field(default_factory=bytearray)
    base: int = 0  # the file offset of buffer[0]
    made: bool = False  # opened by create(): a new file that exists while open
    log: Log | None = None  # read at each read's offset, never kept
    # Who opened it: read, write, flush and release carry no caller of their own.
    # (ANONYMOUS, in no project, sees no VM: never a handle with more than its opener's.)
    principal: Principal = ANONYMOUS
    uid: int | None = None  # who opened it (the audit trail names them for its writes)
    fixed: bool = False  # content made at open, never fetched again (screen.png)
    typed: bool = False  # writes go as bytes as they come (the console)
    scratch: Scratch | None = None  # an editor's temporary file (fs/scratch.py)
    image: Import | None = None  # a file copied into images/ (fs/image_imports.py)
    # One apply at a time: a FLUSH can come while a write is still applying the same bytes
    # (the fd shared with a child that forks and execs: its close-on-exec flushes), and
    # must not apply them a second time (a duplicate operation superseded the writer's
    # own, which then answered EBUSY for a value that was applied; `make soak` found it).
    applying: trio.Lock = field(default_factory=trio.Lock)

    def stale(self, off: int, now: float) -> bool:
        """Whether a read at off fetches the content anew (see the module docstring)."""
        if self.content is None:
            return True
        if self.fixed:
            return False
        fresh = now - self.fetched < FRESH_SECONDS
        return not fresh and (off == 0 or off >= len(self.content))

    def truncate(self) -> None:
        """O_TRUNC and `truncate -s 0`: nothing to apply, a write brings the whole value."""
        self.buffer.clear()
        self.base = 0

    def take(self, off: int, buf: bytes) -> None:
        """Keep the bytes of a write at off; EFBIG (and nothing kept) past the file's cap.
        A console's (typed) are only checked: its writer types them at once."""
        if not self.writable:
            raise pyfuse3.FUSEError(errno.EBADF)
        if self.typed:  # typed as they come by the caller, never kept: EFBIG past the cap
            limits.check_size(self.path, len(buf))
            return
        pos = off - self.base
        if pos < 0:  # rewriting from before what was applied: a new value
            self.buffer.clear()
            self.base, pos = off, 0
        if pos + len(buf) > limits.max_bytes(self.path):
            # The value would outgrow its file: refused whole, and nothing padded or kept.
            self.buffer.clear()
            raise pyfuse3.FUSEError(errno.EFBIG)
        if pos > len(self.buffer):
            self.buffer.extend(b"\0" * (pos - len(self.buffer)))
        self.buffer[pos: pos + len(buf)] = buf

    async def apply(self, final: bool, write: Apply) -> None:
        """Apply the buffered value with write() when it is complete; a refused value is
        dropped, not retried. After an apply under way (the lock), what it consumed is gone.
        A flush (final) that finds one under way returns at once: that apply consumes the
        value and answers its own caller, and a FLUSH meanwhile comes from a close that
        waits for nothing of it, such as a forked child's close-on-exec, whose exec the
        kernel holds until the FLUSH is answered. Waiting stalled the child until the
        writer's operation ended: `make soak`'s libvirtd part waited 120 s (the write's
        bound) for the child that was to start the libvirtd that operation needed."""
        if final and self.applying.locked():
            return
        async with self.applying:
            if self.buffer:
                await self._apply(final, write)

    async def _apply(self, final: bool, write: Apply) -> None:
        file = self.path[-1]
        try:
            text = bytes(self.buffer).decode("utf-8")
        except UnicodeDecodeError:
            if not final:
                return  # perhaps a character split across writes
            self._consumed()
            raise errors.Invalid("the value must be UTF-8 text", file) from None
        if self.base and not text.strip():
            self._consumed()  # the newline (or spaces) after a value already applied
            return
        complete = _complete(file, text)
        if file.endswith(".json") and not complete and not final:
            return
        try:
            await write(self.path, text)
        except errors.Invalid:
            if not complete and not final:
                return  # perhaps the first part of a value split over several writes
            self._consumed()
            raise
        except BaseException:
            self._consumed()
            raise
        self._consumed()

    def _consumed(self) -> None:
        self.base += len(self.buffer)
        self.buffer.clear()


def _complete(file: str, text: str) -> bool:
    """Framing only, no validation: is this the whole value the writer meant?"""
    if file.endswith(".json"):
        try:
            jsonio.loads(text)
        except ValueError:
            return False
        return True
    return text.endswith("\n")

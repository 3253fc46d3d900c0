"""The mount's part of the audit trail (appliance/access/audit.py): which FUSE
operations change something, what each names, and the event it leaves.

fs/operations.py's `boundary` opens an Attempt for every call of an operation
in WRITE_OPS and records it when the call ends, whatever way it ends:

- mkdir, rmdir, rename, unlink, create: every call (done or refused);
- write, flush, release: the calls that applied a value (the tree's write, where
  a handle's buffered value goes to the service: `applied` below), done or
  refused, and a write refused before anything was applied (EFBIG, EBADF);
- open for writing: only when refused (an open that succeeds changes nothing;
  the write that follows is recorded).

Reads record nothing. The caller is the request's principal (set by the
mount's identity mapping), shown with source "mount" and its Unix uid.
"""
from __future__ import annotations

import contextvars
import dataclasses
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import pyfuse3

from appliance import errors
from appliance.access import audit, caller
from appliance.access.principal import Principal, reset_caller, set_caller
from appliance.store import Row
from fs import limits, projects, scratch

if TYPE_CHECKING:
    from fs.operations import ApplianceFS

Path = tuple[str, ...]


@dataclasses.dataclass
class Attempt:
    """One call of a write operation: what it names, and what it did."""

    op: str
    path: Path  # what the call names (for rename, the old path)
    uid: int | None
    new_path: Path | None = None  # rename's target
    every_call: bool = True  # False: recorded only when it applied a value or failed
    applied: Path | None = None  # the file a value was applied to in this call
    applied_error: BaseException | None = None
    principal: Principal | None = None  # who, as the audit trail names them
    refused_by_policy: bool = False  # fs/guard.py refused it and recorded why

    def what(self) -> str:
        if self.applied is not None:
            return f"write {shown(self.applied)}"
        if self.new_path is not None:
            return f"rename {shown(self.path)} to {shown(self.new_path)}"
        return f"{self.op} {shown(self.path)}"


def shown(path: Path) -> str:
    """A path as the event log shows it: a name is any bytes but / and NUL, so control
    characters are escaped (a newline would forge a line of `vmctl events`, an escape
    sequence repaint the reader's terminal) and a long one is cut."""
    return limits.excerpt(repr("/".join(path))[1:-1])


_current: contextvars.ContextVar[Attempt | None] = contextvars.ContextVar(
    "mount_write", default=None)


def _ctx_uid(args: tuple) -> int | None:
    ctx = args[-1] if args else None
    uid = getattr(ctx, "uid", None)
    return uid if isinstance(uid, int) else None


def _asker(fs: ApplianceFS, args: tuple) -> Principal | None:
    """Who the request's context names, through the mount's map (None: no one it maps)."""
    ctx = args[-1] if args else None
    if _ctx_uid(args) is None:
        return None
    return fs.guard.who(cast(pyfuse3.RequestContext, ctx))


def _named(fs: ApplianceFS, args: tuple) -> Path:
    return fs.inodes.path(args[0]) + (os.fsdecode(args[1]),)


def _in_dir(op: str) -> Callable[[ApplianceFS, tuple], Attempt | None]:
    """mkdir, rmdir, unlink, create: (parent inode, name, ..., ctx). An editor's temporary
    file changes nothing stored (fs/scratch.py): not recorded."""

    def attempt(fs: ApplianceFS, args: tuple) -> Attempt | None:
        path = _named(fs, args)
        if scratch.is_scratch_name(path):
            return None
        return Attempt(op, path, _ctx_uid(args), principal=_asker(fs, args))

    return attempt


def _rename(fs: ApplianceFS, args: tuple) -> Attempt | None:
    new = fs.inodes.path(args[2]) + (os.fsdecode(args[3]),)
    if scratch.is_scratch_name(new):  # to a temporary name: nothing stored changes
        return None
    return Attempt("rename", _named(fs, args), _ctx_uid(args), new_path=new,
                   principal=_asker(fs, args))


def _open(fs: ApplianceFS, args: tuple) -> Attempt | None:
    if args[1] & os.O_ACCMODE == os.O_RDONLY:
        return None
    return Attempt("open", fs.inodes.path(args[0]), _ctx_uid(args), every_call=False,
                   principal=_asker(fs, args))


def _by_handle(op: str) -> Callable[[ApplianceFS, tuple], Attempt | None]:
    """write, flush, release: (fh, ...); the uid is the opener's."""

    def attempt(fs: ApplianceFS, args: tuple) -> Attempt | None:
        handle = fs.files.get(args[0])
        if handle is None or not handle.writable or handle.scratch is not None:
            return None  # a reader's close (`cat`), a temporary file: nothing to record
        return Attempt(op, handle.path, handle.uid, every_call=False,
                       principal=handle.principal)

    return attempt


# The FUSE operations that change something, and how to read what a call names.
WRITE_OPS: dict[str, Callable[[ApplianceFS, tuple], Attempt | None]] = {
    "mkdir": _in_dir("mkdir"),
    "rmdir": _in_dir("rmdir"),
    "unlink": _in_dir("unlink"),
    "create": _in_dir("create"),
    "rename": _rename,
    "open": _open,
    "write": _by_handle("write"),
    "flush": _by_handle("flush"),
    "release": _by_handle("release"),
}


def begin(fs: ApplianceFS, op: str, args: tuple) -> tuple[Attempt | None, Any]:
    """The attempt of this call (None: not a write), made current for `applied`; while
    the call runs, the caller is shown as the mount's (principal_of), so the service's
    own events of the write name the uid too."""
    describe = WRITE_OPS.get(op)
    attempt = describe(fs, args) if describe is not None else None
    if attempt is None:
        return None, None
    attempt.principal = principal_of(attempt)
    return attempt, (_current.set(attempt), set_caller(attempt.principal))


def refused_by_policy() -> bool:
    """The guard refused the write under way and records the refusal itself (who, what,
    and the policy's reason): the audit leaves it at that one event. False when no write
    is under way (a read)."""
    attempt = _current.get()
    if attempt is None:
        return False
    attempt.refused_by_policy = True
    return True


def applied(path: Path, error: BaseException | None) -> None:
    """The tree's write of a value in this call, and how it ended (fs/operations.py _write)."""
    attempt = _current.get()
    if attempt is not None:
        attempt.applied, attempt.applied_error = path, error


def principal_of(attempt: Attempt) -> Principal:
    """The caller as the mount shows it: source "mount", with the uid that asked: the
    principal the mount's map names (fs/identity.py), or, for a uid it maps to no one,
    the current caller (ANONYMOUS in the mount's tasks) with that uid."""
    who = attempt.principal or caller()
    if who.source == "mount" and who.uid is not None:
        return who
    uid = who.uid if who.uid is not None else attempt.uid
    return dataclasses.replace(who, source="mount", uid=uid)


def _vm(fs: ApplianceFS, attempt: Attempt, principal: Principal) -> Row | None:
    """The VM the call names under vms/ or projects/P/vms/ (after a rename, its new
    name); gone, its name."""
    named: list[tuple[str, str]] = []  # (project, name)
    for path in (attempt.applied, attempt.new_path, attempt.path):
        project, inner = projects.split(path or ())
        if len(inner) >= 2 and inner[0] == "vms":
            named.append((project or principal.project, inner[1]))
    for project, name in named:
        try:
            return fs.service.store.get_vm(name, project, with_xml=False)
        except errors.NotFound:
            continue
    if not named:
        return None
    project, name = named[-1]
    return {"id": None, "name": audit.cut(name, audit.NAME_CHARS), "project": project}


def end(fs: ApplianceFS, attempt: Attempt | None, token: Any, error: BaseException | None) -> None:
    """Record the attempt (see the module docstring for which are recorded)."""
    if attempt is None:
        return
    current, shown = token
    reset_caller(shown)
    _current.reset(current)
    if attempt.refused_by_policy:
        return
    if attempt.applied is not None:
        if error is None and attempt.applied_error is not None and attempt.op == "write":
            return  # a value refused before its end: kept, and applied again at close
        error = attempt.applied_error or error
    elif not attempt.every_call and error is None:
        return
    principal = attempt.principal or principal_of(attempt)
    audit.record_mount(fs.service.store, principal, attempt.what(),
                       _vm(fs, attempt, principal), error)

"""The one exception hierarchy of the appliance.

Every rule lives in the service layer and fails with one of these. Each class
says what it is in both views (DESIGN.md): `http_status` for the REST layer
(one Falcon error handler reads it, appliance/api/app.py) and `errno` for the
mount (fs/operations.py). A subclass inherits both unless it says otherwise,
so the most specific class wins by plain attribute lookup: nothing walks the
MRO by hand, and a new class cannot be missing from a table.
"""
from __future__ import annotations

import errno as errnos
from http import HTTPStatus


class ApplianceError(Exception):
    """Base class. `reason` is for people, `field` names the offending input.
    Raised as is (no subclass says more), it is a failure: 500, EIO."""

    http_status: HTTPStatus = HTTPStatus.INTERNAL_SERVER_ERROR
    errno: int = errnos.EIO

    def __init__(self, reason: str, field: str | None = None):
        super().__init__(reason)
        self.reason = reason
        self.field = field

    def as_dict(self) -> dict:
        out = {"error": type(self).__name__, "reason": self.reason}
        if self.field is not None:
            out["field"] = self.field
        return out


class Invalid(ApplianceError):
    """Bad input: HTTP 422 (400 when the body is not even parseable), EINVAL."""

    http_status = HTTPStatus.UNPROCESSABLE_ENTITY
    errno = errnos.EINVAL


class TooLarge(Invalid):
    """Input larger than its bound (one write typed into a console): 413, EFBIG."""

    http_status = HTTPStatus.REQUEST_ENTITY_TOO_LARGE
    errno = errnos.EFBIG


class NotFound(ApplianceError):
    """A missing thing: 404, ENOENT."""

    http_status = HTTPStatus.NOT_FOUND
    errno = errnos.ENOENT


class Conflict(ApplianceError):
    """The request conflicts with the current state (running VM, name taken): 409, EBUSY."""

    http_status = HTTPStatus.CONFLICT
    errno = errnos.EBUSY


class PreconditionFailed(Conflict):
    """If-Match named a generation that is no longer current: 412, EBUSY."""

    http_status = HTTPStatus.PRECONDITION_FAILED


class Forbidden(ApplianceError):
    """Not allowed: 403, EACCES."""

    http_status = HTTPStatus.FORBIDDEN
    errno = errnos.EACCES


class Failed(ApplianceError):
    """An operation was tried and failed: 500-class, EIO. The reason is also in events."""

    http_status = HTTPStatus.INTERNAL_SERVER_ERROR
    errno = errnos.EIO


class Timeout(Failed):
    """An operation did not finish within the wait bound: 504, EIO (it may still finish)."""

    http_status = HTTPStatus.GATEWAY_TIMEOUT


class Unavailable(Failed):
    """Something the request needs is unreachable for now (the VM's host is down or its
    libvirt connection keeps breaking): 503, EAGAIN. Not the appliance's own failure, and
    it may work once the host is back; the reason names the host. (Nova refuses what needs
    a compute service that is down, naming the service, rather than failing inside.)"""

    http_status = HTTPStatus.SERVICE_UNAVAILABLE
    errno = errnos.EAGAIN


class NoSpace(Invalid):
    """The disk is full (the home's: the store, the images, the VMs' files): 507, ENOSPC.
    Refused, nothing changed; reads go on, and it works again once space returns. (An
    Invalid, so that what catches a refused input catches this refusal too.)"""

    http_status = HTTPStatus.INSUFFICIENT_STORAGE
    errno = errnos.ENOSPC


SQLITE_FULL = 13  # sqlite3's "database or disk is full"


def no_space(err: BaseException) -> NoSpace | None:
    """The NoSpace an exception from below the service means (SQLite's SQLITE_FULL, an
    OSError ENOSPC), or None: `make soak`'s disk-full part found these answered as a bare
    500 and EIO."""
    if isinstance(err, NoSpace):
        return err
    full = getattr(err, "sqlite_errorcode", None) == SQLITE_FULL or (
        isinstance(err, OSError) and err.errno in (errnos.ENOSPC, errnos.EDQUOT))
    if not full:
        return None
    return NoSpace("the disk is full: nothing was changed; free some space and try again")

"""The one exception hierarchy of the appliance.

Every rule lives in the service layer and fails with one of these; the REST
layer maps them to HTTP statuses and the FS layer to errnos, each in one table.
"""
from __future__ import annotations


class ApplianceError(Exception):
    """Base class. `reason` is for people, `field` names the offending input."""

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


class NotFound(ApplianceError):
    """A missing thing: 404, ENOENT."""


class Conflict(ApplianceError):
    """The request conflicts with the current state (running VM, name taken): 409, EBUSY."""


class PreconditionFailed(Conflict):
    """If-Match named a generation that is no longer current: 412, EBUSY."""


class Forbidden(ApplianceError):
    """Not allowed: 403, EACCES."""


class Failed(ApplianceError):
    """An operation was tried and failed: 500-class, EIO. The reason is also in events."""


class Timeout(Failed):
    """An operation did not finish within the wait bound: 504, EIO (it may still finish)."""

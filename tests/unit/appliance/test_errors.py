"""The service's errors keep their meaning in both views (DESIGN.md): each class
carries its HTTP status and its errno, and the REST edge and the mount read them."""
from __future__ import annotations

import errno

import pytest
from falcon import testing

from appliance import errors
from appliance.api.app import create_app
from fs.operations import errno_of

# DESIGN.md "Errors keep their meaning in both views", plus 412 and 504 (README).
MEANING = [
    (errors.Invalid, 422, errno.EINVAL),
    (errors.NotFound, 404, errno.ENOENT),
    (errors.Conflict, 409, errno.EBUSY),
    (errors.PreconditionFailed, 412, errno.EBUSY),
    (errors.Forbidden, 403, errno.EACCES),
    (errors.Failed, 500, errno.EIO),
    (errors.Timeout, 504, errno.EIO),
    (errors.ApplianceError, 500, errno.EIO),
]


class _NewKindOfConflict(errors.Conflict):
    """A class added later that says nothing of its own: it means what its parent means."""


def _raising(service, exc: errors.ApplianceError) -> testing.TestClient:
    def list_events(*args, **kwargs):
        raise exc

    service.list_events = list_events
    return testing.TestClient(create_app(service, "sekret"),
                              headers={"Authorization": "Bearer sekret"})


@pytest.mark.parametrize(("cls", "status", "code"),
                         [*MEANING, (_NewKindOfConflict, 409, errno.EBUSY)])
def test_each_class_reaches_rest_and_the_mount_with_its_meaning(service, cls, status, code):
    resp = _raising(service, cls("nope", field="since")).simulate_get("/v1/events")
    assert resp.status_code == status
    assert resp.json == {"error": cls.__name__, "reason": "nope", "field": "since"}
    assert errno_of(cls("nope")) == code


def test_anything_else_is_eio_in_the_mount():
    assert errno_of(KeyError("x")) == errno.EIO

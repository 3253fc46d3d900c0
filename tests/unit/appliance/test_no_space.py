"""A full disk is a clear refusal: HTTP 507 and ENOSPC, not a bare 500 and EIO.

Found by `make soak`'s disk-full part: with the home's file system full, a create or a
start answered 500 "Internal Server Error" (SQLite's "database or disk is full" left the
service as it was) and the mount's mkdir or state write EIO. The errors here are real:
SQLite is made full with PRAGMA max_page_count."""
import errno
import sqlite3

import falcon
import falcon.testing
import pyfuse3
import pytest
import trio

from appliance import errors
from appliance.api import error_shape
from fs.boundary import boundary, errno_of


def sqlite_full() -> sqlite3.OperationalError:
    db = sqlite3.connect(":memory:")
    db.execute("CREATE TABLE t (v BLOB)")
    db.execute("PRAGMA max_page_count = 2")
    try:
        for _ in range(100):
            db.execute("INSERT INTO t VALUES (?)", (b"x" * 4096,))
    except sqlite3.OperationalError as err:
        return err
    finally:
        db.close()
    raise AssertionError("SQLite never filled up")


def app_raising(exc: BaseException) -> falcon.testing.TestClient:
    class Boom:
        def on_post(self, req, resp):
            raise exc

    app = falcon.App()
    error_shape.install(app)
    app.add_route("/x", Boom())
    return falcon.testing.TestClient(app)


@pytest.mark.parametrize("exc", [sqlite_full(), OSError(errno.ENOSPC, "No space left on device")])
def test_a_full_disk_is_507_with_a_reason(exc):
    resp = app_raising(exc).simulate_post("/x")
    assert resp.status_code == 507
    assert resp.json["error"] == "NoSpace" and "disk is full" in resp.json["reason"]


@pytest.mark.parametrize("exc", [sqlite3.OperationalError("no such table: t"),
                                 OSError(errno.EACCES, "Permission denied")])
def test_other_errors_of_those_classes_stay_500(exc):
    assert app_raising(exc).simulate_post("/x").status_code == 500


def test_the_mount_answers_enospc():
    assert errno_of(sqlite_full()) == errno.ENOSPC
    assert errno_of(OSError(errno.ENOSPC, "full")) == errno.ENOSPC
    assert errno_of(RuntimeError("other")) == errno.EIO
    assert errors.no_space(ValueError()) is None


def test_the_mount_boundary_turns_a_full_store_into_enospc():
    @boundary
    async def readdir(self, *args):  # not a write: no audit record to make
        raise sqlite_full()

    with pytest.raises(pyfuse3.FUSEError) as err:
        trio.run(readdir, object(), 1)
    assert err.value.errno == errno.ENOSPC

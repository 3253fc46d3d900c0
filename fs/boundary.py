"""Where exceptions leave the file system (fs/operations.py's `boundary`): as the errno
their class carries, never as a crash of pyfuse3.main; and where every write is
recorded in the audit trail (fs/audit.py), whichever way it ends."""
from __future__ import annotations

import errno
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pyfuse3

from appliance import errors
from fs import audit, limits

if TYPE_CHECKING:
    from fs.operations import ApplianceFS

log = logging.getLogger("vmctl.fs")


def errno_of(err: BaseException) -> int:
    """The service's errors carry their errno (appliance/errors.py); a full disk under
    them is ENOSPC; anything else is EIO."""
    if isinstance(err, errors.ApplianceError):
        return err.errno
    return errno.ENOSPC if errors.no_space(err) else errno.EIO


def boundary(method: Callable) -> Callable:
    """Where exceptions leave the file system: as an errno, never as a crash of pyfuse3.main.
    And where every write (fs/audit.WRITE_OPS) is recorded in the audit trail, with its
    result, whichever way it ends."""

    @functools.wraps(method)
    async def wrapper(self: ApplianceFS, *args: Any) -> Any:
        attempt, token = audit.begin(self, method.__name__, args)
        failure: BaseException | None = None
        try:
            return await method(self, *args)
        except pyfuse3.FUSEError as err:
            failure = err
            raise
        except errors.ApplianceError as err:
            failure = err
            code = errno_of(err)
            log.info("%s: %s: %s", method.__name__, errno.errorcode[code],
                     limits.excerpt(err.reason))
            raise pyfuse3.FUSEError(code) from None
        except Exception as err:
            failure = err
            if errors.no_space(err):  # the disk is full: ENOSPC, as the API's 507
                log.warning("%s: ENOSPC: %s", method.__name__, err)
                raise pyfuse3.FUSEError(errno.ENOSPC) from None
            log.exception("%s(%s) failed", method.__name__,
                          ", ".join(limits.excerpt(a, 60) for a in args))
            raise pyfuse3.FUSEError(errno.EIO) from None
        finally:
            audit.end(self, attempt, token, failure)

    return wrapper

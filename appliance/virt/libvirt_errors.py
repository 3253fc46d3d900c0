"""libvirt errors as the driver's: DriverError (DomainGone for a domain that is not
there), with a reason chosen by reasons.py; shared by the driver and its mixins."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from appliance.virt import reasons
from appliance.virt.driver import DomainGone, DriverError

F = TypeVar("F", bound=Callable[..., Any])


def translate(err: libvirt.libvirtError) -> DriverError:
    kind = DomainGone if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN else DriverError
    return kind(err.get_error_message() or str(err), reasons.operation_reason(err))


def _translated(method: F) -> F:
    """libvirtError out of a driver method becomes a DriverError."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except libvirt.libvirtError as err:
            raise translate(err) from err
    return wrapper  # type: ignore[return-value]

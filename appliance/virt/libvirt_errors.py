"""libvirt errors as the driver's: DriverError (DomainGone for a domain that is not
there), with a reason chosen by reasons.py; shared by the driver and its mixins."""
from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import libvirt

from appliance.virt import reasons
from appliance.virt.driver import DomainGone, DomainLocked, DriverError, JobBusy

F = TypeVar("F", bound=Callable[..., Any])


# libvirt's refusal of a migration while the domain's earlier migration job is still held
# (qemu_migration.c: "another migration job is already running for domain '%s'")
_ANOTHER_MIGRATION_JOB = "another migration job is already running"
# libvirt's wait for a domain's job lock ran out (qemu_domainjob.c / virdomainjob.c:
# "Timed out during operation: cannot acquire state change lock (held by ...)")
_STATE_CHANGE_LOCK = "cannot acquire state change lock"
LOCKED_REASON = ("libvirt holds a job on this domain (cannot acquire state change lock); "
                 'retry, or see README "A wedged domain" if it lasts')


def translate(err: libvirt.libvirtError) -> DriverError:
    code, message = err.get_error_code(), err.get_error_message() or str(err)
    kind: type[DriverError] = DriverError
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        kind = DomainGone
    elif code == libvirt.VIR_ERR_OPERATION_INVALID and _ANOTHER_MIGRATION_JOB in message:
        kind = JobBusy
    elif code == libvirt.VIR_ERR_OPERATION_TIMEOUT and _STATE_CHANGE_LOCK in message:
        return DomainLocked(message, LOCKED_REASON)
    return kind(message, reasons.operation_reason(err))


def _translated(method: F) -> F:
    """libvirtError out of a driver method becomes a DriverError."""
    @functools.wraps(method)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return method(*args, **kwargs)
        except libvirt.libvirtError as err:
            raise translate(err) from err
    return wrapper  # type: ignore[return-value]

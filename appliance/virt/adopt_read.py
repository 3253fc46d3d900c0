"""A stranger domain as an adoption first sees it (service/adoption.py): its
inactive XML and whether it can be taken over now, read over a short
read-only connection to its host (the URI already checked by the allowlist).

The controller takes the domain over later (LibvirtDriver.define looks it up
by its UUID, which becomes the VM's id, renames it to the appliance's name
and defines the appliance's XML over it); this only reads.
"""
from __future__ import annotations

import dataclasses

import libvirt

from appliance.errors import Conflict, Failed, NotFound
from appliance.virt.reasons import connect_reason, operation_reason


@dataclasses.dataclass
class Stranger:
    xml: str
    active: bool
    snapshots: int
    managed_save: bool


def fetch(uri: str, name: str) -> Stranger:
    """The domain `name` on the libvirtd at `uri`; NotFound when it has none,
    Failed when the host cannot be reached."""
    try:
        conn = libvirt.openReadOnly(uri)
    except libvirt.libvirtError as err:
        raise Failed(f"cannot reach the host's libvirt: {connect_reason(err)}") from None
    try:
        try:
            dom = conn.lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                raise NotFound(f"no libvirt domain named {name!r} on that host",
                               "domain") from None
            raise Failed(f"libvirt: {operation_reason(err)}") from None
        return Stranger(xml=dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE),
                        active=bool(dom.isActive()), snapshots=dom.snapshotNum(0),
                        managed_save=bool(dom.hasManagedSaveImage(0)))
    finally:
        conn.close()


def check_takeable(stranger: Stranger, name: str) -> None:
    """Conflict unless the domain can be redefined now: shut off, without
    snapshots (libvirt renames no domain that has them) or a saved state."""
    if stranger.active:
        raise Conflict(f"domain {name} is running; shut it down first (the appliance "
                       "redefines it as its own)", "domain")
    if stranger.snapshots:
        raise Conflict(f"domain {name} has {stranger.snapshots} libvirt snapshot(s), which "
                       "libvirt keeps with the domain's name; delete them first", "domain")
    if stranger.managed_save:
        raise Conflict(f"domain {name} has a saved state; start it and shut it down, or "
                       "remove the save (virsh managedsave-remove), first", "domain")

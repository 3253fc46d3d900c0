"""Suspend to disk through libvirt's managed save (the driver delegates here).

`managedSave` writes the guest's RAM and device state into a file libvirt
keeps for the domain (`/var/lib/libvirt/qemu/save/DOMAIN.save` on the host,
owned by libvirt: never a path of the appliance's choosing) and ends its QEMU,
which frees the memory. The domain is then shut off with a managed save image;
the next `create()` restores it (the guest continues where it was), and
`managedSaveRemove` discards it (the next start boots afresh). Checked here
(RECIPES, "Live resize, suspend"): ~2 s to save a 128 MiB TCG guest, ~1 s to
restore, counter and uptime kept.

libvirt says "shut off (saved)" only until libvirtd restarts; whether a
managed save image exists is the lasting fact, asked per domain
(`hasManagedSaveImage`) or for every domain at once (the listing flag
VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE), so the resync pays one call per host.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import libvirt

from appliance.virt.host import describe_state

T = TypeVar("T")
SUSPENDED = ("suspended", "saved")  # how a shut-off domain with a save image is shown


def shown_state(dom: libvirt.virDomain) -> tuple[str, str]:
    """The domain's (state, reason), "suspended" when shut off with a managed save."""
    state = describe_state(*dom.state())
    if state[0] == "stopped" and dom.hasManagedSaveImage(0):
        return SUSPENDED
    return state


def saved_uuids(conn: libvirt.virConnect) -> set[str]:
    """The uuids of the host's domains that hold a managed save image (one call)."""
    return {dom.UUIDString() for dom in conn.listAllDomains(
        libvirt.VIR_CONNECT_LIST_DOMAINS_MANAGEDSAVE)}


def save(dom: libvirt.virDomain) -> None:
    dom.managedSave(0)


def has_save(dom: libvirt.virDomain) -> bool:
    return bool(dom.hasManagedSaveImage(0))


def discard(dom: libvirt.virDomain) -> None:
    if dom.hasManagedSaveImage(0):
        dom.managedSaveRemove(0)


class SaveMethods:
    """LibvirtGuest's managed-save methods: each calls this module's function on
    the domain through the guest's `call`, which turns libvirt's errors into
    DriverErrors."""

    def call(self, function: Callable[..., T], *args: object) -> T:
        raise NotImplementedError

    def managed_save(self) -> None:
        """Save the running (or paused) guest's memory and end its QEMU."""
        self.call(save)

    def has_managed_save(self) -> bool:
        return self.call(has_save)

    def discard_managed_save(self) -> None:
        """Drop the save image (the next start boots afresh); none is fine."""
        self.call(discard)

"""Further NICs (spec networks, issue 15) plugged into and out of a running VM.

live.apply calls apply_nics after ensure_defined made the NICs' networks ready on
the host (defined and started: controller/networks.py), their DHCP reservations
and the persistent definition with the new NICs (AFFECT_CONFIG, in effect). As
disk_hotplug's appliers, it works from the running domain's live XML, so running
it again after a partial failure does only what is missing: a NIC whose MAC the
domain lacks is attached (AFFECT_LIVE), a NIC the running spec had and the spec
no longer has is detached by its MAC. A guest that does not release a NIC keeps it
until the next restart (NeedsRestart). A NIC whose fixed IP changed keeps its
device: the guest gets the new address at its next DHCP renewal, which its
network filter's IP parameter (issue 15, anti-spoofing) is updated for first.
"""
from __future__ import annotations

from appliance.controller import firewall, live, networks
from appliance.controller.live import LiveChange, NeedsRestart
from appliance.virt import domain
from appliance.virt.driver import DriverError, Guest


def apply_nics(change: LiveChange) -> None:
    ctx, row, guest = change.ctx, change.row, change.guest
    wanted = networks.resolved(ctx.store, row)["spec"].get("networks") or []
    try:
        plugged = set(guest.nic_macs())
    except DriverError as err:
        raise NeedsRestart(err.reason) from err
    waits: list[str] = []
    filters = firewall.filtered_nics(ctx.store, row)  # issue 15: its anti-spoofing and rules
    old_ips = {n.get("mac"): n.get("ip") for n in change.old or []}
    for nic in wanted:
        if nic["mac"] in plugged:
            if nic["mac"] in old_ips and old_ips[nic["mac"]] != nic.get("ip"):
                waits += _refilter(guest, row, nic, filters.get(nic["mac"]))
            continue
        try:
            guest.attach_nic(domain.nic_xml(nic, row["id"], filters.get(nic["mac"])))
        except DriverError as err:
            waits.append(f"NIC on {nic['network']}: {err.reason}")
            continue
        ctx.store.add_event("nic-added", f"NIC {nic['mac']} on {nic['network']} plugged in",
                            row)
    keep = {nic["mac"] for nic in wanted} | {row.get("mac")}
    for nic in change.old or []:
        mac = nic.get("mac")
        if not mac or mac in keep or mac not in plugged:
            continue
        try:
            released = guest.detach_nic(mac)
        except DriverError as err:
            waits.append(f"NIC {mac}: {err.reason}")
            continue
        if not released:
            waits.append(f"NIC {mac}: the guest has not released it; it is removed at the "
                         "next restart")
            continue
        ctx.store.add_event("nic-removed", f"NIC {mac} on {nic['network']} unplugged", row)
    if waits:
        raise NeedsRestart("; ".join(waits))


def _refilter(guest: Guest, row: dict, nic: dict, params: dict[str, str] | None) -> list[str]:
    """A plugged NIC whose fixed IP changed: its filter's IP parameter follows, in place
    (libvirt re-instantiates the filter on the NIC), so that the address the guest
    gets at its next DHCP renewal is the one anti-spoofing lets through."""
    if params is None:
        return []
    try:
        guest.update_device(domain.nic_xml(nic, row["id"], params))
    except DriverError as err:
        return [f"NIC {nic['mac']}: its filter keeps the old address ({err.reason})"]
    return []


live.APPLIERS["networks"] = apply_nics

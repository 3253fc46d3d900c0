"""Fixed IPs: DHCP host entries in a libvirt network, and only the appliance's own.

A libvirt network is shared: an admin, another appliance or another tool may
have reserved addresses in it. The appliance records each reservation it makes
(network, MAC, name, IP; per VM and host, in the store's meta table) and
removes exactly that entry later: libvirt deletes a <host> only when every
attribute given matches, so an entry someone else made for the same MAC, or
under the same name, is never touched. Errors carry fixed reasons, never
libvirt's text (which can quote host files).
"""
from __future__ import annotations

import json
import logging
import xml.etree.ElementTree as ET
from typing import TYPE_CHECKING

import defusedxml.ElementTree as DefusedET
import libvirt

from appliance.access.principal import DEFAULT_PROJECT
from appliance.errors import Failed

if TYPE_CHECKING:
    from appliance.store import Store

log = logging.getLogger(__name__)

ENTRY_FIELDS = ("mac", "name", "ip")


def _key(vm_id: str, host: str) -> str:
    return f"dhcp-reservation:{vm_id}:{host}"


def host_name(row: dict) -> str:
    """The entry's name: the VM's, and NAME.PROJECT outside the default project.
    libvirt refuses a second entry of one name in a network, and names are
    unique per project only; dnsmasq gives the guest the part before the dot
    (and ignores the rest, a domain it does not serve), so it is still NAME."""
    project = row.get("project") or DEFAULT_PROJECT
    return row["name"] if project == DEFAULT_PROJECT else f"{row['name']}.{project}"


def wanted(row: dict) -> list[dict]:
    """The reservations the VM's record asks for: per NIC with a fixed IP (the first,
    network, and the further ones, networks), its network, MAC, name and IP."""
    found = []
    network = row["spec"]["network"]
    if network["type"] == "network" and network.get("ip"):
        found.append({"network": network["name"], "mac": row["mac"], "name": host_name(row),
                      "ip": network["ip"]})
    for nic in row["spec"].get("networks") or []:
        if nic.get("ip") and nic.get("mac"):
            found.append({"network": nic["network"], "mac": nic["mac"], "name": host_name(row),
                          "ip": nic["ip"]})
    return found


def recorded(store: Store, vm_id: str, host: str) -> list[dict] | None:
    """The reservations made (one entry, as recorded before VMs had further NICs, or a
    list); None when none was recorded."""
    value = store.get_meta(_key(vm_id, host))
    if not value:
        return None
    entries = json.loads(value)
    return [entries] if isinstance(entries, dict) else entries


def _entry_xml(entry: dict) -> str:
    return ET.tostring(ET.Element("host", {k: entry[k] for k in ENTRY_FIELDS}), encoding="unicode")


def _network(conn: libvirt.virConnect, name: str, host: str) -> libvirt.virNetwork:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError:
        raise Failed(f"libvirt network {name!r} does not exist on host {host}") from None


def _update(net: libvirt.virNetwork, command: int, entry: dict) -> None:
    flags = 0
    if net.isActive():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_LIVE
    if net.isPersistent():
        flags |= libvirt.VIR_NETWORK_UPDATE_AFFECT_CONFIG
    net.update(command, libvirt.VIR_NETWORK_SECTION_IP_DHCP_HOST, -1, _entry_xml(entry), flags)


def _present(net: libvirt.virNetwork, entry: dict) -> bool:
    """Whether the network holds exactly this entry (MAC, name and IP)."""
    for host in DefusedET.fromstring(net.XMLDesc()).iter("host"):
        if (host.get("mac", "").lower(), host.get("name"), host.get("ip")) == (
                entry["mac"], entry["name"], entry["ip"]):
            return True
    return False


def _delete(conn: libvirt.virConnect, host: str, entry: dict) -> None:
    """Remove exactly this entry; one that is gone already (or a network that
    is) is nothing to release."""
    try:
        _update(
            _network(conn, entry["network"], host), libvirt.VIR_NETWORK_UPDATE_COMMAND_DELETE, entry
        )
    except (libvirt.libvirtError, Failed) as err:
        log.info("no DHCP reservation %s to release on %s: %s", entry, host, err)


def release(store: Store, conn: libvirt.virConnect, host: str, row: dict) -> None:
    """Remove the reservations this VM made on this host, and only those. A VM
    reserved before the appliance recorded reservations: its exact entries."""
    entries = recorded(store, row["id"], host)
    for entry in wanted(row) if entries is None else entries:
        _delete(conn, host, entry)
    store.delete_meta(_key(row["id"], host))


def reserve(store: Store, conn: libvirt.virConnect, host: str, row: dict) -> None:
    """Make the host's networks give each of this VM's MACs its fixed IP (safe to
    repeat). A changed MAC, name or IP replaces the VM's own earlier reservation; an
    entry someone else made for the MAC, name or IP is refused, not replaced."""
    want, had = wanted(row), recorded(store, row["id"], host) or []
    kept = [entry for entry in had if entry in want]
    for entry in had:
        if entry not in want:
            _delete(conn, host, entry)
    _record(store, row["id"], host, kept)
    for entry in want:
        net = _network(conn, entry["network"], host)
        if not _present(net, entry):
            try:
                _update(net, libvirt.VIR_NETWORK_UPDATE_COMMAND_ADD_LAST, entry)
            except libvirt.libvirtError:
                log.warning("DHCP reservation %s refused by network %s on %s", entry,
                            entry["network"], host, exc_info=True)
                raise Failed(
                    f"network {entry['network']!r} already has a DHCP reservation "
                    f"for MAC {entry['mac']}, "
                    f"name {entry['name']} or IP {entry['ip']} that this VM did not make"
                ) from None
        # Exactly ours (just made, or made before a crash or before reservations were recorded).
        if entry not in kept:
            kept.append(entry)
            _record(store, row["id"], host, kept)


def _record(store: Store, vm_id: str, host: str, entries: list[dict]) -> None:
    if entries:
        store.set_meta(_key(vm_id, host), json.dumps(entries, sort_keys=True))
    else:
        store.delete_meta(_key(vm_id, host))

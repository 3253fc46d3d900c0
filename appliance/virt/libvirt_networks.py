"""libvirt networks through a host's connection (issue 15), for LibvirtDriver:
the state of any network (the appliance's or one it does not manage), and the
appliance's own defined from network_xml.py's XML, autostarted and started.
Errors carry fixed reasons, never libvirt's text."""
from __future__ import annotations

from pathlib import Path

import libvirt

from appliance.model.networks import LIBVIRT_PREFIX
from appliance.virt import dhcp, portforward
from appliance.virt.driver import DriverError
from appliance.virt.host_networks import ACTIVE, INACTIVE
from appliance.virt.libvirt_errors import _translated
from appliance.virt.network_xml import owner


def _lookup(conn: libvirt.virConnect, name: str) -> libvirt.virNetwork | None:
    try:
        return conn.networkLookupByName(name)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_NETWORK:
            return None
        raise


def state(conn: libvirt.virConnect, name: str) -> str | None:
    net = _lookup(conn, name)
    return None if net is None else ACTIVE if net.isActive() else INACTIVE


def has_bridge(name: str, sys_class_net: Path = Path("/sys/class/net")) -> bool:
    """A bridge interface of this machine (the name is a validated interface name:
    model/networks.py BRIDGE_NAME, no '/' or '..')."""
    return (sys_class_net / name / "bridge").is_dir()


def owned(conn: libvirt.virConnect, instance_id: str) -> dict[str, str]:
    out = {}
    for net in conn.listAllNetworks():
        if net.name().startswith(LIBVIRT_PREFIX) and owner(net.XMLDesc()) == instance_id:
            out[net.name()] = net.UUIDString()
    return out


def remove(conn: libvirt.virConnect, name: str) -> None:
    net = _lookup(conn, name)
    if net is None:
        return
    if net.isActive():
        net.destroy()
    net.undefine()


def ensure(conn: libvirt.virConnect, name: str, uuid: str, xml: str, start: bool) -> None:
    net = _lookup(conn, name)
    if net is not None and net.UUIDString() != uuid:
        if net.isActive():
            raise DriverError(
                f"network {name}: a definition of a deleted network of that name is active",
                f"network {name}: an older definition of it is active on this host "
                f"(virsh net-destroy {name} there, when no guest uses it)")
        net.undefine()
        net = None
    if net is None:
        net = conn.networkDefineXML(xml)
    if not net.autostart():
        net.setAutostart(1)
    if start and not net.isActive():
        net.create()


def define_filter(conn: libvirt.virConnect, xml: str) -> bool:
    """False when the host's libvirt has no network filters (the test driver)."""
    try:
        conn.nwfilterDefineXML(xml)
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return False
        raise
    return True


def remove_filter(conn: libvirt.virConnect, name: str) -> None:
    try:
        conn.nwfilterLookupByName(name).undefine()
    except libvirt.libvirtError as err:
        if err.get_error_code() not in (libvirt.VIR_ERR_NO_NWFILTER, libvirt.VIR_ERR_NO_SUPPORT):
            raise


def filter_names(conn: libvirt.virConnect, prefix: str) -> list[str]:
    try:
        return [f.name() for f in conn.listAllNWFilters() if f.name().startswith(prefix)]
    except libvirt.libvirtError as err:
        if err.get_error_code() == libvirt.VIR_ERR_NO_SUPPORT:
            return []
        raise


class NetworkMethods:
    """The HostDriver's network, filter and fixed-IP methods for LibvirtDriver (which
    gives `conn`, `uri` and `name`)."""

    conn: libvirt.virConnect
    uri: str
    name: str

    # -- networks (issue 15) ---------------------------------------------------------------------
    @_translated
    def network_state(self, name: str) -> str | None:
        return state(self.conn, name)

    def has_bridge(self, name: str) -> bool | None:
        if not portforward.on_this_machine(self.uri):  # another machine's interfaces
            return None
        return has_bridge(name)

    @_translated
    def owned_networks(self, instance_id: str) -> dict[str, str]:
        return owned(self.conn, instance_id)

    @_translated
    def remove_network(self, name: str) -> None:
        remove(self.conn, name)

    @_translated
    def ensure_network(self, name: str, uuid: str, xml: str, start: bool) -> None:
        ensure(self.conn, name, uuid, xml, start)

    @_translated
    def define_filter(self, xml: str) -> bool:
        return define_filter(self.conn, xml)

    @_translated
    def remove_filter(self, name: str) -> None:
        remove_filter(self.conn, name)

    @_translated
    def filter_names(self, prefix: str) -> list[str]:
        return filter_names(self.conn, prefix)

    # -- fixed IPs ------------------------------------------------------------------------------
    @_translated
    def reserve_address(self, store, row: dict) -> None:
        dhcp.reserve(store, self.conn, self.name, row)

    @_translated
    def release_address(self, store, row: dict) -> None:
        dhcp.release(store, self.conn, self.name, row)

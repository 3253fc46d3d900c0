"""A VM's network filter on its hosts (issue 15): anti-spoofing for every NIC on a
libvirt network, and the VM's firewall rules (virt/nwfilter_xml.py).

The filter `vmappliance-<uuid>` is defined on a host before the VM is defined or
started there (VmFiles.ensure_defined; a live migration's target before the
migration starts), redefined by every update (a rule changed on a running VM
applies at once: libvirt re-instantiates a redefined filter on the NICs that use
it), and undefined with the VM (lifecycle delete; a migration's source after the
guest left it). Its rules are the VM's own (spec firewall) followed by its server
group's (groups' firewall, shared by the group's members).
"""
from __future__ import annotations

import logging
from typing import Any

from appliance.access.principal import DEFAULT_PROJECT
from appliance.controller import networks
from appliance.errors import Failed, NotFound
from appliance.model import NetworkType
from appliance.model.networks import NetworkKind, gateway
from appliance.store import Row, Store
from appliance.virt import nwfilter_xml
from appliance.virt.driver import DriverError, HostDriver

log = logging.getLogger(__name__)


def rules(store: Store, row: dict) -> list[dict[str, Any]]:
    """The VM's rules, then its server group's (each once)."""
    own = list(row["spec"].get("firewall") or [])
    group = row["spec"].get("group")
    if group:
        try:
            shared = store.get_group(row.get("project") or DEFAULT_PROJECT, group)
        except NotFound:
            shared = {}
        own += [r for r in shared.get("firewall") or [] if r not in own]
    return own


def _dhcp_server(net: Row | None) -> str | None:
    """The DHCP server a NIC's address is learned from: an appliance network's
    dnsmasq (its gateway); None elsewhere (a bridge's: the host network's own)."""
    if net is None or net["kind"] == NetworkKind.BRIDGE or not net.get("subnet"):
        return None
    return gateway(net["subnet"])


def filtered_nics(store: Store, row: dict) -> dict[str, dict[str, str]]:
    """MAC -> the <filterref> parameters of each NIC on a libvirt network (user-mode
    NICs have no tap for nwfilter to act on)."""
    spec, project = row["spec"], row.get("project") or DEFAULT_PROJECT
    out: dict[str, dict[str, str]] = {}
    nic = spec.get("network") or {}
    if nic.get("type") == NetworkType.NETWORK and row.get("mac"):
        out[row["mac"]] = nwfilter_xml.nic_parameters(
            row["mac"], nic.get("ip"), _dhcp_server(networks.appliance_network(store, row)))
    for extra in spec.get("networks") or []:
        if extra.get("mac"):
            out[extra["mac"]] = nwfilter_xml.nic_parameters(
                extra["mac"], extra.get("ip"),
                _dhcp_server(store.find_network(project, extra["network"])))
    return out


def prepare(store: Store, driver: HostDriver, row: dict) -> None:
    """The VM's filter defined (or redefined) on the driver's host, when it has a NIC
    on a libvirt network. A host without network filters (libvirt's test driver)
    runs the VM without, unless it has rules: those are refused there."""
    if not filtered_nics(store, row):
        return
    own = rules(store, row)
    if not driver.define_filter(nwfilter_xml.filter_xml(row["id"], own)) and own:
        raise Failed(f"host {driver.name} has no network filters (libvirt nwfilter) to "
                     "enforce the VM's firewall rules")


def remove(driver: HostDriver, row: dict, quiet: bool = False) -> None:
    """The VM's filter undefined on the driver's host (`quiet`: a failure is logged)."""
    try:
        driver.remove_filter(nwfilter_xml.filter_name(row["id"]))
    except DriverError as err:
        if not quiet:
            raise
        log.warning("network filter of %s left on %s: %s", row["name"], driver.name, err)

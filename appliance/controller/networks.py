"""A VM's libvirt networks on its host (issue 15), before the VM is defined or
started there: its first NIC's (network) and its further NICs' (networks[i].network).

A VM's `network: {type: network, name: X}` names its project's network X when
there is one (service/networks.py): the controller defines it on the host (the
libvirt network vmapp.PROJECT.X, autostarted) before it defines the VM, and
starts it before the VM starts. Else X is a libvirt network the appliance does
not manage: a VM starts on it only when it exists and is active there;
otherwise the start is refused (Conflict: 409, EBUSY) naming the network and
what to do, rather than failing in libvirt ("network 'X' is not active": 500).
"""
from __future__ import annotations

import logging

from appliance.access.principal import DEFAULT_PROJECT
from appliance.controller.context import Context
from appliance.errors import Conflict
from appliance.model import NetworkType
from appliance.model.networks import NetworkKind, libvirt_name
from appliance.store import Row, Store
from appliance.virt.driver import DriverError, HostDriver, Unreachable
from appliance.virt.host_networks import ACTIVE
from appliance.virt.network_xml import network_xml

FIELD = "network.name"
log = logging.getLogger(__name__)


def appliance_network(store: Store, row: dict) -> Row | None:
    """The project's network the VM's spec names, if it names one."""
    nic = row["spec"].get("network") or {}
    if nic.get("type") != NetworkType.NETWORK:
        return None
    return store.find_network(row.get("project") or DEFAULT_PROJECT, nic["name"])


def resolved(store: Store, row: dict) -> dict:
    """The row whose spec names the libvirt networks its NICs are on (the domain XML's
    <source network=...>, its DHCP reservations): an appliance network's libvirt name,
    for the first NIC (network) and the further ones (networks)."""
    project = row.get("project") or DEFAULT_PROJECT
    spec = row["spec"]
    net = appliance_network(store, row)
    if net is not None:
        spec = {**spec, "network": {**spec["network"],
                                    "name": libvirt_name(net["project"], net["name"])}}
    nics = []
    for nic in spec.get("networks") or []:
        found = store.find_network(project, nic["network"])
        nics.append(nic if found is None else
                    {**nic, "network": libvirt_name(found["project"], found["name"])})
    if nics:
        spec = {**spec, "networks": nics}
    return row if spec is row["spec"] else {**row, "spec": spec}


def prepare(ctx: Context, driver: HostDriver, host: str, row: dict, start: bool,
            check_unmanaged: bool = True) -> None:
    """The VM's networks ready on `host`: the appliance's defined (and started, when
    `start`); one it does not manage checked to exist and run, when `start` and
    `check_unmanaged`. The first NIC's (network), then the further ones' (networks)."""
    nic = row["spec"].get("network") or {}
    project = row.get("project") or DEFAULT_PROJECT
    if nic.get("type") == NetworkType.NETWORK:
        _prepare_one(ctx, driver, host, appliance_network(ctx.store, row), nic["name"], start,
                     check_unmanaged, FIELD)
    for i, extra in enumerate(row["spec"].get("networks") or []):
        _prepare_one(ctx, driver, host, ctx.store.find_network(project, extra["network"]),
                     extra["network"], start, check_unmanaged, f"networks[{i}].network")


def _prepare_one(ctx: Context, driver: HostDriver, host: str, net: Row | None, name: str,
                 start: bool, check_unmanaged: bool, field: str) -> None:
    if net is not None:
        bridge = net["bridge"] if net["kind"] == NetworkKind.BRIDGE else None
        if start and bridge is not None and driver.has_bridge(bridge) is False:
            raise Conflict(
                f"network {net['name']} attaches to host bridge {net['bridge']!r}, which host "
                f"{host} does not have: create the bridge there, or place the VM on a host "
                "that has it", field)
        name = libvirt_name(net["project"], net["name"])
        try:
            driver.ensure_network(name, net["id"], network_xml(net, ctx.instance_id), start)
        except Unreachable:
            raise
        except DriverError as err:  # its subnet taken on this host, a stale definition running
            raise Conflict(f"network {net['name']} cannot run on host {host} ({name}): "
                           f"{err.reason}", field) from None
        return
    if not (start and check_unmanaged):
        return
    state = driver.network_state(name)
    if state is None:
        raise Conflict(
            f"libvirt network {name!r} does not exist on host {host}: define it there, or "
            f"create an appliance network {name!r} (POST /v1/networks), which the appliance "
            "defines and starts on each host itself", field)
    if state != ACTIVE:
        raise Conflict(
            f"libvirt network {name!r} is not active on host {host}: start it there with "
            f"`virsh net-start {name}` (and `virsh net-autostart {name}` to keep it so), or "
            f"make it an appliance network (POST /v1/networks), which the appliance starts "
            "itself", field)


def sweep(ctx: Context) -> None:
    """The networks this appliance made on its connected hosts that are no longer
    one of its networks (deleted since, or deleted and made again: another uuid)
    stopped and undefined there. Only its own (network_xml.owner): never another
    appliance's or an admin's. A host that fails is left for the next pass."""
    wanted = {net["id"] for net in ctx.store.list_networks()}
    for link in ctx.links.all():
        if not link.connected:
            continue
        try:
            for name, uuid in link.driver.owned_networks(ctx.instance_id).items():
                if uuid not in wanted:
                    link.driver.remove_network(name)
                    log.info("removed network %s from host %s: deleted", name, link.name)
        except DriverError as err:
            log.warning("networks of host %s not swept: %s", link.name, err)

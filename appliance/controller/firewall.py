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
from appliance.controller.context import Context
from appliance.errors import Failed, NotFound
from appliance.model import NetworkType
from appliance.model.networks import NetworkKind, gateway
from appliance.store import Row, Store
from appliance.virt import nwfilter_xml
from appliance.virt.driver import DriverError, HostDriver

log = logging.getLogger(__name__)

SWEEP_SECONDS = 600.0  # a listing per host and a read of every VM id: not every resync


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


def sweep(ctx: Context) -> None:
    """This appliance's filters (named nwfilter_xml.PREFIX + a VM uuid) left on its
    connected hosts undefined there, with an event: a VM's the store no longer has (its
    delete cut short, its stray domain removed by hand), or a VM's that lives on another
    host (a migration's or a stale copy's source whose removal failed, a shelve's). A
    filter stays while a domain with its uuid is on that host (another appliance's VM,
    a stray domain the resync reports) or its VM has an operation under way (a
    migration defines the target's first). A host that fails is left for the next pass.
    The loop calls it every SWEEP_SECONDS and after a host (re)connects."""
    hosts: dict[str, str | None] | None = None
    for link in ctx.links.all():
        if not link.connected:
            continue
        try:
            named = {name: vm_id for name in link.driver.filter_names(nwfilter_xml.PREFIX)
                     if (vm_id := nwfilter_xml.vm_of(name))}
            if not named:
                continue
            if hosts is None:  # read after the listing: a VM made meanwhile has its row
                hosts = ctx.store.vm_hosts()
                open_ops = ctx.store.vm_ids_with_open_operations()
            for name, vm_id in named.items():
                if vm_id in ctx.busy or vm_id in ctx.migrating or vm_id in open_ops:
                    continue
                if vm_id in hosts and hosts[vm_id] == link.name:
                    continue
                if link.lookup(vm_id) is not None:
                    continue
                # Asked again right before: the map was read once for all hosts, and a VM
                # made since (its filter defined before its domain) is not in it.
                fresh = ctx.store.get_vm_by_id(vm_id)
                if fresh is not None and (fresh["host"] == link.name or vm_id in ctx.busy
                                          or vm_id in ctx.store.vm_ids_with_open_operations()):
                    continue
                link.driver.remove_filter(name)
                why = "its VM is gone" if vm_id not in hosts else f"its VM is on {hosts[vm_id]}"
                ctx.store.add_event("orphan-filter-removed",
                                    f"removed network filter {name} from host {link.name}: {why}")
        except DriverError as err:
            log.warning("network filters of host %s not swept: %s", link.name, err)


def remove(driver: HostDriver, row: dict, quiet: bool = False) -> None:
    """The VM's filter undefined on the driver's host (`quiet`: a failure is logged)."""
    try:
        driver.remove_filter(nwfilter_xml.filter_name(row["id"]))
    except DriverError as err:
        if not quiet:
            raise
        log.warning("network filter of %s left on %s: %s", row["name"], driver.name, err)

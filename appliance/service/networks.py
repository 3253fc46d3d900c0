"""Networks the appliance manages (issue 15): nat, isolated and bridge networks,
defined as libvirt networks (vmapp.PROJECT.NAME) on each host that runs a VM on
one. A network belongs to a project, as a server group: the caller's project's
networks alone are seen, and a VM's `network: {type: network, name: X}` means the
project's network X when there is one, else (as before networks were resources)
the host's libvirt network X, which the appliance does not manage.

Rules kept here: a bridge network is an admin's to create (its guests sit on a
host bridge, beside the host's own network); subnets of the appliance's networks
never overlap (every project's: they share the hosts' routing table); at most
MAX_NETWORKS in all, MAX_PROJECT_NETWORKS in a project; a fixed IP lies in its
network's subnet, is not the network's, broadcast or gateway address, nor
another VM's reservation there; a network in use is not deleted (409 naming
its VMs).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from appliance.access import caller
from appliance.access.policy import Action, check
from appliance.access.principal import shown_vm_name
from appliance.errors import Conflict, Invalid
from appliance.model import NetworkType
from appliance.model.networks import (
    MAX_NETWORKS,
    MAX_PROJECT_NETWORKS,
    NetworkCreate,
    NetworkKind,
    address_refusal,
    gateway,
    libvirt_name,
)
from appliance.service.base import ServiceBase
from appliance.store import Row

SHOWN_USERS = 5  # VMs a refusal names


class Networks(ServiceBase):
    def network_view(self, row: Row) -> dict[str, Any]:
        subnet = row.get("subnet")
        return {
            "name": row["name"], "project": row["project"], "kind": row["kind"],
            "subnet": subnet, "gateway": gateway(subnet) if subnet else None,
            "dhcp": row["dhcp"], "domain": row.get("domain"), "bridge": row.get("bridge"),
            "libvirt_name": libvirt_name(row["project"], row["name"]),
            "vms": self.store.network_users(row["project"], row["name"]),
            "reservations": self.store.network_reservations(row["project"], row["name"]),
            "created": row["created"],
        }

    def list_networks(self) -> list[dict[str, Any]]:
        return [self.network_view(n) for n in self.store.list_networks(self._project())]

    def get_network(self, name: str) -> dict[str, Any]:
        return self.network_view(self.store.get_network(self._project(), name))

    def create_network(self, body: Any) -> dict[str, Any]:
        net = NetworkCreate.parse(body)
        if net["kind"] == NetworkKind.BRIDGE:
            # Its guests sit on the host's own network, beside the host: the admins' call.
            check(caller(), Action.ADMIN)
        project = self._project()
        with self.store.transaction():
            if self.store.find_network(project, net["name"]) is not None:
                raise Conflict(f"a network named {net['name']!r} exists", "name")
            if self.store.count_networks() >= MAX_NETWORKS:
                raise Conflict(f"the appliance holds at most {MAX_NETWORKS} networks", "name")
            if len(self.store.list_networks(project)) >= MAX_PROJECT_NETWORKS:
                raise Conflict(f"a project holds at most {MAX_PROJECT_NETWORKS} networks", "name")
            if net["subnet"] is not None:
                self._refuse_overlap(net["subnet"])
            row = {"id": str(self.uuidgen()), "project": project, **net,
                   "created": self.clock()}
            self.store.insert_network(row)
            self.store.add_event("network-created",
                                 f"network {net['name']} ({net['kind']}) created",
                                 project=project)
        return self.get_network(net["name"])

    def _refuse_overlap(self, subnet: str) -> None:
        """Every project's networks: they share each host's routes."""
        wanted = ipaddress.IPv4Network(subnet)
        for other in self.store.list_networks():
            if other.get("subnet") and wanted.overlaps(ipaddress.IPv4Network(other["subnet"])):
                # Another project's network is named by its subnet only.
                named = (f"network {other['name']}" if other["project"] == self._project()
                         else "another project's network")
                raise Conflict(f"{subnet} overlaps {other['subnet']} of {named}", "subnet")

    def delete_network(self, name: str) -> None:
        project = self._project()
        with self.store.transaction():
            self.store.get_network(project, name)
            users = self.store.network_users(project, name)
            if users:
                shown = ", ".join(users[:SHOWN_USERS]) + (", ..." if len(users) > SHOWN_USERS
                                                          else "")
                raise Conflict(f"network {name} is in use by VMs ({shown}): move or delete "
                               "them first", "name")
            self.store.delete_network(project, name)
            self.store.add_event("network-deleted", f"network {name} deleted", project=project)

    # -- a VM spec's network ------------------------------------------------------------
    def _check_network(self, spec: dict[str, Any], project: str, vm_id: str) -> bool:
        """A spec naming one of the project's networks: its fixed IP, if any, is a
        guest address of the subnet no other VM of the project reserves there.
        Whether the spec names an appliance network (False: a libvirt network the
        appliance does not manage, or no libvirt network at all)."""
        nic = spec["network"]
        if nic["type"] != NetworkType.NETWORK:
            return False
        return self._check_nic(project, vm_id, nic["name"], nic.get("ip"), "network.ip")

    def _check_nics(self, spec: dict[str, Any], project: str, vm_id: str) -> None:
        """The further NICs' fixed IPs (spec networks), as the first NIC's: on an
        appliance network by _check_nic; on another libvirt network no other VM's."""
        for i, nic in enumerate(spec.get("networks") or []):
            field = f"networks[{i}].ip"
            if self._check_nic(project, vm_id, nic["network"], nic.get("ip"), field):
                continue
            other = nic.get("ip") and self.store.vm_with_fixed_ip(nic["network"], nic["ip"],
                                                                  excluding=vm_id)
            if other:
                raise Conflict(f"{nic['ip']} is already the address of "
                               f"{shown_vm_name(other['project'], other['name'])} on "
                               f"{nic['network']}", field)

    def _check_nic(self, project: str, vm_id: str, network: str, ip: str | None,
                   field: str) -> bool:
        net = self.store.find_network(project, network)
        if net is None:
            return False
        if not ip:
            return True
        if net["kind"] == NetworkKind.BRIDGE:
            raise Invalid(f"network {net['name']} is a bridge: the host's network gives its "
                          "addresses, not the appliance; configure the guest instead", field)
        why = address_refusal(net["subnet"], ip)
        if why is not None:
            raise Invalid(why, field)
        holder = self.store.fixed_ip_holder(project, net["name"], ip, excluding=vm_id)
        if holder is not None:
            raise Conflict(f"{ip} is already the address of {holder['name']} on network "
                           f"{net['name']}", field)
        return True

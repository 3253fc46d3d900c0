"""Stand-ins for the metadata service's unit tests: a store with VMs and networks, a
libvirt connection with domains and DHCP leases, and a namespace."""
from __future__ import annotations

import libvirt

from appliance.metadata.identify import Namespace
from appliance.model import ACTIVE_STATES

SUBNET = "10.20.0.0/24"
LIBVIRTD_PID = 4242


def vm(vm_id: str, name: str, network: dict, host: str = "h1", mac: str = "52:54:00:00:00:01",
       state: str = "running", project: str = "default", **spec) -> dict:
    return {"id": vm_id, "name": name, "project": project, "host": host, "mac": mac,
            "observed_state": state, "instance_id": None, "public_keys": None,
            "spec": {"network": network, "cloud_init": {}, "labels": {}, **spec}}


class FakeStore:
    def __init__(self, vms: list[dict], networks: list[dict] | None = None):
        self.vms = vms
        self.networks = networks if networks is not None else [
            {"project": "default", "name": "lab", "kind": "nat", "subnet": SUBNET}]

    def vms_on_host(self, host, observed=None, **_):
        return [r for r in self.vms if r["host"] == host
                and (observed is None or r["observed_state"] in observed)]

    def list_networks(self, project=None):
        return [n for n in self.networks if project is None or n["project"] == project]

    def find_network(self, project, name):
        return next((n for n in self.networks
                     if (n["project"], n["name"]) == (project, name)), None)


class FakeDomain:
    def __init__(self, name, uid=0):
        self._name = name
        self.uid = uid

    def name(self):
        return self._name

    def XMLDesc(self, flags=0):  # noqa: N802 - a running domain's DAC label
        return (f"<domain><seclabel type='dynamic' model='dac' relabel='yes'>"
                f"<label>+{self.uid}:+{self.uid}</label></seclabel></domain>")


class FakeNetwork:
    def __init__(self, leases):
        self.leases = leases

    def DHCPLeases(self):  # noqa: N802 - libvirt's name
        return self.leases


class FakeConnection:
    def __init__(self, domains: dict[str, str] | None = None,
                 leases: dict[str, list[dict]] | None = None):
        self.domains = domains or {}  # uuid -> domain name
        self.leases = leases or {}  # libvirt network -> leases
        self.uid = 0  # the uid its domains' QEMUs run as

    def lookupByUUIDString(self, uuid):  # noqa: N802
        if uuid not in self.domains:
            raise libvirt.libvirtError("no domain")
        return FakeDomain(self.domains[uuid], self.uid)

    def networkLookupByName(self, name):  # noqa: N802
        if name not in self.leases:
            raise libvirt.libvirtError("no network")
        return FakeNetwork(self.leases[name])


def namespace(hosts=("h1",), local: dict[tuple[str, int], int] | None = None,
              arp: dict[str, str] | None = None) -> Namespace:
    """`local`: (peer ip, port) -> inode of the sockets of this namespace; `arp`: its
    neighbour table, ip -> MAC."""
    sockets = local or {}
    neighbours = arp or {}

    def established_inode(src, sport, dst, dport):
        assert (dst, dport) == ("169.254.169.254", 80)
        return sockets.get((src, sport))

    return Namespace((1, 2), LIBVIRTD_PID, list(hosts), established_inode, {},
                     lambda ip: {neighbours[ip].lower()} if ip in neighbours else set())


ACTIVE = frozenset(ACTIVE_STATES)

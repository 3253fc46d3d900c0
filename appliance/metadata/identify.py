"""Which VM a metadata request comes from: never what the request says, only where
it comes from, in the network namespace of the host(s) whose listener took it.

- From a local address, i.e. a socket of this namespace (sock_diag finds the peer's
  established socket by its four-tuple): QEMU's user-mode stack connects for the
  guest from the QEMU process. The socket must be held by the QEMU of a running VM
  of the appliance on one of these hosts: its pid from libvirt's pid file (root's,
  in the host's mount namespace, /proc/LIBVIRTD/root/run/libvirt/qemu/DOMAIN.pid),
  its command line naming the domain's UUID. Any other local process gets nothing.
- From elsewhere: a guest on one of the appliance's networks, routed by its default
  gateway (the network's bridge address) with its own source address. The address
  must lie in the subnet of an appliance network; the VM is the one on these hosts
  with a NIC on that network whose fixed IP it is, else whose MAC libvirt's DHCP
  server leased it to; either way the namespace's neighbour table must have the
  address at that NIC's MAC (a lease's MAC is what the guest's DHCP request said).
  That the guest cannot send from another VM's address (and MAC) is
  libvirt's `clean-traffic` nwfilter's job (SECURITY.md): without it, a guest that
  takes a neighbour's address reads the neighbour's metadata.
"""
from __future__ import annotations

import ipaddress
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import defusedxml.ElementTree as DefusedET
import libvirt

from appliance.access.principal import DEFAULT_PROJECT
from appliance.controller.files import seed_nics
from appliance.metadata import netns
from appliance.metadata.documents import Instance
from appliance.model import ACTIVE_STATES, NetworkType
from appliance.model.networks import libvirt_name
from appliance.store import Store
from appliance.virt import cloudinit

log = logging.getLogger("appliance.metadata")
_DOMAIN_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]{0,199}")
QEMU_RUN_DIR = "root/run/libvirt/qemu"  # under /proc/PID of the host's libvirtd


@dataclass
class Namespace:
    """A network namespace the service listens in: the hosts whose libvirtd runs
    there, one process of theirs (`pid`: /proc/PID/root is the hosts' mount
    namespace), and its sock_diag lookup (netns.SocketDiag.established_inode)."""
    key: tuple[int, int]
    pid: int
    hosts: list[str]
    established_inode: Callable[[str, int, str, int], int | None]
    pids: dict[str, int] = field(default_factory=dict)  # host -> its libvirtd's pid
    # the MACs the namespace's neighbour table has an address at (netns.SocketDiag)
    neighbour_macs: Callable[[str], set[str]] = lambda _address: set()


class Identifier:
    def __init__(self, store: Store, connection: Callable[[str], Any],
                 proc: Path = Path("/proc"),
                 holds_socket: Callable[[int, int], bool] = netns.holds_socket,
                 cmdline: Callable[[int], list[str]] = netns.process_cmdline,
                 uids: Callable[[int], set[int]] = netns.process_uids):
        self.store = store
        self.connection = connection  # host name -> its libvirt connection
        self.proc = proc
        self.holds_socket = holds_socket
        self.cmdline = cmdline
        self.uids = uids

    def identify(self, ns: Namespace, peer_ip: str, peer_port: int) -> Instance | None:
        inode = ns.established_inode(peer_ip, peer_port, netns.METADATA_ADDRESS,
                                     netns.METADATA_PORT)
        if inode is not None:  # a socket of this namespace: a QEMU's, or no VM's
            row = self._by_process(ns, inode) if inode else None
            address = str(cloudinit.USER_MODE["address"])
        else:
            row = self._by_address(ns, peer_ip)
            address = peer_ip
        if row is None:
            return None
        return Instance(row, address, seed_nics(self.store, row))

    # -- user mode: the QEMU process that holds the connection ------------------
    def _running(self, ns: Namespace) -> Iterator[tuple[str, dict]]:
        for host in ns.hosts:
            for row in self.store.vms_on_host(host, observed=ACTIVE_STATES):
                yield host, row

    def _by_process(self, ns: Namespace, inode: int) -> dict | None:
        for host, row in self._running(ns):
            nic = row["spec"].get("network") or {}
            if nic.get("type") != NetworkType.USER or nic.get("outbound") == "none":
                continue
            found = self._pid_file(ns, host, row)
            # Holding the connection first, then that domain's QEMU: a pid reused in
            # between would have to become the domain's QEMU again.
            if found is not None and self.holds_socket(found[0], inode) \
                    and self._is_qemu(found[0], found[1], row["id"]):
                return row
        return None

    def qemu_pid(self, ns: Namespace, host: str, row: dict) -> int | None:
        """The pid of the VM's QEMU on `host`, from libvirt's pid file; None when it
        does not run there (or the process is not that domain's)."""
        found = self._pid_file(ns, host, row)
        return found[0] if found is not None and self._is_qemu(*found, row["id"]) else None

    def _pid_file(self, ns: Namespace, host: str, row: dict) -> tuple[int, int] | None:
        """The pid in the VM's pid file on `host`, and the uid its QEMU runs as."""
        try:
            domain = self.connection(host).lookupByUUIDString(row["id"])
            name, uid = domain.name(), _qemu_uid(domain.XMLDesc(0))
        except libvirt.libvirtError:
            return None
        if not _DOMAIN_NAME.fullmatch(name) or uid is None:
            return None
        libvirtd = ns.pids.get(host, ns.pid)
        try:
            pid = int((self.proc / str(libvirtd) / QEMU_RUN_DIR / f"{name}.pid").read_text())
        except (OSError, ValueError):
            return None
        return pid, uid

    def _is_qemu(self, pid: int, uid: int, vm_id: str) -> bool:
        """Whether `pid` runs as the domain's QEMU user with `-uuid VM_ID` (libvirt's).
        The command line alone is anyone's to choose: a process that took a stopped
        QEMU's pid (its pid file not yet removed) with `-uuid VM_ID` in its argv was
        taken for the VM; it must also run as QEMU's user (the domain's DAC label)."""
        if self.uids(pid) != {uid}:
            return False
        args = self.cmdline(pid)
        return any(a == "-uuid" and b == vm_id for a, b in zip(args, args[1:], strict=False))

    # -- an appliance network: the fixed IP, else the DHCP lease ------------------
    def _by_address(self, ns: Namespace, peer_ip: str) -> dict | None:
        try:
            address = ipaddress.IPv4Address(peer_ip)
        except ValueError:
            return None
        net = next((n for n in self.store.list_networks()
                    if n.get("subnet") and address in ipaddress.IPv4Network(n["subnet"])), None)
        if net is None:
            return None
        gateway = next(ipaddress.IPv4Network(net["subnet"]).hosts())
        if address == gateway:  # the host's own address on the bridge
            return None
        nics = [(host, row, mac, ip) for host, row in self._running(ns)
                if (row.get("project") or DEFAULT_PROJECT) == net["project"]
                for mac, ip in _nics_on(row, net["name"])]
        fixed = [(host, row, mac) for host, row, mac, ip in nics if ip == peer_ip]
        if fixed:
            return fixed[0][1] if len(fixed) == 1 and self._seen(ns, peer_ip, fixed[0][2]) \
                else None
        network = libvirt_name(net["project"], net["name"])
        for host in ns.hosts:
            for mac in self._leased_macs(host, network, peer_ip):
                found = [row for on, row, nic_mac, _ip in nics
                         if on == host and nic_mac and nic_mac.lower() == mac]
                if found:
                    return found[0] if self._seen(ns, peer_ip, mac) else None
        return None

    @staticmethod
    def _seen(ns: Namespace, ip: str, mac: str | None) -> bool:
        """Whether the hosts' neighbour table has `ip` at the NIC's MAC. A lease's MAC
        is the chaddr of the guest's DHCP request, which the guest writes: a guest
        could lease its own address under a neighbour's MAC (after releasing it, which
        libvirt's DHCP snooping does not see: its anti-spoofing still lets the guest
        use the address) and be taken for that neighbour. The host resolved the
        address to answer the connection, and anti-spoofing (nwfilter
        no-arp-spoofing) makes the guest answer with its own MAC. (libvirt's ARP
        source, virDomainInterfaceAddresses, fails on libvirt 9.0: 'wrong nlmsg len'.)"""
        return bool(mac) and str(mac).lower() in ns.neighbour_macs(ip)

    def _leased_macs(self, host: str, network: str, ip: str) -> list[str]:
        try:
            leases = self.connection(host).networkLookupByName(network).DHCPLeases()
        except libvirt.libvirtError:
            return []
        return [str(lease.get("mac") or "").lower() for lease in leases
                if lease.get("ipaddr") == ip]


def _nics_on(row: dict, network: str) -> list[tuple[str | None, str | None]]:
    """(MAC, fixed IP) of each of the VM's NICs on its project's network `network`."""
    spec = row["spec"]
    found = []
    first = spec.get("network") or {}
    if first.get("type") == NetworkType.NETWORK and first.get("name") == network:
        found.append((row.get("mac"), first.get("ip")))
    for nic in spec.get("networks") or []:
        if nic.get("network") == network:
            found.append((nic.get("mac"), nic.get("ip")))
    return found


def _qemu_uid(xml: str) -> int | None:
    """The uid a running domain's QEMU has, from its live XML's DAC label (`+0:+0`);
    root when it has none (libvirt's default); None when the label is unreadable."""
    try:
        root = DefusedET.fromstring(xml)
    except (DefusedET.ParseError, ValueError):
        return None
    label = root.findtext("seclabel[@model='dac']/label")
    if label is None:
        return 0
    user = label.partition(":")[0].strip().lstrip("+")
    return int(user) if user.isdigit() else None

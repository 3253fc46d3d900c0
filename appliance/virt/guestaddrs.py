"""What a guest says about its own addresses, checked before the appliance keeps it.

interfaceAddresses(VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_AGENT) is the guest agent's
answer: libvirt copies the interface names, MACs and "ip-address" strings the
agent sends without checking them, and every domain this appliance builds has the
agent's channel. So a guest (root inside it, no token needed) chooses that text.
Only entries that are IP addresses are kept, at most MAX_ADDRESSES, with a plain
interface name and a MAC or nothing; the rest is dropped, not quoted. Link-local
addresses (fe80::/10, 169.254/16) are left out as loopback is: nothing reaches
the VM by them without naming an interface, DHCP leases never list them, and
an agent reports the IPv6 one seconds after boot, so the addresses would change
under a user without the guest changing.
"""
from __future__ import annotations

import ipaddress
import re

MAX_ADDRESSES = 64
_IFNAME = re.compile(r"[A-Za-z0-9_.:@-]{1,64}")
_MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")


def checked(found: dict, source: str) -> list[dict]:
    """The addresses entries of one interfaceAddresses() answer (loopback and
    link-local left out)."""
    out: list[dict] = []
    for iface, data in found.items():
        if iface == "lo" or not isinstance(data, dict):
            continue
        name = iface if isinstance(iface, str) and _IFNAME.fullmatch(iface) else "unnamed"
        mac = data.get("hwaddr")
        mac = mac.lower() if isinstance(mac, str) and _MAC.fullmatch(mac.lower()) else None
        for addr in data.get("addrs") or []:
            try:
                address = ipaddress.ip_address(addr.get("addr"))
            except (ValueError, TypeError, AttributeError):
                continue
            if address.is_link_local:
                continue
            prefix = addr.get("prefix")
            if (
                isinstance(prefix, bool)
                or not isinstance(prefix, int)
                or not 0 <= prefix <= address.max_prefixlen
            ):
                continue
            out.append(
                {
                    "interface": name,
                    "mac": mac,
                    "address": str(address),
                    "prefix": prefix,
                    "source": source,
                }
            )
            if len(out) >= MAX_ADDRESSES:
                return out
    return out

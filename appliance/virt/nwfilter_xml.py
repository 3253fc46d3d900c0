"""A VM's libvirt network filter (issue 15): anti-spoofing and its firewall rules,
built with ElementTree from checked values (model/firewall.py's stored rules,
addresses parsed by ipaddress), never from the caller's text.

One filter per VM, `vmappliance-<uuid>`, referenced by each of its NICs on a
libvirt network (domain.py, <filterref> with the NIC's own parameters):
  - libvirt's `clean-traffic` (no MAC, IP or ARP spoofing, no other L2 traffic):
    MAC is the NIC's; IP its fixed IP, or learned from the network's DHCP
    answers (CTRL_IP_LEARNING=dhcp, trusting only DHCP_SERVER when known);
  - no DHCP server among the guests: a guest's DHCP answers (udp 67 -> 68) are
    dropped, always, as Neutron's port security does; else one guest could hand
    its neighbours a false gateway, DNS server or address;
  - the rules, as security groups: a direction (in: to the guest, out: from it)
    with any rule drops what its rules, replies (conntrack ESTABLISHED/RELATED)
    and DHCP do not accept; a direction without rules stays open. The guest's
    out rules also always allow the metadata service (169.254.169.254, tcp 80).
nwfilter's direction is the guest's: `in` is traffic to it. Accept rules keep
libvirt's state matching (a connection accepted one way has its replies back).
"""
from __future__ import annotations

import ipaddress
import uuid
import xml.etree.ElementTree as ET
from typing import Any

from appliance.model.firewall import port_range

PREFIX = "vmappliance-"
METADATA_ADDRESS = "169.254.169.254"
# nwfilter priorities (-1000..1000, lower first): no DHCP server, replies and DHCP, the
# rules, the drop.
_NO_DHCP_SERVER, _REPLIES, _DHCP, _METADATA, _RULES, _DROP = 90, 100, 110, 120, 200, 900


def filter_name(vm_id: str) -> str:
    return PREFIX + vm_id


def vm_of(name: str) -> str | None:
    """The VM uuid a filter name carries (as filter_name wrote it), or None for another filter."""
    if not name.startswith(PREFIX):
        return None
    vm_id = name[len(PREFIX):]
    try:
        return vm_id if str(uuid.UUID(vm_id)) == vm_id else None
    except ValueError:
        return None


def _rule(parent: ET.Element, action: str, direction: str, priority: int, proto: str,
          **attrs: str) -> None:
    rule = ET.SubElement(parent, "rule", {"action": action, "direction": direction,
                                          "priority": str(priority)})
    ET.SubElement(rule, proto, attrs)


def _peer(rule: dict[str, Any]) -> dict[str, str]:
    """The rule's remote side: from (in) is the packet's source, to (out) its destination."""
    side, key = ("src", "from") if rule["direction"] == "in" else ("dst", "to")
    if key not in rule:
        return {}
    net = ipaddress.IPv4Network(rule[key])
    return {f"{side}ipaddr": str(net.network_address), f"{side}ipmask": str(net.prefixlen)}


def _user_rule(parent: ET.Element, rule: dict[str, Any], priority: int) -> None:
    attrs = _peer(rule)
    if "port" in rule:
        low, high = port_range(rule["port"])
        attrs["dstportstart"], attrs["dstportend"] = str(low), str(high)
    proto = "all" if rule["proto"] == "any" else rule["proto"]
    _rule(parent, "accept", rule["direction"], priority, proto, **attrs)


def filter_xml(vm_id: str, rules: list[dict[str, Any]]) -> str:
    """The filter's XML: clean-traffic, then the rules of each direction that has any."""
    root = ET.Element("filter", {"name": filter_name(vm_id), "chain": "root"})
    # The VM's uuid: libvirt redefines a filter only under the uuid it was defined with.
    ET.SubElement(root, "uuid").text = str(uuid.UUID(vm_id))
    ET.SubElement(root, "filterref", {"filter": "clean-traffic"})
    _rule(root, "drop", "out", _NO_DHCP_SERVER, "udp", srcportstart="67", dstportstart="68")
    for direction in ("in", "out"):
        own = [r for r in rules if r["direction"] == direction]
        if not own:
            continue  # open, as without a firewall
        _rule(root, "accept", direction, _REPLIES, "all", state="ESTABLISHED,RELATED")
        if direction == "in":  # the network's DHCP server answering the guest
            _rule(root, "accept", "in", _DHCP, "udp", srcportstart="67", dstportstart="68")
        else:
            _rule(root, "accept", "out", _DHCP, "udp", srcportstart="68", dstportstart="67")
            _rule(root, "accept", "out", _METADATA, "tcp", dstipaddr=METADATA_ADDRESS,
                  dstportstart="80")
        for i, rule in enumerate(own):
            _user_rule(root, rule, _RULES + i)
        _rule(root, "drop", direction, _DROP, "all")
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


def nic_parameters(mac: str, ip: str | None, dhcp_server: str | None) -> dict[str, str]:
    """A NIC's <filterref> parameters: its MAC, and its fixed IP or DHCP learning."""
    params = {"MAC": mac}
    if ip is not None:
        params["IP"] = str(ipaddress.IPv4Address(ip))
    else:
        params["CTRL_IP_LEARNING"] = "dhcp"
        if dhcp_server is not None:
            params["DHCP_SERVER"] = str(ipaddress.IPv4Address(dhcp_server))
    return params


def add_filterref(iface: ET.Element, vm_id: str, params: dict[str, str]) -> None:
    ref = ET.SubElement(iface, "filterref", {"filter": filter_name(vm_id)})
    for name, value in params.items():
        ET.SubElement(ref, "parameter", {"name": name, "value": value})


def filter_of(xml: str) -> dict[str, Any]:
    """What a filter's XML says, for tests and the fake driver: its name and rules."""
    root = ET.fromstring(xml)  # noqa: S314 - the appliance's own XML (filter_xml)
    rules = [{"action": r.get("action"), "direction": r.get("direction"),
              "priority": int(r.get("priority") or 500), "proto": r[0].tag, **r[0].attrib}
             for r in root.iter("rule")]
    refs = [ref.get("filter") for ref in root.iter("filterref")]
    return {"name": root.get("name"), "refs": refs, "rules": rules}

"""A libvirt network's XML for one of the appliance's networks (issue 15), built
with ElementTree from the network's validated record only (model/networks.py):
never a string a user wrote spliced into XML text.

nat:      <forward mode='nat'/>, the subnet's first address on the bridge, DHCP, DNS domain
isolated: the same without <forward> (guests and the host only)
bridge:   <forward mode='bridge'/><bridge name=HOST BRIDGE/> (the host's own network)

The network's id is its libvirt uuid, so that a host's definition of a network
deleted since (and made again under the same name) is told from the current one;
its <metadata> names the appliance that made it (its instance id), so that the
controller removes only its own networks once deleted, never another's.
"""
from __future__ import annotations

import ipaddress
import xml.etree.ElementTree as ET

import defusedxml.ElementTree as DefusedET

from appliance.model.networks import NetworkKind, gateway, libvirt_name

METADATA_NS = "urn:vm-appliance:network:1"


def owner(xml_text: str) -> str | None:
    """The instance id of the appliance that made the network, if one did."""
    found = DefusedET.fromstring(xml_text).find(f"metadata/{{{METADATA_NS}}}network")
    return None if found is None else found.get("instance")


def network_xml(row: dict, instance_id: str) -> str:
    root = ET.Element("network")
    ET.SubElement(root, "name").text = libvirt_name(row["project"], row["name"])
    ET.SubElement(root, "uuid").text = row["id"]
    metadata = ET.SubElement(root, "metadata")
    ET.SubElement(metadata, f"{{{METADATA_NS}}}network", instance=instance_id)
    kind = row["kind"]
    if kind == NetworkKind.BRIDGE:
        ET.SubElement(root, "forward", mode="bridge")
        ET.SubElement(root, "bridge", name=row["bridge"])
        return ET.tostring(root, encoding="unicode")
    if kind == NetworkKind.NAT:
        ET.SubElement(root, "forward", mode="nat")
    elif kind != NetworkKind.ISOLATED:
        raise ValueError(f"unknown network kind {kind!r}")
    # libvirt names the bridge (virbrN) and picks the MAC: nothing of the user's there.
    ET.SubElement(root, "bridge", stp="on", delay="0")
    ET.SubElement(root, "domain", name=row["domain"], localOnly="yes")
    subnet = ipaddress.IPv4Network(row["subnet"])
    ip = ET.SubElement(root, "ip", address=gateway(row["subnet"]), netmask=str(subnet.netmask))
    dhcp = ET.SubElement(ip, "dhcp")
    ET.SubElement(dhcp, "range", start=row["dhcp"]["start"], end=row["dhcp"]["end"])
    return ET.tostring(root, encoding="unicode")

"""The body of POST /v1/networks (issue 15): a network the appliance defines on
the hosts that run a VM on it. Defined once (pydantic, as the VM spec): what it
accepts, the refusal each fault gets (Invalid with the field), the stored form
with its defaults filled in, and the JSON Schema /v1/openapi.json shows.

Kinds: `nat` (a libvirt network with NAT to the outside: subnet, DHCP, DNS),
`isolated` (the same without a route out), `bridge` (guests attached to an
existing host bridge; the host's own network gives addresses, so no subnet of
the appliance's). What needs the store (a name taken, a subnet overlapping
another network, the caller's role) is the service's
(appliance/service/networks.py).
"""
from __future__ import annotations

import ipaddress
import re
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from appliance.errors import Invalid
from appliance.model import values
from appliance.model.access import _Body
from appliance.model.fields import DnsName, one_of, refused, rule, says, stored_as_value
from appliance.model.spec import as_invalid


class NetworkKind(StrEnum):
    NAT = "nat"
    ISOLATED = "isolated"
    BRIDGE = "bridge"


NETWORK_KINDS = tuple(kind.value for kind in NetworkKind)
MIN_PREFIX, MAX_PREFIX = 16, 29  # a /16 is 65k guests; a /29 still has a DHCP range
MAX_DOMAIN = 253  # a DNS name's length
MAX_NETWORKS = 64  # in all: each is a bridge and a dnsmasq on every host using it
MAX_PROJECT_NETWORKS = 16  # one project's: the rest is left to the others
# The libvirt names of the appliance's networks: LIBVIRT_PREFIX + PROJECT.NAME. A VM
# spec may not name one directly (it would reach another project's network).
LIBVIRT_PREFIX = values.APPLIANCE_NETWORK_PREFIX
# Private IPv4 space only (RFC 1918): a subnet routed elsewhere would shadow it on the host.
PRIVATE = tuple(ipaddress.IPv4Network(n) for n in ("10.0.0.0/8", "172.16.0.0/12",
                                                   "192.168.0.0/16"))
# A Linux interface name (IFNAMSIZ: 15 characters), strictly: no '.', ':', '/', spaces.
BRIDGE_NAME = r"[A-Za-z][A-Za-z0-9_-]{0,14}"
_BRIDGE_NAME = re.compile(BRIDGE_NAME)
DOMAIN = rf"{values.DNS_LABEL}(\.{values.DNS_LABEL})*"
_DOMAIN = re.compile(DOMAIN)


def libvirt_name(project: str, name: str) -> str:
    """The libvirt network of the project's appliance network NAME (unique: DNS labels
    hold no '.')."""
    return f"{LIBVIRT_PREFIX}{project}.{name}"


def validate_subnet(value: Any, field: str = "subnet") -> str:
    loose = values.ipv4_network(value, field, "an IPv4 network ADDRESS/PREFIX, e.g. 10.20.0.0/24")
    if str(loose) != value:  # a prefix written /08
        raise Invalid(f"host bits set: the network is {loose}", field)
    if not MIN_PREFIX <= loose.prefixlen <= MAX_PREFIX:
        raise Invalid(f"the prefix must be /{MIN_PREFIX} to /{MAX_PREFIX}", field)
    if not any(loose.subnet_of(private) for private in PRIVATE):
        raise Invalid("must be private address space (10.0.0.0/8, 172.16.0.0/12 or "
                      "192.168.0.0/16)", field)
    return str(loose)  # value itself (checked above)


def validate_domain(value: Any, field: str = "domain") -> str:
    if not isinstance(value, str) or len(value) > MAX_DOMAIN or not _DOMAIN.fullmatch(value):
        raise Invalid(f"must be a DNS name (lowercase labels joined by '.', at most "
                      f"{MAX_DOMAIN} characters), e.g. lab.internal", field)
    return value


def validate_bridge(value: Any, field: str = "bridge") -> str:
    if not isinstance(value, str) or not _BRIDGE_NAME.fullmatch(value):
        raise Invalid("must be a host bridge's interface name (a letter, then up to 14 "
                      "letters, digits, '_' or '-'), e.g. br0", field)
    return value


Subnet = Annotated[str, rule(validate_subnet), WithJsonSchema({
    "type": "string", "pattern": r"^[0-9]{1,3}(\.[0-9]{1,3}){3}/[0-9]{1,2}$",
    "description": f"private IPv4 network, /{MIN_PREFIX} to /{MAX_PREFIX}, e.g. 10.20.0.0/24"})]
Domain = Annotated[str, rule(validate_domain), WithJsonSchema({
    "type": "string", "maxLength": MAX_DOMAIN, "pattern": values.anchored(DOMAIN),
    "description": "DNS domain of the network's guests (NAME.DOMAIN); default: its name"})]
Bridge = Annotated[str, rule(validate_bridge), WithJsonSchema({
    "type": "string", "pattern": values.anchored(BRIDGE_NAME),
    "description": "kind bridge: an existing host bridge (admins only)"})]
Address = Annotated[str, rule(lambda v, f: values.validate_ipv4(v, f)),
                    WithJsonSchema({"type": "string", "format": "ipv4"})]
Kind = Annotated[NetworkKind, says(one_of(NETWORK_KINDS))]


class DhcpRange(BaseModel):
    model_config = ConfigDict(extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _object(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise refused("must be an object with start and end")
        unknown = sorted(set(data) - {"start", "end"})
        if unknown:
            raise refused("unknown field; known fields are start, end", "." + unknown[0])
        for name in ("start", "end"):
            if data.get(name) is None:
                raise refused("required", "." + name)
        return data

    start: Address
    end: Address


def default_dhcp(subnet: str) -> dict[str, str]:
    """The upper half of the subnet's addresses, broadcast excluded: the lower half
    (after the gateway) is left for fixed IPs."""
    net = ipaddress.IPv4Network(subnet)
    return {"start": str(net.network_address + net.num_addresses // 2),
            "end": str(net.broadcast_address - 1)}


def gateway(subnet: str) -> str:
    """The host's address on the network (libvirt's bridge): the first one."""
    return str(ipaddress.IPv4Network(subnet).network_address + 1)


def address_refusal(subnet: str, ip: str) -> str | None:
    """Why `ip` cannot be a guest's address on `subnet`, or None."""
    net, addr = ipaddress.IPv4Network(subnet), ipaddress.IPv4Address(ip)
    if addr not in net:
        return f"{ip} is outside the network's subnet {subnet}"
    if addr == net.network_address:
        return f"{ip} is the network's own address"
    if addr == net.broadcast_address:
        return f"{ip} is the network's broadcast address"
    if str(addr) == gateway(subnet):
        return f"{ip} is the network's gateway (the host)"
    return None


class NetworkCreate(_Body):
    """A network: its name and kind; nat and isolated take a subnet (required), a DHCP
    range (default: the upper half) and a DNS domain (default: the name); bridge takes
    the host bridge (required) and nothing else."""

    required = ("name",)
    name: DnsName
    kind: Kind = stored_as_value(NetworkKind.NAT)
    subnet: Subnet | None = Field(None, description="nat, isolated: required")
    dhcp: DhcpRange | None = Field(None, description="nat, isolated: the range DHCP hands out "
                                                     "(default: the subnet's upper half)")
    domain: Domain | None = None
    bridge: Bridge | None = None

    @model_validator(mode="after")
    def _by_kind(self) -> NetworkCreate:
        if self.kind == NetworkKind.BRIDGE:
            if self.bridge is None:
                raise refused("required for a bridge network: the host bridge's name", ".bridge")
            for name in ("subnet", "dhcp", "domain"):
                if getattr(self, name) is not None:
                    raise refused("a bridge network takes its addresses from the host's "
                                  "network; only bridge is given", "." + name)
            return self
        if self.bridge is not None:
            raise refused("only a bridge network names a host bridge", ".bridge")
        if self.subnet is None:
            raise refused("required: the network's IPv4 subnet, e.g. 10.20.0.0/24", ".subnet")
        if self.dhcp is not None:
            for end in ("start", "end"):
                why = address_refusal(self.subnet, getattr(self.dhcp, end))
                if why is not None:
                    raise refused(why, f".dhcp.{end}")
            if (ipaddress.IPv4Address(self.dhcp.start)
                    > ipaddress.IPv4Address(self.dhcp.end)):
                raise refused("the range's start is after its end", ".dhcp.end")
        return self

    @classmethod
    def parse(cls, raw: Any) -> dict[str, Any]:
        """The stored form: every field, the defaults filled in."""
        try:
            body = cls.model_validate(raw).model_dump()
        except ValidationError as err:
            raise as_invalid(err) from None
        if body["kind"] != NetworkKind.BRIDGE:
            body["dhcp"] = body["dhcp"] or default_dhcp(body["subnet"])
            body["domain"] = body["domain"] or body["name"]
        return body

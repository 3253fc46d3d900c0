"""Guest firewall rules (issue 15), Nova's security group rules: the spec's
`firewall` (a VM's own) and a server group's (shared by its members). Checked here
once, into a stored form the filter XML (virt/nwfilter_xml.py) is built from:
values only (an IPv4 network, whole port numbers), never the caller's text.

A rule: {"direction": "in" | "out", "proto": "tcp" | "udp" | "icmp" | "any",
"port": 22 or "8000-8100" (tcp and udp only), "from": "10.0.0.0/8" (in only),
"to": "192.168.1.0/24" (out only)}. `proto` defaults to any; no port: every
port; no from/to: any address. Semantics as security groups: a VM with any
`in` rule takes inbound traffic only for its rules (and replies, DHCP); the
same for `out`; a direction without rules is open.
"""
from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import WithJsonSchema

from appliance.errors import Invalid
from appliance.model.fields import rule
from appliance.model.values import ipv4_network

MAX_RULES = 64  # a VM's (its group's rules count too: service/vms.py bounds the sum)
DIRECTIONS = ("in", "out")
PROTOCOLS = ("tcp", "udp", "icmp", "any")
PORTED = ("tcp", "udp")
FIELDS = ("direction", "proto", "port", "from", "to")
_RANGE = re.compile(r"([0-9]{1,5})(?:-([0-9]{1,5}))?")


def _port(value: Any, field: str) -> int | str:
    """22, or "8000-8100" (a range, low-high); "22" is 22."""
    example = 'a port 1-65535 or a range "LOW-HIGH", e.g. 22 or "8000-8100"'
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise Invalid(f"must be {example}", field)
    if isinstance(value, int):
        low = high = value
    else:
        found = _RANGE.fullmatch(value)
        if found is None:
            raise Invalid(f"must be {example}", field)
        low = int(found.group(1))
        high = int(found.group(2) or low)
    if not (1 <= low <= 65535 and 1 <= high <= 65535):
        raise Invalid(f"must be {example}", field)
    if low > high:
        raise Invalid("the range's low port is above its high one", field)
    return low if low == high else f"{low}-{high}"


def _network(value: Any, field: str) -> str:
    """An IPv4 network, ADDRESS/PREFIX (an address alone is a /32), host bits clear."""
    return str(ipv4_network(value, field, "an IPv4 address or network ADDRESS/PREFIX, e.g. "
                                   "10.0.0.0/8", prefix=False))


def validate_rule(raw: Any, field: str) -> dict[str, Any]:
    """One rule in its stored form: direction, proto, and port/from/to when given."""
    if not isinstance(raw, dict):
        raise Invalid('must be an object such as {"direction": "in", "proto": "tcp", '
                      '"port": 22}', field)
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise Invalid(f"unknown field; known fields are {', '.join(FIELDS)}",
                      f"{field}.{unknown[0]}")
    direction = raw.get("direction")
    if direction not in DIRECTIONS:
        raise Invalid("must be in or out", f"{field}.direction")
    proto = raw.get("proto", "any")
    if proto is None:
        proto = "any"
    if proto not in PROTOCOLS:
        raise Invalid(f"must be one of {', '.join(PROTOCOLS)}", f"{field}.proto")
    out: dict[str, Any] = {"direction": direction, "proto": proto}
    if raw.get("port") is not None:
        if proto not in PORTED:
            raise Invalid(f"a port needs proto tcp or udp (this rule's is {proto})",
                          f"{field}.port")
        out["port"] = _port(raw["port"], f"{field}.port")
    peer, other = ("from", "to") if direction == "in" else ("to", "from")
    if raw.get(other) is not None:
        raise Invalid(f"an {direction} rule names its peer with {peer!r}, not {other!r}",
                      f"{field}.{other}")
    if raw.get(peer) is not None:
        out[peer] = _network(raw[peer], f"{field}.{peer}")
    return out


def validate_rules(value: Any, field: str = "firewall") -> list[dict[str, Any]]:
    """The rules' stored form (each once, in the order given), or Invalid naming the field."""
    if not isinstance(value, list):
        raise Invalid("must be a list of rules", field)
    if len(value) > MAX_RULES:
        raise Invalid(f"at most {MAX_RULES} rules", field)
    rules: list[dict[str, Any]] = []
    for i, raw in enumerate(value):
        checked = validate_rule(raw, f"{field}[{i}]")
        if checked not in rules:
            rules.append(checked)
    return rules


def port_range(port: int | str) -> tuple[int, int]:
    """A stored port as (low, high)."""
    if isinstance(port, int):
        return port, port
    low, _, high = port.partition("-")
    return int(low), int(high)


_RULE_SCHEMA = {
    "type": "object",
    "required": ["direction"],
    "additionalProperties": False,
    "properties": {
        "direction": {"enum": list(DIRECTIONS), "description": "in: to the guest; out: from it"},
        "proto": {"enum": list(PROTOCOLS), "default": "any"},
        "port": {"oneOf": [{"type": "integer", "minimum": 1, "maximum": 65535},
                           {"type": "string", "pattern": r"^[0-9]{1,5}(-[0-9]{1,5})?$"}],
                 "description": "tcp, udp: a port or a range LOW-HIGH; absent: every port"},
        "from": {"type": "string", "description": "in: the sources allowed (IPv4 network)"},
        "to": {"type": "string", "description": "out: the destinations allowed (IPv4 network)"},
    },
}
SCHEMA = {
    "type": "array", "maxItems": MAX_RULES, "items": _RULE_SCHEMA,
    "description": ("firewall rules (security group rules), enforced by libvirt's nwfilter "
                    "on NICs on libvirt networks; a direction with rules is default-deny")}

Rules = Annotated[list[dict[str, Any]], rule(lambda v, f: validate_rules(v, "")),
                  WithJsonSchema(SCHEMA)]

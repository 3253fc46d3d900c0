"""Rules for single values, with the message a refusal gives.

Each rule takes the value and the field to name, and returns the normalised
value or raises `Invalid(reason, field)`. The spec model (spec.py) builds its
field types on them; the service calls them directly where one value is
written on its own (`echo 1G > vms/NAME/memory`, a host's labels). The
patterns are matched whole (re.fullmatch): `$` would let a trailing newline in.
"""
from __future__ import annotations

import ipaddress
import json
import re
from typing import Any

from appliance.errors import Invalid
from appliance.jsonio import depth_exceeds, shown
from appliance.model.defaults import (
    MAX_CLOUD_INIT_DEPTH,
    MAX_CLOUD_INIT_PART,
    MAX_CPUS,
    MAX_LABELS,
    MAX_USER_DATA,
)

DNS_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
LABEL_KEY = r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?"
LABEL_VALUE = r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?"
LIBVIRT_NETWORK_NAME = r"[A-Za-z0-9_.-]{1,64}"
MAC = r"([0-9a-f]{2}:){5}[0-9a-f]{2}"
# The libvirt names of the appliance's own networks (model/networks.py): PREFIX + PROJECT.NAME.
APPLIANCE_NETWORK_PREFIX = "vmapp."
_DNS_LABEL = re.compile(DNS_LABEL)
_LABEL_KEY = re.compile(LABEL_KEY)
_LABEL_VALUE = re.compile(LABEL_VALUE)
_LIBVIRT_NETWORK_NAME = re.compile(LIBVIRT_NETWORK_NAME)
_MAC = re.compile(MAC)
_SIZE = re.compile(r"\s*(\d{1,20})\s*([KMGT])?(I?B)?\s*", re.IGNORECASE)
_CPUS_TEXT = re.compile(r"[0-9]{1,9}")
_UNIT_MIB = {None: 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


def anchored(pattern: str) -> str:
    """A pattern for JSON Schema (ECMA-262 searches; anchored, it matches whole)."""
    return f"^(?:{pattern})$"


def validate_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
        raise Invalid(
            "must be a DNS label: 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit",
            field,
        )
    return value


# Names a VM may not take: they are routes beside /v1/vms/NAME (POST /v1/vms/adopt),
# so a VM of that name could be reached only through the mount.
RESERVED_VM_NAMES = frozenset({"adopt"})


def validate_vm_name(value: Any, field: str = "name") -> str:
    name = validate_name(value, field)
    if name in RESERVED_VM_NAMES:
        raise Invalid(f"{name!r} is reserved (the route /v1/vms/{name}); choose another name",
                      field)
    return name


def validate_image(value: Any, field: str = "image") -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("required: the name of an image", field)
    return validate_name(value, field)


def parse_size_mib(value: Any, field: str, minimum: int, maximum: int) -> int:
    """An integer is MiB; a string may carry a unit: 512M, 2G, 1GiB, 1048576K."""
    if isinstance(value, bool):
        raise Invalid("must be a size such as 512, 512M or 2G", field)
    if isinstance(value, int):
        mib = value
    elif isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if not match:
            raise Invalid(f"{shown(value.strip())} is not a size such as 512, 512M or 2G", field)
        number, unit = int(match.group(1)), match.group(2)
        scaled = number * _UNIT_MIB[unit.upper() if unit else None]
        if scaled != int(scaled):
            raise Invalid("must be a whole number of MiB", field)
        mib = int(scaled)
    else:
        raise Invalid("must be a size such as 512, 512M or 2G", field)
    if not minimum <= mib <= maximum:
        raise Invalid(f"must be between {minimum} and {maximum} MiB", field)
    return mib


def parse_cpus(value: Any, field: str = "cpus") -> int:
    # ASCII digits only, and few: "²".isdigit() is True but int("²") a ValueError, as is
    # int() of more than 4,300 digits (each was a 500, EIO in the mount).
    if isinstance(value, str) and _CPUS_TEXT.fullmatch(value.strip()):
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("must be a whole number", field)
    if not 1 <= value <= MAX_CPUS:
        raise Invalid(f"must be between 1 and {MAX_CPUS}", field)
    return value


def validate_labels(value: Any, field: str = "labels") -> dict[str, str]:
    if not isinstance(value, dict):
        raise Invalid("must be an object of string keys and values", field)
    if len(value) > MAX_LABELS:
        raise Invalid(f"at most {MAX_LABELS} labels", field)
    for key, item in value.items():
        if not isinstance(key, str) or not _LABEL_KEY.fullmatch(key):
            raise Invalid(f"{shown(key)} is not a valid label key", field)
        if not isinstance(item, str) or not _LABEL_VALUE.fullmatch(item):
            raise Invalid(f"value of {shown(key)} is not a valid label value", f"{field}.{key}")
    return dict(value)


def validate_mac(value: Any, field: str = "network.mac") -> str:
    if not isinstance(value, str) or not _MAC.fullmatch(value.lower()):
        raise Invalid("must be a MAC address like 52:54:00:12:34:56", field)
    if int(value[:2], 16) & 1:
        raise Invalid("must be a unicast MAC address", field)
    return value.lower()


def validate_forward_address(value: Any, field: str) -> str:
    """Where a user-mode port forward listens on the host."""
    try:
        parsed = ipaddress.ip_address(value)
    except (ValueError, TypeError):
        raise Invalid("must be an IP address", field) from None
    if not parsed.is_loopback:
        # User-mode forwards listen on the host: keep them off the
        # network unless a bridge or libvirt network is chosen instead.
        raise Invalid("must be a loopback address", field)
    if parsed.version == 6:
        # QEMU 7.2's hostfwd answers "Bad host address" for [::1].
        raise Invalid("IPv6 is not supported: QEMU's user-mode forwards bind IPv4 only; "
                      "use 127.0.0.1", field)
    return str(parsed)


def validate_libvirt_network_name(value: Any, field: str = "network.name") -> str:
    if not isinstance(value, str) or not _LIBVIRT_NETWORK_NAME.fullmatch(value):
        raise Invalid("must be a libvirt network name", field)
    if value.startswith(APPLIANCE_NETWORK_PREFIX):
        # Another project's network would be reached by its libvirt name: name yours.
        raise Invalid(f"names starting with {APPLIANCE_NETWORK_PREFIX!r} are the appliance's "
                      "own libvirt networks: name the network as /v1/networks shows it", field)
    return value


def validate_ipv4(value: Any, field: str = "network.ip") -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except (ValueError, TypeError):
        raise Invalid("must be an IPv4 address", field) from None


_IPV4_NETWORK = re.compile(r"[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?")


def ipv4_network(value: Any, field: str, example: str,
                 prefix: bool = True) -> ipaddress.IPv4Network:
    """An IPv4 network written ADDRESS/PREFIX (`prefix` False: or an address alone, a
    /32) with its host bits clear (the firewall's peers, a network's subnet); else
    Invalid "must be EXAMPLE", or "host bits set" naming the network meant."""
    if not isinstance(value, str) or not _IPV4_NETWORK.fullmatch(value) \
            or (prefix and "/" not in value):
        raise Invalid(f"must be {example}", field)
    try:
        net = ipaddress.IPv4Network(value, strict=False)
    except ValueError:
        raise Invalid(f"must be {example}", field) from None
    if str(net.network_address) != value.partition("/")[0]:
        raise Invalid(f"host bits set: the network is {net}", field)
    return net


def validate_user_data(value: Any, field: str = "cloud_init.user_data") -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string (#cloud-config or a #! script)", field)
    if len(value.encode()) > MAX_USER_DATA:
        raise Invalid(f"must be at most {MAX_USER_DATA // 1024} KiB", field)
    return value


def validate_cloud_init_part(value: Any, field: str) -> dict[str, Any] | str:
    """meta_data or network_config: an object or a YAML string, bounded in depth and size."""
    if not isinstance(value, (dict, str)):
        raise Invalid("must be an object or a YAML string", field)
    if depth_exceeds(value, MAX_CLOUD_INIT_DEPTH):
        raise Invalid(f"must nest at most {MAX_CLOUD_INIT_DEPTH} levels", field)
    size = len(value.encode()) if isinstance(value, str) else len(json.dumps(value).encode())
    if size > MAX_CLOUD_INIT_PART:
        raise Invalid(f"must be at most {MAX_CLOUD_INIT_PART // 1024} KiB", field)
    return value


def validate_console_text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value or "\n" in value or len(value) > 256:
        raise Invalid("must be one line of text (1-256 characters)", field)
    return value

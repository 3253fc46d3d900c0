"""VM specs: parsing and validation, with no I/O.

A spec arrives as JSON from REST, as a file written in the mount, or as one
value (`echo 1G > memory`). Everything is checked here, once, and a refusal
names the field and the reason. The normalised form (plain dict, memory in
MiB, defaults filled in) is what the store keeps.
"""
from __future__ import annotations

import copy
import ipaddress
import json
import re
from typing import Any

from appliance.errors import Invalid
from appliance.jsonio import depth_exceeds, shown

RUN_STRATEGIES = ("Always", "RerunOnFailure", "Manual", "Halted")
NETWORK_TYPES = ("none", "user", "network")
PROTOCOLS = ("tcp", "udp")

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
_LABEL_KEY = re.compile(r"([a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([A-Za-z0-9_.-]{0,61}[A-Za-z0-9])?)?")
_SIZE = re.compile(r"\s*(\d{1,20})\s*([KMGT])?(I?B)?\s*", re.IGNORECASE)
_MAC = re.compile(r"([0-9a-f]{2}:){5}[0-9a-f]{2}")
_UNIT_MIB = {None: 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}

MIN_MEMORY_MIB = 32
MAX_MEMORY_MIB = 4 * 1024 * 1024
MAX_CPUS = 256
MAX_DISK_MIB = 64 * 1024 * 1024

# The fields a spec may carry, with their defaults. `name` and `image` have none.
DEFAULTS: dict[str, Any] = {
    "cpus": 1,
    "memory": 128,
    "disks": [],
    "network": {"type": "user", "port_forwards": []},
    "cloud_init": None,
    "run_strategy": "Always",
    "labels": {},
    "node_selector": {},  # host labels the VM must land on (KubeVirt's nodeSelector)
    "group": None,  # a server group (POST /v1/groups): affinity or anti-affinity
    "termination_grace_period": 30,
    "readiness_probe": None,
    "liveness_probe": None,
    # Keep the vCPUs and memory claimed on the host while stopped (Nova's rule);
    # by default a stopped VM claims only its disks, and the rest when it starts.
    "reserve_when_stopped": False,
}
FIELDS = ("name", "image", *DEFAULTS)
# Fields a running VM may not change without a restart are still accepted; the
# status then carries restart_required. These never change after creation:
IMMUTABLE = ("image",)


def validate_name(value: Any, field: str = "name") -> str:
    if not isinstance(value, str) or not _DNS_LABEL.fullmatch(value):
        raise Invalid(
            "must be a DNS label: 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit",
            field,
        )
    return value


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
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, bool) or not isinstance(value, int):
        raise Invalid("must be a whole number", field)
    if not 1 <= value <= MAX_CPUS:
        raise Invalid(f"must be between 1 and {MAX_CPUS}", field)
    return value


def _port(value: Any, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 65535:
        raise Invalid("must be a port number from 1 to 65535", field)
    return value


def _network(value: Any) -> dict:
    if isinstance(value, str):  # shorthand: "none", "user", "network:NAME"
        kind, _, name = value.partition(":")
        value = {"type": kind, **({"name": name} if name else {})}
    if not isinstance(value, dict):
        raise Invalid("must be an object with a 'type'", "network")
    unknown = set(value) - {"type", "port_forwards", "name", "mac", "ip"}
    if unknown:
        raise Invalid(f"unknown field {shown(sorted(unknown)[0])}", "network")
    kind = value.get("type", "user")
    if kind not in NETWORK_TYPES:
        raise Invalid(f"must be one of {', '.join(NETWORK_TYPES)}", "network.type")
    out: dict[str, Any] = {"type": kind}
    if kind == "none":
        return out
    mac = value.get("mac")
    if mac is not None:
        if not isinstance(mac, str) or not _MAC.fullmatch(mac.lower()):
            raise Invalid("must be a MAC address like 52:54:00:12:34:56", "network.mac")
        if int(mac[:2], 16) & 1:
            raise Invalid("must be a unicast MAC address", "network.mac")
        out["mac"] = mac.lower()
    if kind == "user":
        forwards = value.get("port_forwards", [])
        if not isinstance(forwards, list):
            raise Invalid("must be a list", "network.port_forwards")
        seen = set()
        out["port_forwards"] = []
        for i, fwd in enumerate(forwards):
            where = f"network.port_forwards[{i}]"
            if not isinstance(fwd, dict):
                raise Invalid("must be an object", where)
            unknown = set(fwd) - {"host_port", "guest_port", "protocol", "host_address"}
            if unknown:
                raise Invalid(f"unknown field {shown(sorted(unknown)[0])}", where)
            protocol = fwd.get("protocol", "tcp")
            if protocol not in PROTOCOLS:
                raise Invalid("must be tcp or udp", f"{where}.protocol")
            address = fwd.get("host_address", "127.0.0.1")
            try:
                parsed = ipaddress.ip_address(address)
            except (ValueError, TypeError):
                raise Invalid("must be an IP address", f"{where}.host_address") from None
            if not parsed.is_loopback:
                # User-mode forwards listen on the host: keep them off the
                # network unless a bridge or libvirt network is chosen instead.
                raise Invalid("must be a loopback address", f"{where}.host_address")
            entry = {
                "host_port": _port(fwd.get("host_port"), f"{where}.host_port"),
                "guest_port": _port(fwd.get("guest_port"), f"{where}.guest_port"),
                "protocol": protocol,
                "host_address": str(parsed),
            }
            key = (entry["protocol"], entry["host_address"], entry["host_port"])
            if key in seen:
                raise Invalid("host port used twice", f"{where}.host_port")
            seen.add(key)
            out["port_forwards"].append(entry)
        if "ip" in value:
            raise Invalid("a fixed IP needs a libvirt network (type 'network')", "network.ip")
    else:
        name = value.get("name", "default")
        if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", name):
            raise Invalid("must be a libvirt network name", "network.name")
        out["name"] = name
        if value.get("ip") is not None:
            try:
                out["ip"] = str(ipaddress.IPv4Address(value["ip"]))
            except (ValueError, TypeError):
                raise Invalid("must be an IPv4 address", "network.ip") from None
        if value.get("port_forwards"):
            raise Invalid("port forwards need user-mode networking", "network.port_forwards")
    return out


def _disks(value: Any) -> list[dict]:
    if not isinstance(value, list):
        raise Invalid("must be a list", "disks")
    if len(value) > 16:
        raise Invalid("at most 16 extra disks", "disks")
    out, names = [], set()
    for i, disk in enumerate(value):
        where = f"disks[{i}]"
        if not isinstance(disk, dict):
            raise Invalid("must be an object with name and size", where)
        unknown = set(disk) - {"name", "size"}
        if unknown:
            raise Invalid(f"unknown field {shown(sorted(unknown)[0])}", where)
        name = validate_name(disk.get("name"), f"{where}.name")
        if name in names or name in ("root", "cidata"):
            raise Invalid("name already used", f"{where}.name")
        names.add(name)
        out.append({"name": name, "size": parse_size_mib(disk.get("size"), f"{where}.size", 1, MAX_DISK_MIB)})
    return out


# Cloud-init parts, bounded (issue 9, finding 6: 30 MB of meta_data was stored
# and returned by every GET /v1/vms). user_data: 64 KiB, OpenStack Nova's limit
# (EC2 allows 16 KiB); meta_data and network_config: 16 KiB each as JSON.
MAX_USER_DATA = 64 * 1024
MAX_CLOUD_INIT_PART = 16 * 1024
MAX_CLOUD_INIT_DEPTH = 16


def _cloud_init(value: Any) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("must be an object with user_data, meta_data, network_config", "cloud_init")
    unknown = set(value) - {"user_data", "meta_data", "network_config"}
    if unknown:
        raise Invalid(f"unknown field {shown(sorted(unknown)[0])}", "cloud_init")
    out: dict[str, Any] = {}
    user_data = value.get("user_data")
    if user_data is not None:
        if not isinstance(user_data, str):
            raise Invalid("must be a string (#cloud-config or a #! script)", "cloud_init.user_data")
        if len(user_data.encode()) > MAX_USER_DATA:
            raise Invalid(f"must be at most {MAX_USER_DATA // 1024} KiB", "cloud_init.user_data")
        out["user_data"] = user_data
    for key in ("meta_data", "network_config"):
        item = value.get(key)
        if item is None:
            continue
        if not isinstance(item, (dict, str)):
            raise Invalid("must be an object or a YAML string", f"cloud_init.{key}")
        if depth_exceeds(item, MAX_CLOUD_INIT_DEPTH):
            raise Invalid(f"must nest at most {MAX_CLOUD_INIT_DEPTH} levels", f"cloud_init.{key}")
        size = len(item.encode()) if isinstance(item, str) else len(json.dumps(item).encode())
        if size > MAX_CLOUD_INIT_PART:
            raise Invalid(f"must be at most {MAX_CLOUD_INIT_PART // 1024} KiB", f"cloud_init.{key}")
        out[key] = item
    return out


MAX_LABELS = 64


def _labels(value: Any, field: str = "labels") -> dict[str, str]:
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


def validate_labels(value: Any, field: str = "labels") -> dict[str, str]:
    return _labels(value, field)


PROBE_KINDS = ("tcp_socket", "console", "guest_agent_ping")
PROBE_TIMINGS = {  # KubeVirt's (and Kubernetes') defaults and names, in snake case
    "initial_delay_seconds": (0, 0, 3600),
    "period_seconds": (10, 1, 3600),
    "timeout_seconds": (1, 1, 600),
    "failure_threshold": (3, 1, 100),
    "success_threshold": (1, 1, 100),
}


def _probe(value: Any, field: str, network: dict) -> dict | None:
    """A readiness or liveness probe: exactly one check, and its timings."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise Invalid("must be an object with one of " + ", ".join(PROBE_KINDS), field)
    unknown = set(value) - set(PROBE_KINDS) - set(PROBE_TIMINGS)
    if unknown:
        raise Invalid(f"unknown field {shown(sorted(unknown)[0])}", field)
    kinds = [k for k in PROBE_KINDS if k in value]
    if len(kinds) != 1:
        raise Invalid("needs exactly one of " + ", ".join(PROBE_KINDS), field)
    kind = kinds[0]
    out: dict[str, Any] = {}
    check = value[kind]
    if not isinstance(check, dict):
        raise Invalid("must be an object", f"{field}.{kind}")
    if kind == "tcp_socket":
        port = _port(check.get("port"), f"{field}.tcp_socket.port")
        forwards = [f for f in network.get("port_forwards", []) if f["guest_port"] == port and f["protocol"] == "tcp"]
        if not forwards:
            # The appliance reaches guests only through forwards on 127.0.0.1.
            raise Invalid(f"needs a tcp port forward to guest port {port}", f"{field}.tcp_socket.port")
        out[kind] = {"port": port}
    elif kind == "console":
        text = check.get("contains")
        if not isinstance(text, str) or not text or "\n" in text or len(text) > 256:
            raise Invalid("must be one line of text (1-256 characters)", f"{field}.console.contains")
        out[kind] = {"contains": text}
    else:
        if check:
            raise Invalid("takes no fields", f"{field}.guest_agent_ping")
        out[kind] = {}
    for name, (default, low, high) in PROBE_TIMINGS.items():
        item = value.get(name, default)
        if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
            raise Invalid(f"must be a whole number from {low} to {high}", f"{field}.{name}")
        out[name] = item
    if out["timeout_seconds"] > out["period_seconds"]:
        raise Invalid("must not exceed period_seconds", f"{field}.timeout_seconds")
    return out


def validate(raw: Any) -> dict:
    """Return the normalised spec, or raise Invalid naming the first bad field."""
    if not isinstance(raw, dict):
        raise Invalid("the spec must be a JSON object", None)
    unknown = set(raw) - set(FIELDS)
    if unknown:
        field = sorted(unknown)[0]
        raise Invalid(f"unknown field; known fields are {', '.join(FIELDS)}", field)
    spec = copy.deepcopy(DEFAULTS)
    spec.update({k: v for k, v in raw.items() if v is not None or k in ("cloud_init", "readiness_probe",
                                                                          "liveness_probe")})
    out = {
        "name": validate_name(spec.get("name")),
        "image": spec.get("image"),
        "cpus": parse_cpus(spec["cpus"]),
        "memory": parse_size_mib(spec["memory"], "memory", MIN_MEMORY_MIB, MAX_MEMORY_MIB),
        "disks": _disks(spec["disks"]),
        "network": _network(spec["network"]),
        "cloud_init": _cloud_init(spec["cloud_init"]),
        "run_strategy": spec["run_strategy"],
        "labels": _labels(spec["labels"]),
        "node_selector": _labels(spec["node_selector"], "node_selector"),
        "group": None if spec["group"] is None else validate_name(spec["group"], "group"),
        "termination_grace_period": spec["termination_grace_period"],
        "reserve_when_stopped": spec["reserve_when_stopped"],
    }
    out["readiness_probe"] = _probe(spec["readiness_probe"], "readiness_probe", out["network"])
    out["liveness_probe"] = _probe(spec["liveness_probe"], "liveness_probe", out["network"])
    if not isinstance(out["image"], str) or not out["image"]:
        raise Invalid("required: the name of an image", "image")
    validate_name(out["image"], "image")
    if out["run_strategy"] not in RUN_STRATEGIES:
        raise Invalid(f"must be one of {', '.join(RUN_STRATEGIES)}", "run_strategy")
    grace = out["termination_grace_period"]
    if isinstance(grace, bool) or not isinstance(grace, int) or not 0 <= grace <= 3600:
        raise Invalid("must be a whole number of seconds from 0 to 3600", "termination_grace_period")
    if not isinstance(out["reserve_when_stopped"], bool):
        raise Invalid("must be true or false", "reserve_when_stopped")
    return out

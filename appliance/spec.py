"""VM specs: parsing and validation, with no I/O.

A spec arrives as JSON from REST, as a file written in the mount, or as one
value (`echo 1G > memory`). Everything is checked once, by the model in
appliance/model/spec.py (pydantic), and a refusal names the field and the
reason. The normalised form (plain dict, memory in MiB, defaults filled in) is
what the store keeps. This module is the facade the service, the mount and
the tests use; the rules and bounds live in appliance/model/.
"""
from __future__ import annotations

from typing import Any

from appliance.model.defaults import (
    MAX_CLOUD_INIT_DEPTH,
    MAX_CLOUD_INIT_PART,
    MAX_CPUS,
    MAX_DISK_MIB,
    MAX_LABELS,
    MAX_MEMORY_MIB,
    MAX_USER_DATA,
    MIN_MEMORY_MIB,
    PROBE_TIMINGS,
)
from appliance.model.spec import FIELDS, IMMUTABLE
from appliance.model.spec import validate as _validate
from appliance.model.states import NETWORK_TYPES, OUTBOUND, PROBE_KINDS, PROTOCOLS, RUN_STRATEGIES
from appliance.model.values import (
    parse_cpus,
    parse_size_mib,
    validate_labels,
    validate_name,
    validate_vm_name,
)

__all__ = [
    "DEFAULTS",
    "FIELDS",
    "IMMUTABLE",
    "MAX_CLOUD_INIT_DEPTH",
    "MAX_CLOUD_INIT_PART",
    "MAX_CPUS",
    "MAX_DISK_MIB",
    "MAX_LABELS",
    "MAX_MEMORY_MIB",
    "MAX_USER_DATA",
    "MIN_MEMORY_MIB",
    "NETWORK_TYPES",
    "OUTBOUND",
    "PROBE_KINDS",
    "PROBE_TIMINGS",
    "PROTOCOLS",
    "RUN_STRATEGIES",
    "parse_cpus",
    "parse_size_mib",
    "validate",
    "validate_labels",
    "validate_name",
    "validate_vm_name",
]


def validate(raw: Any) -> dict:
    """Return the normalised spec, or raise Invalid naming the first bad field."""
    return _validate(raw)


# The fields a spec may carry, with their defaults as stored. `name` and `image` have none.
DEFAULTS: dict[str, Any] = {
    key: value
    for key, value in validate({"name": "x", "image": "x"}).items()
    if key not in ("name", "image")
}

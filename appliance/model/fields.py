"""The field types of the VM spec: each says how a value is checked, what a
refusal says, and how it shows in the JSON Schema (spec.py puts them together).

A type either uses pydantic's own check (whole numbers, booleans, enums) and
says what it wants when that fails (`says`), or runs a rule of values.py
(`rule`), whose Invalid becomes a refusal at the field's path. A refusal is a
pydantic error of type REFUSED whose context carries the reason and, for a
check of a whole list or object, where below the field the fault is (`at`).
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from pydantic import (
    Field,
    PlainValidator,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WithJsonSchema,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from appliance.errors import Invalid
from appliance.model import values
from appliance.model.defaults import (
    MAX_CPUS,
    MAX_DISK_MIB,
    MAX_LABELS,
    MAX_MEMORY_MIB,
    MAX_TERMINATION_GRACE_PERIOD,
    MAX_USER_DATA,
    MIN_MEMORY_MIB,
    PROBE_TIMINGS,
)

T = TypeVar("T")
REFUSED = "refused"  # the pydantic error type of our own refusals


def refused(reason: str, at: str = "") -> PydanticCustomError:
    """A refusal with its reason; `at` continues the path below the value checked."""
    return PydanticCustomError(REFUSED, "{reason}", {"reason": reason, "at": at})


def rule(check: Callable[[Any, str], T]) -> PlainValidator:
    """A field type's validation by a rule of values.py (its Invalid becomes a refusal)."""
    def run(value: Any) -> T:
        try:
            return check(value, "")
        except Invalid as err:
            raise refused(err.reason, err.field or "") from None
    return PlainValidator(run)


def says(reason: str) -> WrapValidator:
    """The reason given when pydantic's own check of the type or bounds fails."""
    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise refused(reason) from None
    return WrapValidator(check)


def whole(low: int, high: int) -> Any:
    return Field(strict=True, ge=low, le=high)  # strict: no bools, floats or strings


def timing(name: str) -> Any:
    _default, low, high = PROBE_TIMINGS[name]
    return Field(strict=True, ge=low, le=high)


def timing_says(name: str) -> WrapValidator:
    _default, low, high = PROBE_TIMINGS[name]
    return says(f"must be a whole number from {low} to {high}")


def must_be_list(value: Any) -> Any:
    if not isinstance(value, list):
        raise refused("must be a list")
    return value


def _size_schema(low: int, high: int) -> WithJsonSchema:
    return WithJsonSchema(
        {
            "oneOf": [
                {"type": "integer", "minimum": low, "maximum": high},
                {"type": "string", "pattern": r"^\s*\d{1,20}\s*([KMGTkmgt])?([iI]?[bB])?\s*$"},
            ],
            "description": "MiB, or a string with a unit: 512M, 2G",
        }
    )


def stored_as_value(member: Any) -> Any:
    """An enum default that is validated like a given value, so that the stored
    form holds the plain string (use_enum_values) either way."""
    return Field(member, validate_default=True)


def one_of(values_: tuple[str, ...]) -> str:
    return f"must be one of {', '.join(values_)}"


# -- field types ---------------------------------------------------------------------------
DnsName = Annotated[
    str,
    rule(values.validate_name),
    WithJsonSchema({"type": "string", "pattern": values.anchored(values.DNS_LABEL)}),
]
ImageName = Annotated[
    str,
    rule(values.validate_image),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": values.anchored(values.DNS_LABEL),
            "description": "an image (GET /v1/images)",
        }
    ),
]
Cpus = Annotated[int, rule(values.parse_cpus),
                 WithJsonSchema({"type": "integer", "minimum": 1, "maximum": MAX_CPUS})]
Memory = Annotated[
    int,
    rule(lambda v, f: values.parse_size_mib(v, f, MIN_MEMORY_MIB, MAX_MEMORY_MIB)),
    _size_schema(MIN_MEMORY_MIB, MAX_MEMORY_MIB),
]
DiskSize = Annotated[int, rule(lambda v, f: values.parse_size_mib(v, f, 1, MAX_DISK_MIB)),
                     _size_schema(1, MAX_DISK_MIB)]
Labels = Annotated[
    dict[str, str],
    rule(values.validate_labels),
    WithJsonSchema(
        {
            "type": "object",
            "maxProperties": MAX_LABELS,
            "additionalProperties": {
                "type": "string",
                "pattern": values.anchored(values.LABEL_VALUE),
            },
        }
    ),
]
Port = Annotated[int, whole(1, 65535), says("must be a port number from 1 to 65535")]
Grace = Annotated[
    int,
    whole(0, MAX_TERMINATION_GRACE_PERIOD),
    says(f"must be a whole number of seconds from 0 to {MAX_TERMINATION_GRACE_PERIOD}"),
]
Flag = Annotated[bool, Field(strict=True), says("must be true or false")]
Mac = Annotated[str, rule(values.validate_mac),
                WithJsonSchema({"type": "string", "pattern": "^([0-9a-fA-F]{2}:){5}[0-9a-fA-F]{2}$",
                                "description": "unicast, like 52:54:00:12:34:56"})]
ForwardAddress = Annotated[
    str,
    rule(values.validate_forward_address),
    WithJsonSchema({"type": "string", "description": "a loopback IPv4 address"}),
]
LibvirtNetworkName = Annotated[
    str,
    rule(values.validate_libvirt_network_name),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": values.anchored(values.LIBVIRT_NETWORK_NAME),
            "description": "type network: one of the project's networks (/v1/networks), "
                           "else a libvirt network of the host's that the appliance does "
                           "not manage",
        }
    ),
]
IPv4 = Annotated[
    str,
    rule(values.validate_ipv4),
    WithJsonSchema(
        {"type": "string", "format": "ipv4",
         "description": "fixed IPv4 (type network): on one of the project's networks, a "
                        "guest address of its subnet no other VM there has"}
    ),
]
UserData = Annotated[
    str,
    rule(values.validate_user_data),
    WithJsonSchema(
        {
            "type": "string",
            "description": f"#cloud-config or a #! script, at most {MAX_USER_DATA} bytes",
        }
    ),
]
CloudInitPart = Annotated[dict[str, Any] | str, rule(values.validate_cloud_init_part),
                          WithJsonSchema({"oneOf": [{"type": "object"}, {"type": "string"}]})]
ConsoleText = Annotated[str, rule(values.validate_console_text),
                        WithJsonSchema({"type": "string", "minLength": 1, "maxLength": 256})]


def _no_fields(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise Invalid("must be an object", field)
    if value:
        raise Invalid("takes no fields", field)
    return {}


NoFields = Annotated[dict[str, Any], rule(_no_fields),
                     WithJsonSchema({"type": "object", "maxProperties": 0})]

"""The bodies of the users and tokens API (POST /v1/users, PATCH /v1/users/NAME,
POST /v1/tokens), defined once (pydantic, as the VM spec in spec.py): what
they accept, the refusal each fault gets (Invalid with the field), and the
JSON Schema /v1/openapi.json documents them with (model/schema.py).

What is not the body's to check (a project that exists, the last admin, who
may create a token for whom) is the service's (appliance/service/access.py).
"""
from __future__ import annotations

import re
import unicodedata
from enum import StrEnum
from typing import Annotated, Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, model_validator

from appliance.access.principal import ROLES, Role
from appliance.errors import Invalid
from appliance.model import values
from appliance.model.fields import DnsName, Flag, one_of, refused, rule, says, stored_as_value
from appliance.model.spec import as_invalid

MAX_USER_PROJECTS = 64
MAX_DESCRIPTION = 200
MAX_TOKEN_DAYS = 3650  # ten years: the longest a token may live
_UNIT_SECONDS = {"m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"([1-9][0-9]{0,6})([mhd])")
DURATION_PATTERN = r"^[1-9][0-9]{0,6}[mhd]$"
# Shown in tables and terminals: no control characters (an escape sequence in a
# description would repaint the terminal of whoever lists the tokens).
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Nor format characters (U+202E reverses the rest of the line a terminal shows) or line
# and paragraph separators (U+2028 ends a line for some readers).
_INVISIBLE = frozenset({"Cf", "Zl", "Zp"})


def parse_duration(value: Any, field: str = "expires") -> int:
    """`30d`, `12h`, `90m` as seconds, from one minute to MAX_TOKEN_DAYS days."""
    match = _DURATION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise Invalid("must be a duration such as 90m, 12h or 30d", field)
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_TOKEN_DAYS * 86400:
        raise Invalid(f"must be at most {MAX_TOKEN_DAYS}d", field)
    return seconds


def validate_description(value: Any, field: str = "description") -> str:
    if not isinstance(value, str):
        raise Invalid("must be a string", field)
    if len(value) > MAX_DESCRIPTION:
        raise Invalid(f"must be at most {MAX_DESCRIPTION} characters", field)
    if _CONTROL.search(value) or any(unicodedata.category(c) in _INVISIBLE for c in value):
        raise Invalid("must not contain control characters", field)
    return value


def validate_projects(value: Any, field: str = "projects") -> list[str]:
    """A list of distinct project names, the first the user's default."""
    if not isinstance(value, list) or not value:
        raise Invalid("must be a non-empty list of project names", field)
    if len(value) > MAX_USER_PROJECTS:
        raise Invalid(f"at most {MAX_USER_PROJECTS} projects", field)
    names: list[str] = []
    for index, item in enumerate(value):
        name = values.validate_name(item, f"[{index}]")
        if name in names:
            raise Invalid(f"{name} is named twice", f"[{index}]")
        names.append(name)
    return names


def _duration_text(value: Any, field: str) -> str:
    parse_duration(value, field)
    return str(value)


Duration = Annotated[str, rule(_duration_text),
                     WithJsonSchema({"type": "string", "pattern": DURATION_PATTERN,
                                     "description": f"90m, 12h, 30d (at most {MAX_TOKEN_DAYS}d)"})]
Description = Annotated[str, rule(validate_description),
                        WithJsonSchema({"type": "string", "maxLength": MAX_DESCRIPTION,
                                        "pattern": "^[^\\x00-\\x1f\\x7f-\\x9f]*$"})]
Projects = Annotated[
    list[str], rule(validate_projects),
    WithJsonSchema({"type": "array", "minItems": 1, "maxItems": MAX_USER_PROJECTS,
                    "uniqueItems": True,
                    "items": {"type": "string", "pattern": values.anchored(values.DNS_LABEL)},
                    "description": "the projects the user works in; the first is their default"}),
]
RoleName = Annotated[Role, says(one_of(ROLES))]


class _Body(BaseModel):
    """An object with only the known fields; null is the same as absent."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    required: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise refused("the body must be a JSON object")
        known = cls.model_fields
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise refused(f"unknown field; known fields are {', '.join(known)}", "." + unknown[0])
        for name in cls.required:
            if data.get(name) is None:
                raise refused("required", "." + name)
        return {key: value for key, value in data.items() if value is not None}

    @classmethod
    def parse(cls, raw: Any) -> dict[str, Any]:
        """The body's given fields, normalised, or Invalid naming the first bad one."""
        try:
            return cls.model_validate(raw).model_dump(exclude_unset=True)
        except ValidationError as err:
            raise as_invalid(err) from None


class UserCreate(_Body):
    """A user: a name, a role, the projects they work in."""

    required = ("name",)
    name: DnsName
    role: RoleName = stored_as_value(Role.VIEWER)
    projects: Projects = Field(default_factory=lambda: ["default"])

    @classmethod
    def parse(cls, raw: Any) -> dict[str, Any]:
        try:
            return cls.model_validate(raw).model_dump()  # with the defaults
        except ValidationError as err:
            raise as_invalid(err) from None


class UserUpdate(_Body):
    """What changes (merge): the role, the projects, disabled (their tokens stop working)."""

    role: RoleName | None = None
    projects: Projects | None = None
    disabled: Flag | None = None


class TokenCreate(_Body):
    """A token for oneself (an admin: for anyone)."""

    user: DnsName | None = Field(None, description="whose (default: the caller's own)")
    expires: Duration | None = Field(None, description="lifetime; absent: never expires")
    description: Description = ""


class ConsoleKind(StrEnum):
    """The consoles a ticket opens (the WebSocket routes /v1/vms/NAME/console and /vnc)."""

    CONSOLE = "console"  # the serial console
    VNC = "vnc"


CONSOLE_KINDS = tuple(kind.value for kind in ConsoleKind)


class TicketCreate(_Body):
    """A one-use console ticket for a VM of the caller's project (POST /v1/tickets)."""

    required = ("vm", "kind")
    vm: DnsName = Field(description="the VM's name")
    kind: Annotated[ConsoleKind, says(one_of(CONSOLE_KINDS))] = Field(
        description="console (serial) or vnc")

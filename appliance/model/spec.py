"""The VM spec, defined once (pydantic v2): fields, defaults, bounds, the
messages a refusal gives with the field's path, and the JSON Schema the
OpenAPI document is built from (appliance/model/schema.py).

Why pydantic rather than msgspec: its `model_json_schema()` gives the JSON
Schema of the same classes that validate (msgspec's has no hook to carry our
own refusal rules into the schema), and its errors carry the location of the
fault (`('network', 'port_forwards', 0, 'host_port')`), from which the
`network.port_forwards[0].host_port` of an answer is made. Validation is a
few tens of microseconds either way; a spec is validated once per write.

A refusal is `Invalid(reason, field)`, with the reasons the appliance always
gave: the field types of fields.py check single values (with the rules of
values.py, which the service also calls for one value); the classes here check
objects (unknown and missing fields, what depends on another field). Only the
first fault is reported: at the top level in the order the fields were always
checked (CHECK_ORDER: `image` last, so a spec without an image still names its
other faults), inside an object in the order its fields are declared.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)

from appliance.errors import Invalid
from appliance.jsonio import shown
from appliance.model.defaults import (
    DEFAULT_CPUS,
    DEFAULT_MEMORY_MIB,
    DEFAULT_RUN_STRATEGY,
    MAX_DISKS,
    MAX_PORT_FORWARDS,
    PROBE_TIMINGS,
    TERMINATION_GRACE_PERIOD,
)
from appliance.model.fields import (
    REFUSED,
    CloudInitPart,
    ConsoleText,
    Cpus,
    DiskSize,
    DnsName,
    Flag,
    ForwardAddress,
    Grace,
    ImageName,
    IPv4,
    Labels,
    LibvirtNetworkName,
    Mac,
    Memory,
    NoFields,
    Port,
    UserData,
    must_be_list,
    one_of,
    refused,
    says,
    stored_as_value,
    timing,
    timing_says,
)
from appliance.model.states import (
    NETWORK_TYPES,
    OUTBOUND,
    PROBE_KINDS,
    RUN_STRATEGIES,
    NetworkType,
    Outbound,
    Protocol,
    RunStrategy,
)


class _Object(BaseModel):
    """An object of the spec: a non-object, an unknown field or a missing one is
    refused before its fields are checked, with the messages of old."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    not_an_object: ClassVar[str] = "must be an object"
    refuse_unknown: ClassVar[bool] = True
    # Worked out once per class: this check runs for every object of every spec.
    field_names: ClassVar[frozenset[str]] = frozenset()
    required_fields: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        cls.field_names = frozenset(cls.model_fields)
        cls.required_fields = tuple(
            name for name, info in cls.model_fields.items() if info.is_required()
        )

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return data

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        return data

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            data = cls._shorthand(data)
            if not isinstance(data, dict):
                raise refused(cls.not_an_object)
        if cls.refuse_unknown and not cls.field_names.issuperset(data):
            raise refused(f"unknown field {shown(sorted(data.keys() - cls.field_names)[0])}")
        # A missing field is refused as a null one is: by its own rule, with its message.
        for name in cls.required_fields:
            if name not in data:
                data = {**dict.fromkeys(cls.required_fields), **data}
                break
        return cls._prepare(data)


class _LeavesOutUnset(_Object):
    """Unset optional parts are left out of the stored form, as they always were."""

    @model_serializer(mode="wrap")
    def _stored(self, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        return {key: value for key, value in handler(self).items() if value is not None}


class Disk(_Object):
    not_an_object = "must be an object with name and size"
    name: DnsName
    size: DiskSize


def _disks_bounded(value: Any) -> Any:
    must_be_list(value)
    if len(value) > MAX_DISKS:
        raise refused(f"at most {MAX_DISKS} extra disks")
    return value


def _disk_names_unique(disks: list[Disk]) -> list[Disk]:
    names: set[str] = set()
    for i, disk in enumerate(disks):
        if disk.name in names or disk.name in ("root", "cidata"):  # the boot disk and the seed
            raise refused("name already used", f"[{i}].name")
        names.add(disk.name)
    return disks


Disks = Annotated[list[Disk], BeforeValidator(_disks_bounded), Field(max_length=MAX_DISKS),
                  WrapValidator(lambda v, handler: _disk_names_unique(handler(v)))]


class PortForward(_Object):
    host_port: Port
    guest_port: Port
    protocol: Annotated[Protocol, says("must be tcp or udp")] = stored_as_value(Protocol.TCP)
    host_address: ForwardAddress = "127.0.0.1"


def _forwards_unique(forwards: list[PortForward]) -> list[PortForward]:
    seen = set()
    for i, forward in enumerate(forwards):
        key = (forward.protocol, forward.host_address, forward.host_port)
        if key in seen:
            raise refused("host port used twice", f"[{i}].host_port")
        seen.add(key)
    return forwards


def _forwards_bounded(value: Any) -> Any:
    must_be_list(value)
    if len(value) > MAX_PORT_FORWARDS:  # each is a socket QEMU binds on the host, as root
        raise refused(f"at most {MAX_PORT_FORWARDS} port forwards")
    return value


PortForwards = Annotated[
    list[PortForward],
    BeforeValidator(_forwards_bounded),
    Field(max_length=MAX_PORT_FORWARDS),
    WrapValidator(lambda v, handler: _forwards_unique(handler(v))),
]


class Network(_Object):
    """none; user (QEMU user mode: port forwards on the host's loopback, outbound);
    network (a libvirt network: its name, a fixed IP). A field of another type is
    ignored (name in user mode) or refused (port forwards, outbound, ip)."""

    not_an_object = "must be an object with a 'type'"
    type: NetworkType = NetworkType.USER  # always given by _prepare
    mac: Mac | None = None
    name: LibvirtNetworkName | None = None
    port_forwards: PortForwards = Field(default_factory=list)
    ip: IPv4 | None = None
    outbound: Annotated[
        Outbound,
        says(one_of(OUTBOUND)),
        Field(description="user mode: what the guest may reach (none: QEMU restrict=on)"),
    ] = Outbound.INTERNET  # never stored: the stored form leaves the default out

    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        if isinstance(data, str):  # "none", "user", "network:NAME"
            kind, _, name = data.partition(":")
            return {"type": kind, **({"name": name} if name else {})}
        return data

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        kind = data.get("type", NetworkType.USER)
        if kind not in NETWORK_TYPES:
            raise refused(one_of(NETWORK_TYPES), ".type")
        return {"type": kind} if kind == NetworkType.NONE else {**data, "type": kind}

    @field_validator("name", mode="before")
    @classmethod
    def _name_for_networks(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data["type"] == NetworkType.USER:
            return None  # ignored, as it always was
        if value is None:
            raise refused("must be a libvirt network name")
        return value

    @field_validator("port_forwards", mode="before")
    @classmethod
    def _forwards_in_user_mode(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data["type"] == NetworkType.NETWORK:
            if value:
                raise refused("port forwards need user-mode networking")
            return []
        return value

    @field_validator("ip", mode="before")
    @classmethod
    def _ip_on_networks(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data["type"] == NetworkType.USER:  # given at all, even null
            raise refused("a fixed IP needs a libvirt network (type 'network')")
        return value

    @field_validator("outbound", mode="before")
    @classmethod
    def _outbound_in_user_mode(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data["type"] == NetworkType.NETWORK:
            if value is not None:
                raise refused(
                    "applies to user-mode networking; a libvirt network's forward mode decides"
                )
            return Outbound.INTERNET
        return value

    @model_serializer(mode="wrap")
    def _stored(self, handler: Callable[[Any], dict[str, Any]]) -> dict[str, Any]:
        data = handler(self)
        out: dict[str, Any] = {"type": data["type"]}
        if data["type"] == NetworkType.NONE:
            return out
        if data["mac"] is not None:
            out["mac"] = data["mac"]
        if data["type"] == NetworkType.USER:
            out["port_forwards"] = data["port_forwards"]
            # kept only when set, so that stored specs compare equal
            if data["outbound"] != Outbound.INTERNET:
                out["outbound"] = data["outbound"]
        else:
            out["name"] = data["name"] or "default"
            if data["ip"] is not None:
                out["ip"] = data["ip"]
        return out


class CloudInit(_LeavesOutUnset):
    not_an_object = "must be an object with user_data, meta_data, network_config"
    user_data: UserData | None = None
    meta_data: CloudInitPart | None = None
    network_config: CloudInitPart | None = None


class TcpSocketCheck(_Object):
    """Reaches the guest port through its tcp forward on 127.0.0.1."""

    model_config = ConfigDict(extra="ignore")
    refuse_unknown = False
    port: Port


class ConsoleCheck(_Object):
    """The text appears on the serial console after the guest started."""

    model_config = ConfigDict(extra="ignore")
    refuse_unknown = False
    contains: ConsoleText


class Probe(_LeavesOutUnset):
    """A readiness or liveness probe: exactly one of tcp_socket (a guest port with a
    tcp forward), console, guest_agent_ping; and its timings."""

    not_an_object = "must be an object with one of " + ", ".join(PROBE_KINDS)
    tcp_socket: TcpSocketCheck | None = None
    console: ConsoleCheck | None = None
    guest_agent_ping: NoFields | None = None
    initial_delay_seconds: Annotated[
        int, timing("initial_delay_seconds"), timing_says("initial_delay_seconds")
    ] = PROBE_TIMINGS["initial_delay_seconds"][0]
    period_seconds: Annotated[int, timing("period_seconds"),
                              timing_says("period_seconds")] = PROBE_TIMINGS["period_seconds"][0]
    timeout_seconds: Annotated[int, timing("timeout_seconds"),
                               timing_says("timeout_seconds")] = PROBE_TIMINGS["timeout_seconds"][0]
    failure_threshold: Annotated[
        int, timing("failure_threshold"), timing_says("failure_threshold")
    ] = PROBE_TIMINGS["failure_threshold"][0]
    success_threshold: Annotated[
        int, timing("success_threshold"), timing_says("success_threshold")
    ] = PROBE_TIMINGS["success_threshold"][0]

    @classmethod
    def _prepare(cls, data: dict[str, Any]) -> dict[str, Any]:
        kinds = [kind for kind in PROBE_KINDS if kind in data]
        if len(kinds) != 1:
            raise refused("needs exactly one of " + ", ".join(PROBE_KINDS))
        if data[kinds[0]] is None:
            raise refused("must be an object", f".{kinds[0]}")
        return data

    @model_validator(mode="after")
    def _timeout_within_period(self) -> Probe:
        if self.timeout_seconds > self.period_seconds:
            raise refused("must not exceed period_seconds", ".timeout_seconds")
        return self


class Spec(BaseModel):
    """A VM: what it runs (image, vCPUs, memory, disks, network, cloud-init) and how
    the appliance keeps it (run strategy, placement, grace period, probes)."""

    model_config = ConfigDict(extra="forbid", use_enum_values=True)
    name: DnsName
    image: ImageName
    cpus: Cpus = DEFAULT_CPUS
    memory: Memory = DEFAULT_MEMORY_MIB
    disks: Disks = Field(
        default_factory=list, description=f"extra blank disks (at most {MAX_DISKS})"
    )
    network: Network = Field(default_factory=Network)
    cloud_init: CloudInit | None = None
    run_strategy: Annotated[RunStrategy, says(one_of(RUN_STRATEGIES))] = stored_as_value(
        DEFAULT_RUN_STRATEGY
    )
    labels: Labels = Field(default_factory=dict)
    node_selector: Labels = Field(
        default_factory=dict,
        description="host labels the VM must land on (KubeVirt's nodeSelector)",
    )
    group: DnsName | None = Field(
        None, description="a server group (POST /v1/groups): affinity or anti-affinity"
    )
    termination_grace_period: Grace = Field(
        TERMINATION_GRACE_PERIOD, description="seconds from ACPI shutdown to pulling the plug"
    )
    # Keep the vCPUs and memory claimed on the host while stopped (Nova's rule);
    # by default a stopped VM claims only its disks, and the rest when it starts.
    reserve_when_stopped: Flag = Field(False, description=(
        "keep the vCPUs and memory claimed on the host while stopped "
        "(by default only the disks are; the rest is claimed at start)"))
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise refused("the spec must be a JSON object")
        if not _FIELD_NAMES.issuperset(data):
            unknown = sorted(data.keys() - _FIELD_NAMES)[0]
            raise refused(f"unknown field; known fields are {', '.join(FIELDS)}", "." + unknown)
        # null means "the default"; name and image have none, and are refused by their rules.
        return {
            "name": None,
            "image": None,
            **{key: value for key, value in data.items() if value is not None},
        }

    @field_validator("readiness_probe", "liveness_probe")
    @classmethod
    def _tcp_probe_has_a_forward(cls, probe: Probe | None, info: ValidationInfo) -> Probe | None:
        network = info.data.get("network")
        if probe is None or probe.tcp_socket is None or network is None:
            return probe
        port = probe.tcp_socket.port
        if not any(
            f.guest_port == port and f.protocol == Protocol.TCP for f in network.port_forwards
        ):
            # The appliance reaches guests only through forwards on 127.0.0.1.
            raise refused(f"needs a tcp port forward to guest port {port}", ".tcp_socket.port")
        return probe


FIELDS: tuple[str, ...] = tuple(Spec.model_fields)
_FIELD_NAMES = frozenset(FIELDS)
# Fields a running VM may not change without a restart are still accepted; the
# status then carries restart_required. These never change after creation:
IMMUTABLE = ("image",)
# The order the fields were always checked in: the first fault found is the one reported.
CHECK_ORDER = (
    "name",
    "cpus",
    "memory",
    "disks",
    "network",
    "cloud_init",
    "labels",
    "node_selector",
    "group",
    "readiness_probe",
    "liveness_probe",
    "image",
    "run_strategy",
    "termination_grace_period",
    "reserve_when_stopped",
)


def _precedence(error: Any) -> int:
    loc = error["loc"]
    return CHECK_ORDER.index(loc[0]) if loc and loc[0] in CHECK_ORDER else -1


def as_invalid(error: ValidationError) -> Invalid:
    """The first fault, as Invalid(reason, "network.port_forwards[0].host_port")."""
    first = min(error.errors(include_url=False, include_input=False), key=_precedence)
    context = first.get("ctx") or {}
    path = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"])
    path += context.get("at", "")
    reason = context["reason"] if first["type"] == REFUSED else first["msg"]
    return Invalid(reason, (path[1:] if path.startswith(".") else path) or None)


def validate(raw: Any) -> dict[str, Any]:
    """The normalised spec (the form the store keeps), or Invalid naming the first bad field."""
    try:
        return Spec.model_validate(raw).model_dump()
    except ValidationError as err:
        raise as_invalid(err) from None

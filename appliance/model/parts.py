"""The objects inside a VM spec (pydantic v2): disks, port forwards, the
network, cloud-init and probes, each checking what depends on another of its
fields, and how each is stored. appliance/model/spec.py holds the Spec that
contains them and turns pydantic's errors into the appliance's refusals.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    WrapValidator,
    field_validator,
    model_serializer,
    model_validator,
)

from appliance.jsonio import shown
from appliance.model.defaults import (
    MAX_DISKS,
    MAX_PORT_FORWARDS,
    PROBE_TIMINGS,
)
from appliance.model.fields import (
    CloudInitPart,
    ConsoleText,
    DiskSize,
    DnsName,
    ForwardAddress,
    IPv4,
    LibvirtNetworkName,
    Mac,
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
    NetworkType,
    Outbound,
    Protocol,
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


def _user_mode_only(value: Any, info: ValidationInfo, given: bool, message: str,
                    unset: Any) -> Any:
    """A field of user-mode (slirp) networking: on a libvirt network refused when given,
    else `unset`."""
    if info.data["type"] != NetworkType.NETWORK:
        return value
    if given:
        raise refused(message)
    return unset


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
        return _user_mode_only(value, info, bool(value), "port forwards need user-mode networking",
                               [])

    @field_validator("ip", mode="before")
    @classmethod
    def _ip_on_networks(cls, value: Any, info: ValidationInfo) -> Any:
        if info.data["type"] == NetworkType.USER:  # given at all, even null
            raise refused("a fixed IP needs a libvirt network (type 'network')")
        return value

    @field_validator("outbound", mode="before")
    @classmethod
    def _outbound_in_user_mode(cls, value: Any, info: ValidationInfo) -> Any:
        return _user_mode_only(
            value, info, value is not None,
            "applies to user-mode networking; a libvirt network's forward mode decides",
            Outbound.INTERNET)

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


CLOUD_INIT_DATASOURCES = ("nocloud", "configdrive", "metadata")
MAX_VM_KEYS = 10  # SSH keys named by one VM (cloud_init.keys)


def _keys_bounded(value: Any) -> Any:
    must_be_list(value)
    if len(value) > MAX_VM_KEYS:
        raise refused(f"at most {MAX_VM_KEYS} keys")
    return value


def _key_names_unique(names: list[str]) -> list[str]:
    for i, name in enumerate(names):
        if name in names[:i]:
            raise refused("named twice", f"[{i}]")
    return names


class CloudInit(_LeavesOutUnset):
    not_an_object = ("must be an object with user_data, meta_data, network_config, "
                     "datasource, keys")
    user_data: UserData | None = None
    meta_data: CloudInitPart | None = None
    network_config: CloudInitPart | None = None
    # Issue 15: OpenStack's config drive instead of NoCloud (virt/cloudinit.py).
    datasource: Annotated[str, says(one_of(CLOUD_INIT_DATASOURCES))] | None = Field(
        None, json_schema_extra={"enum": list(CLOUD_INIT_DATASOURCES)}, description=(
            "nocloud (the default: a `cidata` seed), configdrive (an OpenStack `config-2` "
            "drive: meta_data.json, user_data, network_data.json with the fixed IP) or "
            "metadata (no seed: the metadata service only, as Nova without a config drive; "
            "the guest is told OpenStack by its SMBIOS product name)"))
    # The caller's SSH keys (/v1/keys) by name, copied into the VM's data at create or change.
    keys: Annotated[list[DnsName], BeforeValidator(_keys_bounded),
                    AfterValidator(_key_names_unique)] | None = Field(None, description=(
        f"names of the caller's SSH keys (vmctl key add), at most {MAX_VM_KEYS}: "
        "root's authorized keys, as cloud-init's public-keys"))

    @field_validator("datasource")
    @classmethod
    def _known_datasource(cls, value: str | None) -> str | None:
        if value is not None and value not in CLOUD_INIT_DATASOURCES:
            raise refused(one_of(CLOUD_INIT_DATASOURCES))
        return value

    @model_validator(mode="after")
    def _configdrive_takes_objects(self) -> CloudInit:
        if self.datasource in ("configdrive", "metadata"):  # the same documents
            for name in ("meta_data", "network_config"):
                if isinstance(getattr(self, name), str):
                    raise refused("a config drive's is a JSON object (meta_data: its meta; "
                                  "network_config: its network_data.json), not YAML", f".{name}")
        return self


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

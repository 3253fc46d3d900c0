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
values.py, which the service also calls for one value); the classes here and in
parts.py (the spec's objects) check objects (unknown and missing fields, what
depends on another field). Only the first fault is reported: at the top level in
the order the fields were always checked (CHECK_ORDER: `image` last, so a spec
without an image still names its other faults), inside an object in the order
its fields are declared.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from appliance.errors import Invalid
from appliance.model.backup_policy import BackupPolicy
from appliance.model.cpu import Cpu, passthrough_fault, topology_fault
from appliance.model.defaults import (
    DEFAULT_CPUS,
    DEFAULT_GRAPHICS,
    DEFAULT_MEMORY_MIB,
    DEFAULT_RUN_STRATEGY,
    MAX_DISKS,
    TERMINATION_GRACE_PERIOD,
)
from appliance.model.fields import (
    REFUSED,
    Cpus,
    DnsName,
    Flag,
    Grace,
    ImageName,
    Labels,
    Memory,
    one_of,
    refused,
    says,
    stored_as_value,
)
from appliance.model.firewall import Rules
from appliance.model.firmware import (
    DEFAULT_FIRMWARE,
    DEFAULT_MACHINE,
    FIRMWARES,
    MACHINES,
    Firmware,
    Machine,
    XmlPatches,
)
from appliance.model.hotplug import HOTPLUG_FACTOR
from appliance.model.media import BootOrder, Cdroms, boot_order_field, cdroms_field
from appliance.model.nics import Nics, first_nic_fault, networks_shorthand
from appliance.model.parts import (
    CloudInit,
    ConsoleCheck,
    Disk,
    Disks,
    Network,
    PortForward,
    Probe,
    TcpSocketCheck,
)
from appliance.model.states import (
    GRAPHICS,
    RUN_STRATEGIES,
    Graphics,
    NetworkType,
    Outbound,
    Protocol,
    RunStrategy,
)

# The spec's objects are defined in parts.py and taken from here with it.
__all__ = ["FIELDS", "IMMUTABLE", "BackupPolicy", "CloudInit", "ConsoleCheck", "Disk", "Network",
           "PortForward", "Probe", "Spec", "TcpSocketCheck", "as_invalid", "validate"]


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
    networks: Nics = Field(default_factory=list, description=(
        "further NICs, each on a libvirt network with its own MAC and fixed IP; given "
        "without network, the first of them is network (appliance/model/nics.py)"))
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
    graphics: Annotated[Graphics, says(one_of(GRAPHICS))] = Field(
        DEFAULT_GRAPHICS, validate_default=True, description=(
            "vnc: a video device and a VNC server reached only through the appliance "
            "(/v1/vms/NAME/vnc, screen.png); none: no display"))
    backup: BackupPolicy | None = Field(None, description=(
        "scheduled backups and their retention; absent: the project's policy, if any"))
    # Issue 14, hotplug: how far cpus and memory may grow while the VM runs.
    max_cpus: Cpus | None = Field(None, description=(
        "the most vCPUs the VM can have while running (changes of cpus up to it apply live); "
        f"absent: min({HOTPLUG_FACTOR} x cpus, the host's CPUs); cpus for a dedicated VM"))
    max_memory: Memory | None = Field(None, description=(
        "the most memory the VM can have while running (changes of memory up to it apply "
        f"live, through virtio-mem); absent: {HOTPLUG_FACTOR} x memory, capped by the host"))
    # Issue 14, part F (appliance/model/cpu.py): declared after cpus and
    # node_selector, which its check reads.
    cpu: Cpu = Field(default_factory=lambda: Cpu.model_validate({}), description=(
        "CPU model (cluster baseline by default), topology, dedicated host CPUs"))
    hugepages: Flag = Field(False, description=(
        "back the memory with the host's 2 MiB hugepages (the host must have enough free)"))
    # Part G (issue 14): machine before firmware, which depends on it.
    machine: Annotated[Machine, says(one_of(MACHINES))] = Field(
        DEFAULT_MACHINE, validate_default=True,
        description="q35 (PCIe) or pc (i440FX + PIIX, for old guests)")
    firmware: Annotated[Firmware, says(one_of(FIRMWARES))] = Field(
        DEFAULT_FIRMWARE, validate_default=True, description=(
            "bios (SeaBIOS), uefi (OVMF, NVRAM kept with the VM) or uefi-secure "
            "(OVMF with Secure Boot and Microsoft's keys; needs machine q35)"))
    tpm: Flag = Field(False, description="a virtual TPM 2.0 (swtpm), for guests that need one")
    xml_patches: XmlPatches = Field(default_factory=list)
    cdroms: Cdroms = cdroms_field()  # issue 14 B: install media (model/media.py)
    boot_order: BootOrder = boot_order_field()
    firewall: Rules = Field(default_factory=list)  # issue 15: model/firewall.py

    @model_validator(mode="before")
    @classmethod
    def _known_fields_only(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise refused("the spec must be a JSON object")
        if not _FIELD_NAMES.issuperset(data):
            unknown = sorted(data.keys() - _FIELD_NAMES)[0]
            raise refused(f"unknown field; known fields are {', '.join(FIELDS)}", "." + unknown)
        data = networks_shorthand(data)
        # null means "the default"; name and image have none, and are refused by their rules.
        return {
            "name": None,
            "image": None,
            **{key: value for key, value in data.items() if value is not None},
        }

    @field_validator("max_cpus", "max_memory")
    @classmethod
    def _maximum_not_below_current(cls, maximum: int | None, info: ValidationInfo) -> int | None:
        current_field = "cpus" if info.field_name == "max_cpus" else "memory"
        current = info.data.get(current_field)
        if maximum is not None and current is not None and maximum < current:
            unit = "" if current_field == "cpus" else " MiB"
            raise refused(f"must be at least {current_field} ({current}{unit})")
        return maximum

    @field_validator("networks")
    @classmethod
    def _nics_beside_the_first(cls, nics: list[Any], info: ValidationInfo) -> list[Any]:
        network = info.data.get("network")
        if network is not None and (fault := first_nic_fault(network, nics)):
            raise refused(fault[0], fault[1])
        return nics

    @field_validator("cloud_init")
    @classmethod
    def _metadata_is_reachable(cls, cloud_init: CloudInit | None,
                               info: ValidationInfo) -> CloudInit | None:
        network = info.data.get("network")
        if cloud_init is None or cloud_init.datasource != "metadata" or network is None \
                or info.data.get("networks"):
            return cloud_init
        if network.type == NetworkType.NONE or (network.type == NetworkType.USER
                                                and network.outbound == Outbound.NONE):
            # No seed, and no way to 169.254.169.254 (restrict=on lets nothing out).
            raise refused("the metadata service is this VM's only data, and it has no NIC "
                          "that reaches it (network none, or user mode with outbound none): "
                          "give it one, or use nocloud or configdrive", ".datasource")
        return cloud_init

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

    @field_validator("cpu")
    @classmethod
    def _cpu_fits(cls, cpu: Cpu, info: ValidationInfo) -> Cpu:
        stored = cpu.model_dump()
        vcpus = info.data.get("max_cpus") or info.data.get("cpus")
        if vcpus is not None and (fault := topology_fault(stored, vcpus)):
            raise refused(fault, ".sockets")
        if (fault := passthrough_fault(stored, info.data.get("node_selector") or {})):
            raise refused(fault, ".mode")
        if stored.get("dedicated") and vcpus is not None and vcpus > info.data.get("cpus", vcpus):
            # Each dedicated vCPU is pinned at boot: a hot-added one would float on shared CPUs.
            raise refused("dedicated vCPUs are pinned at boot: max_cpus must equal cpus "
                          "(a change of cpus applies at the next restart)", ".dedicated")
        return cpu
    @field_validator("firmware")
    @classmethod
    def _secure_boot_needs_q35(cls, firmware: str, info: ValidationInfo) -> str:
        if firmware == Firmware.UEFI_SECURE and info.data.get("machine") == Machine.PC:
            # OVMF keeps Secure Boot's variables safe from the guest's kernel in SMM,
            # which QEMU emulates on q35 only.
            raise refused("uefi-secure needs machine q35: Secure Boot's firmware runs its "
                          "variable store in SMM, which the pc machine lacks")
        return firmware

    @field_validator("firewall")
    @classmethod
    def _firewall_needs_a_tap(cls, rules: list[Any], info: ValidationInfo) -> list[Any]:
        network = info.data.get("network")
        if rules and network is not None and network.type != NetworkType.NETWORK \
                and not info.data.get("networks"):
            # nwfilter acts on a NIC's tap; QEMU's user mode has none (its traffic
            # leaves from QEMU's own sockets on the host).
            raise refused("firewall rules apply to NICs on libvirt networks (nat, bridge, "
                          "isolated); this VM has none: give it one (network: "
                          "{\"type\": \"network\", \"name\": ...}), or for user mode limit "
                          "what it reaches with network.outbound and its port forwards")
        return rules


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
    "networks",
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
    "graphics",
    "backup",
    "max_cpus",
    "max_memory",
    "cpu",
    "hugepages",
    "machine",
    "firmware",
    "tpm",
    "xml_patches",
    "cdroms",
    "boot_order",
    "firewall",
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

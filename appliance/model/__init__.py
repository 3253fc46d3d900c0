"""The domain model: the state vocabulary (states.py), the defaults and bounds
(defaults.py), the rules for single values (values.py) and the VM spec
(spec.py, pydantic; import it from there). This package's top level is plain
Python, so that the scheduler and the exporter can import it cheaply."""
from appliance.model.defaults import (
    DEFAULT_CPU_RATIO,
    DEFAULT_CPUS,
    DEFAULT_DISK_RATIO,
    DEFAULT_IMAGE,
    DEFAULT_MEMORY_MIB,
    DEFAULT_NETWORK_TYPE,
    DEFAULT_RAM_RATIO,
    DEFAULT_RUN_STRATEGY,
    EVACUATE_AFTER,
    HEARTBEAT_AGE,
    HEARTBEAT_SECONDS,
    HOST_RATIOS,
    TERMINATION_GRACE_PERIOD,
)
from appliance.model.states import (
    ACTIVE_STATES,
    FINAL_OP_STATES,
    GROUP_POLICIES,
    HOST_DOWN,
    HOST_STATES,
    NETWORK_TYPES,
    OPEN_OP_STATES,
    OUTBOUND,
    PROTOCOLS,
    RUN_STRATEGIES,
    STATE_ALIASES,
    STATE_CHANGE_OPS,
    STATE_VERBS,
    VERB_DESIRED_STATE,
    DesiredState,
    GroupPolicy,
    HostAdminState,
    NetworkType,
    OpKind,
    OpStatus,
    Outbound,
    ProbeKind,
    Protocol,
    RunStrategy,
    StateVerb,
    VMState,
)

__all__ = [
    "ACTIVE_STATES", "DEFAULT_CPUS", "DEFAULT_CPU_RATIO", "DEFAULT_DISK_RATIO", "DEFAULT_IMAGE",
    "DEFAULT_MEMORY_MIB", "DEFAULT_NETWORK_TYPE",
    "DEFAULT_RAM_RATIO", "DEFAULT_RUN_STRATEGY", "EVACUATE_AFTER", "FINAL_OP_STATES", "GROUP_POLICIES",
    "HEARTBEAT_AGE", "HEARTBEAT_SECONDS", "HOST_DOWN", "HOST_RATIOS", "HOST_STATES", "NETWORK_TYPES",
    "OPEN_OP_STATES", "OUTBOUND", "PROTOCOLS", "RUN_STRATEGIES", "STATE_ALIASES", "STATE_CHANGE_OPS",
    "STATE_VERBS", "TERMINATION_GRACE_PERIOD", "VERB_DESIRED_STATE", "DesiredState", "GroupPolicy",
    "HostAdminState", "NetworkType", "OpKind", "OpStatus", "Outbound", "ProbeKind", "Protocol", "RunStrategy",
    "StateVerb", "VMState",
]

"""The domain model: one definition of the spec feeds validation, the stored
form, the OpenAPI document and the CLI's help; the enums are the strings stored."""
import subprocess
import sys
from pathlib import Path

import pytest

from appliance import spec
from appliance.api.openapi import DOCUMENT
from appliance.errors import Invalid
from appliance.model import (
    DEFAULT_CPUS,
    DEFAULT_MEMORY_MIB,
    FINAL_OP_STATES,
    HOST_STATES,
    RUN_STRATEGIES,
    HostAdminState,
    OpStatus,
)
from appliance.model.spec import CloudInit, Disk, Network, PortForward, Probe, Spec

ROOT = Path(__file__).resolve().parents[4]
SCHEMAS = DOCUMENT["components"]["schemas"]


def test_the_document_describes_every_field_the_validator_knows():
    assert list(SCHEMAS["Spec"]["properties"]) == list(spec.FIELDS) == list(Spec.model_fields)
    for model in (Network, PortForward, Disk, CloudInit, Probe):
        assert list(SCHEMAS[model.__name__]["properties"]) == list(model.model_fields)
    assert SCHEMAS["Spec"]["properties"]["cpus"]["maximum"] == spec.MAX_CPUS
    assert SCHEMAS["Spec"]["properties"]["reserve_when_stopped"]["type"] == "boolean"
    assert SCHEMAS["CreateVM"]["allOf"][0] == {"$ref": "#/components/schemas/Spec"}


def test_the_document_is_openapi_30():
    """No JSON Schema 2020-12 spellings that OpenAPI 3.0 tools would misread."""
    def walk(node, path=""):
        if isinstance(node, dict):
            assert node.get("type") != "null" and "const" not in node and "$defs" not in node, path
            if "$ref" in node:
                assert len(node) == 1, f"{path}: siblings of $ref are ignored in OpenAPI 3.0"
            for key, value in node.items():
                walk(value, f"{path}/{key}")
        elif isinstance(node, list):
            for i, item in enumerate(node):
                walk(item, f"{path}[{i}]")
    walk(DOCUMENT)


@pytest.mark.parametrize("raw, field", [
    ({"disks": [{"name": "data", "size": "1Q"}]}, "disks[0].size"),
    ({"network": {"type": "user", "port_forwards": [{"host_port": 2222, "guest_port": 22},
                                                    {"host_port": 80, "guest_port": 0}]}},
     "network.port_forwards[1].guest_port"),
    ({"labels": {"app": "no spaces"}}, "labels.app"),
    ({"readiness_probe": {"tcp_socket": {"port": 22}}}, "readiness_probe.tcp_socket.port"),
    ({"liveness_probe": {"guest_agent_ping": {}, "timeout_seconds": 20}}, "liveness_probe.timeout_seconds"),
    ({"cloud_init": {"meta_data": 5}}, "cloud_init.meta_data"),
    ({"network": {"type": "user", "ip": None}}, "network.ip"),
])
def test_a_refusal_names_the_path_of_the_field(raw, field):
    with pytest.raises(Invalid) as err:
        spec.validate({"name": "web1", "image": "demo", **raw})
    assert err.value.field == field


def test_a_missing_required_field_gets_its_own_message():
    with pytest.raises(Invalid) as err:
        spec.validate({"name": "web1", "image": "demo",
                       "network": {"type": "user", "port_forwards": [{"guest_port": 22}]}})
    assert (err.value.field, err.value.reason) == ("network.port_forwards[0].host_port",
                                                   "must be a port number from 1 to 65535")
    with pytest.raises(Invalid) as err:
        spec.validate({"name": "web1"})
    assert (err.value.field, err.value.reason) == ("image", "required: the name of an image")


def test_the_stored_form_holds_plain_strings_and_validates_again_unchanged():
    stored = spec.validate({"name": "web1", "image": "demo", "network": "network:br0"})
    assert stored["network"] == {"type": "network", "name": "br0"}
    assert type(stored["run_strategy"]) is str and type(stored["network"]["type"]) is str
    assert stored["reserve_when_stopped"] is False
    assert spec.validate(stored) == stored


def test_enums_are_the_strings_the_store_keeps():
    assert list(HOST_STATES) == ["enabled", "disabled", "maintenance"]
    assert HostAdminState.MAINTENANCE == "maintenance" and f"{HostAdminState.MAINTENANCE}" == "maintenance"
    assert list(RUN_STRATEGIES) == ["Always", "RerunOnFailure", "Manual", "Halted"]
    assert FINAL_OP_STATES == ("succeeded", "failed", "cancelled") and OpStatus.PENDING == "pending"


def test_create_help_shows_the_model_defaults():
    out = subprocess.run([sys.executable, "-m", "appliance.cli", "create", "--help"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert f"(default {DEFAULT_CPUS})" in out and f"(default {DEFAULT_MEMORY_MIB})" in out
    assert f"(default {spec.DEFAULTS['run_strategy']})" in out

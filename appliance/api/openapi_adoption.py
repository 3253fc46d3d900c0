"""The OpenAPI document's VMs in and out (issue 16; merged into openapi.py's
SCHEMAS and PATHS): what appliance/api/adoption.py serves and
service/adoption.py accepts."""
from __future__ import annotations

from typing import Any

from appliance.api.openapi_backups import NEW_VM, _body
from appliance.api.openapi_shared import (
    DNS_NAME,
    ERROR,
    ERRORS,
    NAME,
    WAIT,
    boolean,
    json_answer,
    string,
)
from appliance.kubevirt_export import CLOUD_INIT_KINDS, FORMATS, MAX_REFERENCE

SCHEMAS: dict[str, Any] = {
    "Adopt": {
        "type": "object", "required": ["domain"], "additionalProperties": False,
        "properties": {
            "domain": string(description="the libvirt domain's name on the host; shut off, "
                                         "without snapshots or a saved state"),
            "host": {**DNS_NAME, "description": "the domain's host (optional when the "
                                                "appliance has one)"},
            "name": {**DNS_NAME, "description": "the VM's name (default: the domain's)"},
            "image": {**DNS_NAME, "description": (
                "the base image recorded for the VM (default: the image its root disk is "
                "an overlay of)")},
            "copy_disks": boolean(description=(
                "copy the disks into the home (default: referenced in place, which only "
                "files under config adopt_disk_dirs may be)")),
            "state": string(enum=["running", "stopped"],
                            description="the desired state after adoption (default stopped)"),
        }},
}

_ADOPT_REFUSED = {**ERROR, "description": (
    "the domain cannot be adopted: a device or setting a spec cannot say, a disk outside "
    "the allowed folders, a bad field; the reason names it and nothing changed")}
_ADOPT_CONFLICT = {**ERROR, "description": (
    "the domain runs, has snapshots or a saved state, is already a VM, or its name is taken")}
_QUERY = [
    {"name": "format", "in": "query", "schema": string(enum=list(FORMATS))},
    {"name": "disk_url", "in": "query", "schema": string(maxLength=MAX_REFERENCE),
     "description": "the http(s) URL the root disk's DataVolume imports the exported qcow2 "
                    "from (default: a placeholder to replace)"},
    {"name": "container_disk", "in": "query", "schema": string(maxLength=MAX_REFERENCE),
     "description": "a containerDisk image reference for the root disk instead"},
    {"name": "cloud_init", "in": "query", "schema": string(enum=list(CLOUD_INIT_KINDS)),
     "description": "the cloud-init volume's kind (default nocloud)"},
]

PATHS: dict[str, Any] = {
    "/v1/vms/adopt": {
        "post": {"summary": "adopt a libvirt domain the appliance did not create: its shape "
                            "becomes a spec, its disks are referenced in place (or copied), "
                            "and it is managed as any VM from then on (admins only)",
                 "parameters": WAIT, "requestBody": _body({"$ref": "#/components/schemas/Adopt"}),
                 "responses": {"201": json_answer(NEW_VM, "adopted"),
                               "202": json_answer(NEW_VM, "accepted: the disks are placed"),
                               **ERRORS, "409": _ADOPT_CONFLICT,
                               "422": _ADOPT_REFUSED}},
    },
    "/v1/vms/{name}/export": {
        "parameters": [NAME],
        "get": {"summary": "the VM as KubeVirt manifests: a kubevirt.io/v1 VirtualMachine "
                           "(and a Service for its port forwards), YAML",
                "parameters": _QUERY,
                "responses": {"200": {"description": "YAML documents", "content": {
                    "application/yaml": {"schema": {
                    # any: a YAML reader (schemathesis's) gives the documents as objects;
                    # their shape is KubeVirt's (tests/data/kubevirt/), not described here
                    "description": "a KubeVirt VirtualMachine (and a Service for port "
                                   "forwards), YAML documents separated by ---"}}}}, **ERRORS}},
    },
}

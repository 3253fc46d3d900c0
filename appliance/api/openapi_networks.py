"""The OpenAPI document's networks (issue 15), merged into openapi.py's SCHEMAS
and PATHS: /v1/networks and /v1/networks/{name}. The request body's schema
comes from the model that validates it (appliance/model/networks.py)."""
from __future__ import annotations

from appliance.api.openapi_shared import (
    ERROR,
    ERRORS,
    NAME,
    json_answer,
    list_of,
    number,
    ref,
    string,
)
from appliance.model.networks import (
    MAX_NETWORKS,
    MAX_PROJECT_NETWORKS,
    NETWORK_KINDS,
    NetworkCreate,
)
from appliance.model.schema import model_components

_NULLABLE = string(nullable=True)
FORBIDDEN = {**ERROR, "description": "a bridge network (admins only)"}

SCHEMAS = {
    **model_components(NetworkCreate),  # NetworkCreate, DhcpRange
    "NetworkResource": {
        "type": "object",
        "required": ["name", "project", "kind", "libvirt_name", "vms", "reservations"],
        "properties": {
            "name": string(), "project": string(), "kind": string(enum=list(NETWORK_KINDS)),
            "subnet": _NULLABLE, "gateway": string(nullable=True, description="the host's "
                                                   "address on it (the subnet's first)"),
            "dhcp": {"allOf": [ref("DhcpRange")], "nullable": True}, "domain": _NULLABLE,
            "bridge": _NULLABLE,
            "libvirt_name": string(description="the libvirt network on each host using it"),
            "vms": {"type": "array", "items": string(),
                    "description": "the project's VMs on it"},
            "reservations": {"type": "array", "description": "the VMs' fixed IPs on it "
                                                          "(DHCP reservations), by address",
                             "items": {"type": "object", "required": ["vm", "ip"],
                                       "properties": {"vm": string(), "ip": string()}}},
            "created": number()},
    },
}

PATHS = {
    "/v1/networks": {
        "get": {"summary": "the project's networks",
                "responses": {"200": json_answer(list_of(ref("NetworkResource"))), **ERRORS}},
        "post": {"summary": "create a network: nat or isolated (a subnet, DHCP, DNS), or "
                            "bridge (a host bridge; admins only); at most "
                            f"{MAX_NETWORKS} in all and {MAX_PROJECT_NETWORKS} in a project, "
                            "their subnets never overlapping",
                 "requestBody": {"required": True, "content": {
                     "application/json": {"schema": ref("NetworkCreate")}}},
                 "responses": {"201": json_answer(ref("NetworkResource"), "created"), **ERRORS,
                               "403": FORBIDDEN}},
    },
    "/v1/networks/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one network and the VMs on it",
                "responses": {"200": json_answer(ref("NetworkResource")), **ERRORS}},
        "delete": {"summary": "delete a network no VM uses (409 naming them)",
                   "responses": {"204": {"description": "deleted"}, **ERRORS}},
    },
}

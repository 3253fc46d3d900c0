"""The OpenAPI document's hosts, images and server groups, and the migration of
a VM between hosts (merged into openapi.py's SCHEMAS and PATHS)."""
from __future__ import annotations

from appliance.api.openapi_shared import (
    DNS_NAME,
    ERRORS,
    LABELS,
    NAME,
    WAIT,
    boolean,
    integer,
    json_answer,
    list_of,
    number,
    ref,
    string,
)
from appliance.files import HOST_FILES
from appliance.model import GROUP_POLICIES, HOST_DOWN, HOST_RATIOS, HOST_STATES
from appliance.model.defaults import MAX_MEMORY_MIB
from appliance.model.firewall import SCHEMA as FIREWALL

SCHEMAS = {
    "Image": {
        "type": "object",
        "properties": {"name": string(), "path": string(), "format": string(),
                       "virtual_size": integer(), "actual_size": integer(),
                       "created": number(), "source": string(),
                       "kind": string(enum=["disk", "iso"], description=(
                           "disk: a qcow2 a VM's root disk is made from; iso: an ISO 9660 "
                           "file kept as uploaded, for CD-ROM drives (cdroms) only"))},
    },
    "HostSettings": {
        "type": "object",
        "properties": {
            "uri": string(description="libvirt URI: qemu:///system, qemu+ssh://root@h2/system, "
                                      "qemu+tls://h2/system, qemu+unix:///system?socket=/path; "
                                      "ssh and TLS with the appliance's own key, known_hosts "
                                      "and CA (HOME/ssh, HOME/pki), which a URI may not name"),
            "labels": LABELS,
            "storage": string(pattern="^[A-Za-z0-9_.:-]{1,64}$",
                              description="where the host finds VM disks; "
                                          "hosts naming the same storage share them"),
            "migration_address": string(nullable=True,
                                        description="the name or IP other hosts reach this one "
                                                    "at for live migration"),
            "state": {"type": "string", "enum": list(HOST_STATES)},
            **{name: number(minimum=low, maximum=high, description=f"overcommit, default {default}")
               for name, (default, low, high) in HOST_RATIOS.items()},
            "reserved_memory_mib": {"type": "integer", "minimum": 0, "maximum": MAX_MEMORY_MIB},
            "cpu_dedicated_set": string(description=(
                'host CPUs kept for dedicated VMs (Nova\'s cpu_dedicated_set), like "2-3,6"; '
                "at least one CPU stays shared; '' for none")),
        },
    },
    "HostCreate": {"allOf": [ref("HostSettings"), {"type": "object", "required": ["name", "uri"],
                                                    "properties": {"name": DNS_NAME}}]},
    "Host": {
        "type": "object",
        "required": ["name", "uri", "state", "observed_state", "up", "capacity", "allocated"],
        "properties": {
            "name": string(), "uri": string(),
            "state": string(enum=list(HOST_STATES), description="administrative state"),
            "observed_state": {"type": "string", "enum": [*HOST_STATES, HOST_DOWN]},
            "up": boolean(), "last_seen": number(nullable=True),
            "down_since": number(nullable=True), "labels": LABELS,
            "connecting": boolean(description=(
                "the controller's first connection attempt since the host was added (or "
                "its URI changed) has not finished")),
            "last_attempt": number(nullable=True),
            "reason": string(nullable=True, description="why the host is down (null when up)"),
            "storage": string(nullable=True), "migration_address": string(nullable=True),
            **{name: number() for name in HOST_RATIOS},
            "reserved_memory_mib": integer(),
            "inventory": {"type": "object",
                          "description": "what libvirt reports: arch, cpus, memory_mib, "
                                         "disk_bytes"},
            "cpu_dedicated_set": string(),
            "ssh": {"type": "object", "description": (
                "in the answer to an add or a uri change of a qemu+ssh host whose server "
                "answered: the appliance's public key (for the host's authorized_keys) and "
                "the server's host keys, recorded now on first use or matching the record "
                "(a changed key is refused: 409)"),
                "properties": {"public_key": string(), "host_key": {
                    "type": "object", "properties": {
                        "address": string(), "recorded_now": boolean(),
                        "keys": {"type": "array", "items": {"type": "object", "properties": {
                            "type": string(), "fingerprint": string()}}}}}}},
            "cpu_warning": string(nullable=True, description=(
                "why this host cannot run the CPU model running VMs use (missing features)")),
            "capacity": {"type": "object", "properties": {
                "cpus": integer(description="shared vCPUs after overcommit"),
                "dedicated_cpus": integer(), "hugepages_mib": integer(),
                "memory_mib": integer(), "disk_gib": number()}},
            "allocated": {"type": "object", "properties": {
                "cpus": integer(), "dedicated_cpus": integer(), "hugepages_mib": integer(),
                "memory_mib": integer(), "disk_gib": number(), "vms": integer()}},
        },
    },
    "ClusterCpu": {
        "type": "object", "nullable": True,
        "description": "the CPU model VMs with cpu.mode cluster get: the baseline of the hosts' "
                       "CPUs (libvirt's baselineHypervisorCPU); null until a host answered",
        "properties": {"model": string(), "vendor": string(nullable=True),
                       "features": {"type": "array", "items": string()},
                       "hosts": {"type": "array", "items": string()},
                       "computed": number()},
    },
    "Drain": {
        "type": "object", "required": ["migrating", "moving", "blocked"],
        "description": "maintenance: running VMs migrate live, stopped ones move; "
                       "blocked ones stay, with the reason",
        "properties": {
            "migrating": {"type": "array", "items": {"type": "object", "properties": {
                "vm": string(), "target": string(nullable=True),
                "operation": string(), "note": string()}}},
            "moving": {"type": "array", "items": {"type": "object", "properties": {
                "vm": string(), "target": string(), "operation": string()}}},
            "blocked": {"type": "array", "items": {"type": "object", "properties": {
                "vm": string(), "reason": string()}}},
        },
    },
    "HostStateChange": {"allOf": [ref("Host"), {"type": "object", "required": ["drain"],
                                                 "properties": {"drain": ref("Drain")}}]},
    "GroupCreate": {
        "type": "object", "required": ["name", "policy"],
        "properties": {"name": DNS_NAME, "policy": string(enum=list(GROUP_POLICIES)),
                       "firewall": FIREWALL},
    },
    "GroupChange": {
        "type": "object", "additionalProperties": False,
        "properties": {"firewall": FIREWALL},
    },
    "Group": {
        "type": "object", "required": ["name", "policy", "members"],
        "properties": {"name": string(), "project": string(),
                       "policy": string(enum=list(GROUP_POLICIES)), "created": number(),
                       "firewall": FIREWALL,
                       "members": {"type": "array", "items": {"type": "object", "properties": {
                           "name": string(), "host": string(nullable=True)}}}},
    },
    "Migrate": {
        "type": "object", "required": ["host"],
        "description": "live migration when the VM runs, an offline move when it is stopped",
        "properties": {"host": string(description="the target host"),
                       "force": boolean(description="skip the scheduler's filters (not the "
                                                   "checks that the host is up and sees the "
                                                   "disks)")},
    },
}

PATHS = {
    "/v1/images": {
        "get": {"summary": "images",
                "responses": {"200": json_answer(list_of(ref("Image"))), **ERRORS}},
        "post": {"summary": "import a file from the image import folder "
                            "(config image_import_dir, default HOME/images/import)",
                 "requestBody": {"required": True, "content": {"application/json": {"schema": {
                     "type": "object", "required": ["name", "path"],
                     "properties": {"name": string(), "path": string()}}}}},
                 "responses": {"201": json_answer(ref("Image"), "imported"), **ERRORS}},
    },
    "/v1/images/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one image", "responses": {"200": json_answer(ref("Image")), **ERRORS}},
        "put": {"summary": "upload an image file (the body)",
                "requestBody": {"required": True, "content": {
                    "application/octet-stream": {"schema": string(format="binary")}}},
            "responses": {"201": json_answer(ref("Image"), "uploaded"), **ERRORS}},
        "delete": {"summary": "delete an unused image",
                   "responses": {"204": {"description": "deleted"}, **ERRORS}},
    },
    "/v1/hosts": {
        "get": {"summary": "libvirt hosts, with capacity and what is allocated, and the "
                           "cluster's CPU model",
                "responses": {"200": json_answer({**list_of(ref("Host")), "properties": {
                    **list_of(ref("Host"))["properties"], "cluster_cpu": ref("ClusterCpu")}}),
                    **ERRORS}},
        "post": {"summary": "add a host; the answer waits (bounded, as other writes) until the "
                            "controller's first connection attempt has finished: up, or down "
                            "with the reason",
                 "parameters": WAIT,
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": ref("HostCreate")}}},
                 "responses": {"201": json_answer(ref("Host"), "added"), **ERRORS}},
    },
    "/v1/hosts/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one host", "responses": {"200": json_answer(ref("Host")), **ERRORS}},
        "patch": {"summary": "change a host's settings (merge); state as with PUT .../state",
                  "requestBody": {"required": True, "content": {
                      "application/json": {"schema": ref("HostSettings")}}},
                  "responses": {"200": json_answer(ref("Host")), **ERRORS}},
        "delete": {"summary": "remove a host without VMs",
                   "responses": {"204": {"description": "removed"}, **ERRORS}},
    },
    "/v1/hosts/{name}/state": {
        "parameters": [NAME],
        "get": {"summary": "observed state: down, or the administrative state",
                "responses": {"200": {"description": "the state", "content": {
                    "application/json": {"schema": {"type": "object",
                                                    "properties": {"state": string()}}},
                    "text/plain": {"schema": string()}}}, **ERRORS}},
        "put": {"summary": "enabled | disabled (no new VMs) "
                           "| maintenance (no new VMs, and its VMs leave)",
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "required": ["state"],
                                                    "properties": {
                                                        "state": string(enum=list(HOST_STATES))}}},
                    "text/plain": {"schema": string()}}},
                "responses": {"200": json_answer(ref("HostStateChange")), **ERRORS}},
    },
    "/v1/hosts/{name}/{file}": {
        "parameters": [NAME, {"name": "file", "in": "path", "required": True,
                              "schema": string(enum=[f for f in HOST_FILES if f != "state"])}],
        "get": {"summary": "a file of the host directory, as in the mount",
                "responses": {"200": {"description": "the file", "content": {
                    "application/json": {"schema": ref("Host")},
                    "text/plain": {"schema": string()}}},
                    **ERRORS}},
    },
    "/v1/groups": {
        "get": {"summary": "server groups and their members",
                "responses": {"200": json_answer(list_of(ref("Group"))), **ERRORS}},
        "post": {"summary": "create a server group",
                 "requestBody": {"required": True,
                                 "content": {"application/json": {"schema": ref("GroupCreate")}}},
                 "responses": {"201": json_answer(ref("Group"), "created"), **ERRORS}},
    },
    "/v1/groups/{name}": {
        "parameters": [NAME],
        "get": {"summary": "one server group",
                "responses": {"200": json_answer(ref("Group")), **ERRORS}},
        "patch": {"summary": "change a server group's firewall rules (its members' filters "
                             "take them at once)",
                  "requestBody": {"required": True, "content": {
                      "application/json": {"schema": ref("GroupChange")}}},
                  "responses": {"200": json_answer(ref("Group")), **ERRORS}},
        "delete": {"summary": "delete a server group without members",
                   "responses": {"204": {"description": "deleted"}, **ERRORS}},
    },
}

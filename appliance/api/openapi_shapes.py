"""The OpenAPI document's rebuild (issue 14: merged into openapi.py's SCHEMAS and
PATHS); suspend and shelve are verbs of .../state (openapi_vms.py)."""
from __future__ import annotations

from typing import Any

from appliance.api.openapi_shared import ERROR, IF_MATCH, NAME, WAIT, json_answer, ref, string
from appliance.api.openapi_vms import CHANGE_ERRORS, write_responses
from appliance.service.shapes import MAX_IMAGE_NAME

SCHEMAS: dict[str, Any] = {
    "Rebuild": {
        "type": "object", "additionalProperties": False,
        "description": "the image the root disk is made from again (absent or null: the "
                       "VM's own); the VM keeps its name, MAC, addresses and data disks, "
                       "gets a new cloud-init instance id, and is refused while it has "
                       "snapshots, is suspended or shelved",
        "properties": {"image": string(nullable=True, maxLength=MAX_IMAGE_NAME)},
    },
}

PATHS: dict[str, Any] = {
    "/v1/vms/{name}/rebuild": {
        "parameters": [NAME],
        "get": {"summary": "the image a rebuild uses (the VM's own), as the mount's file",
                "responses": {"200": {"description": "the image", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "rebuild": string()}}},
                    "text/plain": {"schema": string()}}},
                    "404": {**ERROR, "description": "no such VM"}}},
        "put": {"summary": "rebuild from this image (an empty one: its own), as "
                           "`echo IMAGE > vms/NAME/rebuild`",
                "parameters": [*WAIT, IF_MATCH],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "rebuild": string(nullable=True, maxLength=MAX_IMAGE_NAME)}}},
                    "text/plain": {"schema": string(maxLength=MAX_IMAGE_NAME)}}},
                "responses": write_responses(json_answer(ref("VM")))},
        "post": {"summary": "rebuild (Nova's): stop a running VM, make its root disk again "
                            "from the image, start it; cloud-init runs again",
                 "parameters": [*WAIT, IF_MATCH],
                 "requestBody": {"required": False, "content": {
                     "application/json": {"schema": ref("Rebuild")}}},
                 "responses": {"200": json_answer(ref("VM"), "rebuilt"),
                               "202": json_answer(ref("Accepted"), "accepted (wait=false)"),
                               **CHANGE_ERRORS}},
    },
}

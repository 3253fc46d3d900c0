"""The JSON Schema of the spec model, as OpenAPI 3.0 components.

/v1/openapi.json (appliance/api/openapi.py) takes its Spec, CreateVM, Network,
PortForward, Disk, CloudInit and Probe schemas (and the enums they use) from
here, so the document says what the validator does. pydantic writes JSON
Schema 2020-12; OpenAPI 3.0 wants `nullable` instead of a `null` type and
`enum` instead of `const`, which `_openapi30` rewrites.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from appliance.model.spec import Spec
from appliance.model.states import DesiredState
from appliance.model.values import DNS_LABEL, anchored

REF = "#/components/schemas/{model}"


def _nullable(schema: dict[str, Any], others: list[dict[str, Any]]) -> dict[str, Any]:
    if len(others) != 1:
        return {**schema, "anyOf": others, "nullable": True}
    inner = others[0]
    # A $ref takes no siblings in OpenAPI 3.0: wrap it in allOf to make it nullable.
    merged = {"allOf": [inner]} if "$ref" in inner else dict(inner)
    return {**merged, **schema, "nullable": True}


def _openapi30(node: Any) -> Any:
    if isinstance(node, list):
        return [_openapi30(item) for item in node]
    if not isinstance(node, dict):
        return node
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key == "title":
            continue  # pydantic's "Port Forwards" and the like: the names say it already
        if key == "properties":
            out[key] = {name: _openapi30(schema) for name, schema in value.items()}
        elif key == "const":
            out["enum"] = [value]
        else:
            out[key] = _openapi30(value)
    options = out.get("anyOf")
    if options and {"type": "null"} in options:
        rest = {key: value for key, value in out.items() if key != "anyOf"}
        return _nullable(rest, [option for option in options if option != {"type": "null"}])
    if "$ref" in out and len(out) > 1:  # a default or description beside a $ref would be ignored
        return {"allOf": [{"$ref": out.pop("$ref")}], **out}
    return out


def spec_components() -> dict[str, dict[str, Any]]:
    """Spec and the schemas it refers to, and CreateVM (a Spec with how to create it)."""
    spec = Spec.model_json_schema(ref_template=REF)
    parts = spec.pop("$defs", {})
    # No field of a body is required on its own: a PATCH merges into the stored
    # spec and a create fills in its template (CreateVM requires the name). The
    # top level stays open so that CreateVM can add its own fields with allOf;
    # the validator refuses an unknown field all the same.
    spec.pop("required", None)
    spec.pop("additionalProperties", None)
    components = {name: _openapi30(schema) for name, schema in parts.items()}
    components["Spec"] = _openapi30(spec)
    components["CreateVM"] = {
        "allOf": [
            {"$ref": REF.format(model="Spec")},
            {
                "type": "object",
                "required": ["name"],
                "properties": {
                    "state": {
                        "type": "string",
                        "enum": [DesiredState.RUNNING.value, DesiredState.STOPPED.value],
                        "description": "stopped: create without starting it",
                    },
                    "template": {
                        "type": "string",
                        "description": (
                            "the template whose fields fill in the rest (GET /v1/templates; "
                            "default when not named); the VM records its name and revision"),
                    },
                    "host": {
                        "type": "string",
                        "pattern": anchored(DNS_LABEL),
                        "description": (
                            "place it on this host (the scheduler's filters still apply)"
                        ),
                    },
                },
            },
        ]
    }
    return components


def model_components(*models: type[BaseModel]) -> dict[str, dict[str, Any]]:
    """The OpenAPI 3.0 schemas of request bodies defined as models (and what they refer to)."""
    components: dict[str, dict[str, Any]] = {}
    for model in models:
        schema = model.model_json_schema(ref_template=REF)
        for name, part in schema.pop("$defs", {}).items():
            components[name] = _openapi30(part)
        components[model.__name__] = _openapi30(schema)
    return components

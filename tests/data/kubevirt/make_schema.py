"""Rebuild virtualmachine.schema.json from the npm package @kubevirt-ui/kubevirt-api.

The package is openapi-generator's TypeScript from KubeVirt's (and CDI's and
Kubernetes') published OpenAPI documents: one file per definition, an
`export interface` whose members keep each property's JSON name, its type and
whether the definition requires it (no `?`), and an `export enum` for each
property the document gives an enum. This script reads those files back into
a JSON Schema (draft 2020-12) for kubevirt.io/v1 VirtualMachine, with
`additionalProperties: false` on every object, so that a misspelt or misplaced
field is an error, as the API server's structural schema makes it.

    npm pack @kubevirt-ui/kubevirt-api@1.4.0
    tar xzf kubevirt-ui-kubevirt-api-1.4.0.tgz
    python tests/data/kubevirt/make_schema.py package > tests/data/kubevirt/virtualmachine.schema.json
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

DIRS = ("kubevirt/models", "containerized-data-importer/models", "kubernetes/models")
ROOT = "V1VirtualMachine"
MEMBER = re.compile(r"^  (?P<name>'[^']+'|[A-Za-z0-9_$]+)(?P<opt>\??): (?P<type>.+);$")
ENUM = re.compile(r"^export enum (?P<name>\w+) \{$")
ENUM_VALUE = re.compile(r"^  \w+ = (?P<value>'[^']*'|-?\d+),?$")
# openapi-generator's TypeScript has no type for Kubernetes' int-or-string and leaves
# those properties out of its interfaces; the two a VirtualMachine's probes use are put
# back as the published document has them (x-kubernetes-int-or-string: integer or string).
INT_OR_STRING = {"K8sIoApiCoreV1TCPSocketAction": ("port", True),
                 "K8sIoApiCoreV1HTTPGetAction": ("port", True)}
SCALARS = {"string": {"type": "string"}, "number": {"type": "number"},
           "boolean": {"type": "boolean"}, "object": {}, "any": {}}


class Reader:
    def __init__(self, package: Path):
        self.package = package
        self.defs: dict[str, dict] = {}
        self.enums: dict[str, list] = {}

    def _file(self, name: str) -> Path:
        for folder in DIRS:
            path = self.package / folder / f"{name}.ts"
            if path.exists():
                return path
        raise SystemExit(f"no definition {name}")

    def type_schema(self, text: str, owner: Path) -> dict:
        text = text.strip()
        if text in SCALARS:
            return dict(SCALARS[text])
        if text.startswith("Array<") and text.endswith(">"):
            return {"type": "array", "items": self.type_schema(text[6:-1], owner)}
        if text.startswith("{ [key: string]: ") and text.endswith(" }"):
            return {"type": "object",
                    "additionalProperties": self.type_schema(text[17:-2], owner)}
        if text in self._enums_of(owner):
            return {"enum": self._enums_of(owner)[text]}
        self.define(text)
        return {"$ref": f"#/$defs/{text}"}

    def _enums_of(self, path: Path) -> dict[str, list]:
        key = str(path)
        if key not in self.enums:
            found: dict[str, list] = {}
            current: str | None = None
            for line in path.read_text().splitlines():
                if (start := ENUM.match(line)):
                    current = start["name"]
                    found[current] = []
                elif current and (value := ENUM_VALUE.match(line)):
                    found[current].append(json.loads(value["value"].replace("'", '"')))
                elif line.startswith("}"):
                    current = None
            self.enums[key] = found  # type: ignore[assignment]
        return self.enums[key]  # type: ignore[return-value]

    def define(self, name: str) -> None:
        if name in self.defs:
            return
        self.defs[name] = {}  # a placeholder while its members are read (recursion)
        path = self._file(name)
        lines = path.read_text().splitlines()
        start = lines.index(f"export interface {name} {{")
        properties: dict[str, dict] = {}
        required: list[str] = []
        for line in lines[start + 1:]:
            if line == "}":
                break
            member = MEMBER.match(line)
            if member is None:
                continue
            prop = member["name"].strip("'")
            properties[prop] = self.type_schema(member["type"], path)
            if not member["opt"]:
                required.append(prop)
        if name in INT_OR_STRING:
            prop, needed = INT_OR_STRING[name]
            properties[prop] = {"type": ["integer", "string"]}
            if needed:
                required.append(prop)
        schema: dict = {"type": "object", "properties": properties,
                        "additionalProperties": False}
        if required:
            schema["required"] = required
        self.defs[name] = schema


def main(package: str) -> None:
    reader = Reader(Path(package))
    reader.define(ROOT)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "kubevirt.io/v1 VirtualMachine",
        "$ref": f"#/$defs/{ROOT}",
        "$defs": dict(sorted(reader.defs.items())),
    }
    json.dump(schema, sys.stdout, indent=1, sort_keys=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])

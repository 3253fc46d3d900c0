"""groups/NAME.json and networks/NAME.json in the mount: a server group's or a
network's JSON, made by writing its file (the shell's O_CREAT makes an empty
writable file first: the tree's new_files), removed by rm (EBUSY while VMs use
it). Moved out of fs/tree.py beside fs/template_files.py, which serves
templates/ the same way."""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from appliance import errors, jsonio
from appliance.files import json_text
from fs.nodes import Node, Path, file_node, json_name

if TYPE_CHECKING:
    from appliance.service import Service


@dataclasses.dataclass(frozen=True)
class Kind:
    """What a directory of NAME.json files holds: the service's calls for it."""

    what: str  # "group", "network": the file's name says its NAME
    example: str  # a body, for the refusal of one that is not an object
    get: Callable[[Service, str], dict]
    listed: Callable[[Service], list[dict]]
    create: Callable[[Service, dict], Any]
    delete: Callable[[Service, str], Any]


GROUPS = Kind("server group", '{"policy": "anti-affinity"}', lambda s, n: s.get_group(n),
              lambda s: s.list_groups(), lambda s, b: s.create_group(b),
              lambda s, n: s.delete_group(n))
NETWORKS = Kind("network", '{"kind": "nat", "subnet": "10.20.0.0/24"}',
                lambda s, n: s.get_network(n), lambda s: s.list_networks(),
                lambda s, b: s.create_network(b), lambda s, n: s.delete_network(n))


class GroupFiles:
    def __init__(self, service: Service, new_files: dict[Path, float], kind: Kind = GROUPS,
                 top: str = "groups"):
        self.service = service
        self.new_files = new_files  # the tree's: files made by create, not yet written
        self.kind = kind
        self.top = top  # the directory: new_files holds the other directories' too

    def group(self, file: str) -> dict:
        return self.kind.get(self.service, json_name(file, self.kind.what))

    def exists(self, file: str) -> bool:
        try:
            self.group(file)
        except errors.NotFound:
            return False
        return True

    def stat(self, path: Path) -> Node:
        made = self.new_files.get(path)
        if made is not None and not self.exists(path[1]):
            return Node(False, writable=True, created=made, changed=made)
        group = self.group(path[1])
        return file_node(json_text(group).encode(), group["created"], group["created"])

    def entries(self) -> list[tuple[str, Node]]:
        entries = [(f"{g['name']}.json",
                    file_node(json_text(g).encode(), g["created"], g["created"]))
                   for g in self.kind.listed(self.service)]
        known = {name for name, _ in entries}
        return entries + [(p[1], Node(False, writable=True, created=made, changed=made))
                          for p, made in list(self.new_files.items())
                          if p[0] == self.top and p[1] not in known]

    def content(self, path: Path) -> str:
        fresh = path in self.new_files and not self.exists(path[1])
        return "" if fresh else json_text(self.group(path[1]))

    def remove(self, path: Path) -> None:
        self.kind.delete(self.service, json_name(path[1], self.kind.what))

    def create(self, file: str, text: str) -> None:
        if not file.endswith(".json"):
            raise errors.Invalid(f"a {self.kind.what}'s file is NAME.json", "name")
        name = file[: -len(".json")]
        try:
            body = jsonio.loads(text)
        except ValueError as err:
            raise errors.Invalid(f"not JSON: {err}", file) from None
        if not isinstance(body, dict):
            raise errors.Invalid(f"must be a JSON object such as {self.kind.example}", file)
        if body.get("name", name) != name:
            raise errors.Invalid(f"the {self.kind.what} is named by its file, {name!r}", "name")
        self.kind.create(self.service, {**body, "name": name})

"""groups/NAME.json in the mount: a server group's JSON, made by writing its
file (the shell's O_CREAT makes an empty writable file first: the tree's
new_files), removed by rm. Moved out of fs/tree.py beside fs/template_files.py,
which serves templates/ the same way."""
from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import errors, jsonio
from appliance.files import json_text
from fs.nodes import Node, Path, file_node, json_name

if TYPE_CHECKING:
    from appliance.service import Service


class GroupFiles:
    def __init__(self, service: Service, new_files: dict[Path, float]):
        self.service = service
        self.new_files = new_files  # the tree's: files made by create, not yet written

    def group(self, file: str) -> dict:
        return self.service.get_group(json_name(file, "group"))

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
                   for g in self.service.list_groups()]
        known = {name for name, _ in entries}
        return entries + [(p[1], Node(False, writable=True, created=made, changed=made))
                          for p, made in list(self.new_files.items()) if p[1] not in known]

    def content(self, path: Path) -> str:
        fresh = path in self.new_files and not self.exists(path[1])
        return "" if fresh else json_text(self.group(path[1]))

    def remove(self, path: Path) -> None:
        self.service.delete_group(json_name(path[1], "group"))

    def create(self, file: str, text: str) -> None:
        if not file.endswith(".json"):
            raise errors.Invalid("a server group's file is NAME.json", "name")
        name = file[: -len(".json")]
        try:
            body = jsonio.loads(text)
        except ValueError as err:
            raise errors.Invalid(f"not JSON: {err}", file) from None
        if not isinstance(body, dict):
            raise errors.Invalid('must be a JSON object such as {"policy": "anti-affinity"}', file)
        if body.get("name", name) != name:
            raise errors.Invalid(f"the group is named by its file, {name!r}", "name")
        self.service.create_group({**body, "name": name})

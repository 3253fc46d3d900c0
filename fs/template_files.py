"""The mount's templates/: one file NAME.json per template the caller's project sees
(the built-in default, the global ones, its own), holding the template's spec: what
a create naming it starts from (GET /v1/templates/NAME's `spec`; its revision and
owner are there too).

    cp small.json templates/        creates the project's template `small`
    echo '{"cpus": 2}' > templates/small.json    replaces its spec (revision + 1)
    rm templates/small.json         deletes it (VMs made from it keep their spec)

A file made in templates/ (the shell's O_CREAT) is an empty writable file until
its JSON is written, as in groups/ (fs/tree.py keeps it in `new_files`). A new
file is always the caller's project's template: a global one is made through
REST or `vmctl template create --global`, and changed here by an admin's write.
A file is writable when the caller may change that template: not the built-in
default, and a global one only for an admin (others get EACCES at open).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from appliance import errors, jsonio
from appliance.access import caller
from appliance.files import json_text
from fs.nodes import Node, Path, file_node, json_name

if TYPE_CHECKING:
    from appliance.service import Service

TOP = "templates"


class TemplateFiles:
    def __init__(self, service: Service, new_files: dict[Path, float]):
        self.service = service
        self.new_files = new_files  # the tree's: files made by create, not yet written

    @staticmethod
    def _node(template: dict) -> Node:
        changeable = not template["builtin"] and (not template["global"] or caller().is_admin)
        created = template["created"] or 0.0
        return file_node(json_text(template["spec"]).encode(), created,
                         template["updated"] or created, writable=changeable)

    def _template(self, file: str) -> dict:
        return self.service.get_template(json_name(file, "template"))

    def exists(self, file: str) -> bool:
        try:
            self._template(file)
        except errors.NotFound:
            return False
        return True

    def _fresh(self, path: Path) -> bool:
        """Made by create and not written yet (no template of that name)."""
        return path in self.new_files and not self.exists(path[1])

    def stat(self, path: Path) -> Node:
        if self._fresh(path):
            made = self.new_files[path]
            return Node(False, writable=True, created=made, changed=made)
        return self._node(self._template(path[1]))

    def entries(self) -> list[tuple[str, Node]]:
        listed = [(f"{t['name']}.json", self._node(t)) for t in self.service.list_templates()]
        known = {name for name, _ in listed}
        return listed + [(p[1], Node(False, writable=True, created=made, changed=made))
                         for p, made in list(self.new_files.items())
                         if p[0] == TOP and p[1] not in known]

    def content(self, path: Path) -> str:
        return "" if self._fresh(path) else json_text(self._template(path[1])["spec"])

    def write(self, path: Path, text: str) -> None:
        """The file's JSON is the template's whole spec: a new name creates the
        project's template, a known one is replaced (its description kept)."""
        name = json_name(path[1], "template")
        try:
            spec = jsonio.loads(text)
        except ValueError as err:
            raise errors.Invalid(f"not JSON: {err}", path[1]) from None
        if self.exists(path[1]):
            self.service.change_template(name, {"spec": spec}, replace=True)
        else:
            self.service.create_template({"name": name, "spec": spec})

    def remove(self, path: Path) -> None:
        self.service.delete_template(json_name(path[1], "template"))

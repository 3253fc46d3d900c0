"""The template records (schema v8's `templates`): a name, an owner (a project, or
'' for a global template), a revision and a partial spec as JSON.

A project sees the global templates and its own; the service keeps a name
unique among what one project sees (appliance/service/templates.py)."""

from __future__ import annotations

import json

from appliance.store.base import Row, StoreBase

GLOBAL = ""  # the `project` of a global template


def _decode(row: Row) -> Row:
    row = dict(row)
    row["spec"] = json.loads(row["spec"])
    return row


class TemplateRecords(StoreBase):
    def list_templates(self, project: str) -> list[Row]:
        """The global templates and the project's, by name."""
        rows = self._rows("templates", "project IN (?, ?)", [GLOBAL, project],
                          order_by="name, project")
        return [_decode(r) for r in rows]

    def find_template(self, project: str, name: str) -> Row | None:
        """The template of this name the project sees (its own first), or None."""
        rows = self._rows("templates", "project IN (?, ?) AND name = ?", [GLOBAL, project, name],
                          order_by="project DESC", limit=1)
        return _decode(rows[0]) if rows else None

    def projects_with_template(self, name: str) -> list[str]:
        """The projects (not global) owning a template of this name."""
        rows = self.db.execute(
            "SELECT project FROM templates WHERE name = ? AND project != ? ORDER BY project",
            [name, GLOBAL]).fetchall()
        return [r[0] for r in rows]

    def count_templates(self, project: str) -> int:
        """How many templates one owner has (GLOBAL: the global ones)."""
        row = self.db.execute("SELECT count(*) FROM templates WHERE project = ?",
                              [project]).fetchone()
        return int(row[0])

    def insert_template(self, row: Row) -> None:
        self.db.table("templates").insert({**row, "spec": json.dumps(row["spec"])})

    def update_template(self, template_id: str, spec: dict[str, object], description: str,
                        revision: int, updated: float) -> None:
        self._update("templates", "id", template_id, {
            "spec": json.dumps(spec), "description": description, "revision": revision,
            "updated": updated})

    def delete_template(self, template_id: str) -> None:
        self.db.execute("DELETE FROM templates WHERE id = ?", [template_id])

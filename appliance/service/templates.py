"""Templates: named VM shapes (Nova's flavors, KubeVirt's instancetypes), each a
partial spec without a name that a create fills in (`"template": NAME`).

Who owns what: a global template is the admins' to create, change and delete;
a project's template is its operators' (VM_CHANGE in that project). A project
sees the global templates and its own. A name is unique among what a project
sees: a project template cannot take a global template's name, nor a global
template a name some project already uses (409 both ways), so a name always
means one template and a create never depends on which one wins.

`default` is built in, global and read-only: what `mkdir vms/NAME` and a create
naming no template get, and what every other template's missing fields are.

A VM records the template's name and revision it was made from; its spec is a
copy. Changing a template (revision + 1) or deleting it (allowed while VMs were
made from it, as Nova deletes flavors) never changes a VM.
"""

from __future__ import annotations

import json
from typing import Any

from appliance import jsonio
from appliance import spec as specs
from appliance.access import caller
from appliance.access.policy import Action, check
from appliance.errors import Conflict, Forbidden, Invalid, NotFound, PreconditionFailed, TooLarge
from appliance.model import DEFAULT_CPUS, DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, DEFAULT_NETWORK_TYPE
from appliance.service import raw_xml
from appliance.service.base import ServiceBase
from appliance.service.projects import validate_description
from appliance.store import Row
from appliance.store.templates import GLOBAL

# The built-in default template: `mkdir vms/NAME` and a create without image.
DEFAULT_TEMPLATE = {
    "image": DEFAULT_IMAGE,
    "cpus": DEFAULT_CPUS,
    "memory": DEFAULT_MEMORY_MIB,
    "network": {"type": DEFAULT_NETWORK_TYPE.value},
}
BUILTIN = "default"
BUILTIN_REVISION = 1
# Bounds: a template's spec as stored JSON (a VM spec's user data alone may be 64 KiB),
# and how many templates one project, or the global set, may hold.
MAX_TEMPLATE_BYTES = 128 * 1024
MAX_TEMPLATES = 100
CREATE_FIELDS = ("name", "spec", "description", "global")
CHANGE_FIELDS = ("name", "spec", "description", "global")
# The VM name a template's spec is checked with (a template has none of its own).
CHECK_NAME = "template-check"


def _fields(body: Any, known: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise Invalid("the body must be a JSON object", None)
    unknown = sorted(set(body) - set(known))
    if unknown:
        raise Invalid(f"unknown field; known fields are {', '.join(known)}", unknown[0])
    return body


def validate_template_spec(spec: Any) -> dict[str, Any]:
    """The partial spec as stored: the fields given (null ones dropped: the default's),
    each in its normalised form; Invalid naming `spec.FIELD` unless the default
    template, this spec and a VM name together pass the Spec."""
    if not isinstance(spec, dict):
        raise Invalid('must be a JSON object: a VM spec without a name, e.g. {"cpus": 2}', "spec")
    if "name" in spec:
        raise Invalid("a template has no name of its own: the create names the VM", "spec.name")
    if len(json.dumps(spec)) > MAX_TEMPLATE_BYTES:
        raise TooLarge(f"a template's spec is at most {MAX_TEMPLATE_BYTES} bytes", "spec")
    given = {key: value for key, value in spec.items() if value is not None}
    try:
        full = specs.validate({**DEFAULT_TEMPLATE, **given, "name": CHECK_NAME})
    except Invalid as err:
        raise Invalid(err.reason, f"spec.{err.field}" if err.field else "spec") from None
    return {key: full[key] for key in given}


def builtin_view() -> dict[str, Any]:
    return {"name": BUILTIN, "global": True, "project": None, "builtin": True,
            "revision": BUILTIN_REVISION, "spec": dict(DEFAULT_TEMPLATE),
            "description": "built in: what a create naming no template gets",
            "created": None, "updated": None}


def template_view(row: Row) -> dict[str, Any]:
    return {"name": row["name"], "global": row["project"] == GLOBAL,
            "project": row["project"] or None, "builtin": False, "revision": row["revision"],
            "spec": row["spec"], "description": row["description"] or "",
            "created": row["created"], "updated": row["updated"]}


class Templates(ServiceBase):
    # -- reading -----------------------------------------------------------------------------
    def list_templates(self) -> list[dict[str, Any]]:
        """The built-in default, the global templates and the caller's project's, by name."""
        rows = self.store.list_templates(self._project())
        return sorted([builtin_view(), *map(template_view, rows)], key=lambda t: t["name"])

    def get_template(self, name: str) -> dict[str, Any]:
        if name == BUILTIN:
            return builtin_view()
        return template_view(self._template_row(name))

    def _template_row(self, name: str) -> Row:
        row = self.store.find_template(self._project(), name) if isinstance(name, str) else None
        if row is None:
            raise NotFound(f"no template named {jsonio.shown(name)}", "template")
        return row

    def template_for_create(self, name: Any) -> tuple[dict[str, Any], str, int]:
        """What a create naming the template (None: the default) starts from: the
        default's fields under the template's, and the name and revision the VM records."""
        if name is None or name == BUILTIN:
            return dict(DEFAULT_TEMPLATE), BUILTIN, BUILTIN_REVISION
        row = self._template_row(name)
        return {**DEFAULT_TEMPLATE, **row["spec"]}, row["name"], row["revision"]

    # -- changes -----------------------------------------------------------------------------
    def create_template(self, body: Any) -> dict[str, Any]:
        body = _fields(body, CREATE_FIELDS)
        name = specs.validate_name(body.get("name"), "name")
        is_global = body.get("global", False)
        if not isinstance(is_global, bool):
            raise Invalid("must be true or false", "global")
        owner = GLOBAL if is_global else self._project()
        self._check_owner(owner)
        if "spec" not in body:
            raise Invalid("required: the VM spec, without a name", "spec")
        spec = validate_template_spec(body["spec"])
        raw_xml.admins_only(spec, None, "spec.xml_patches")
        description = validate_description(body.get("description", ""))
        now = self.clock()
        with self.store.transaction():
            self._check_image(spec)
            self._check_name_free(name, owner)
            if self.store.count_templates(owner) >= MAX_TEMPLATES:
                raise Conflict(f"at most {MAX_TEMPLATES} templates "
                               + ("are global" if is_global else "per project"), "name")
            row = {"id": str(self.uuidgen()), "project": owner, "name": name, "revision": 1,
                   "spec": spec, "description": description, "created": now, "updated": now}
            self.store.insert_template(row)
            self._event("template-created", f"template {name} created", owner)
        return template_view(row)

    def change_template(self, name: str, body: Any, replace: bool = False,
                        if_match: int | None = None) -> dict[str, Any]:
        """PUT (replace: the body's spec is the whole template) or PATCH (merge: the
        spec's fields replace the template's, a null removes one); revision + 1 when
        anything changed. `name` and `global` may be repeated, not changed."""
        body = _fields(body, CHANGE_FIELDS)
        with self.store.transaction():
            row = self._template_for_write(name, if_match)
            if body.get("name", row["name"]) != row["name"]:
                raise Invalid("a template cannot be renamed: create another", "name")
            if body.get("global", row["project"] == GLOBAL) != (row["project"] == GLOBAL):
                raise Invalid("a template's owner does not change: create another", "global")
            if replace and "spec" not in body:
                raise Invalid("required: the VM spec, without a name", "spec")
            patch = body.get("spec", {})
            if not replace and not isinstance(patch, dict):
                raise Invalid("must be a JSON object of the fields to change", "spec")
            spec = validate_template_spec(patch if replace else {**row["spec"], **patch})
            raw_xml.admins_only(spec, row["spec"], "spec.xml_patches")
            description = validate_description(body.get("description", row["description"] or ""))
            if spec == row["spec"] and description == (row["description"] or ""):
                return template_view(row)
            self._check_image(spec)
            revision = row["revision"] + 1
            self.store.update_template(row["id"], spec, description, revision, self.clock())
            self._event("template-changed", f"template {name} changed: revision {revision}",
                        row["project"])
            fresh = self.store.find_template(row["project"], name)
        assert fresh is not None  # noqa: S101 - written in this transaction
        return template_view(fresh)

    def delete_template(self, name: str, if_match: int | None = None) -> None:
        """Allowed while VMs were made from it: they keep their spec, and the name and
        revision they record (Nova's flavors)."""
        with self.store.transaction():
            row = self._template_for_write(name, if_match)
            self.store.delete_template(row["id"])
            self._event("template-deleted", f"template {name} deleted (revision "
                        f"{row['revision']}); VMs made from it keep their spec", row["project"])

    # -- the rules ---------------------------------------------------------------------------
    def _template_for_write(self, name: str, if_match: int | None) -> Row:
        if name == BUILTIN:
            raise Forbidden("the built-in template default is read-only; "
                            "create another (POST /v1/templates)", "name")
        row = self._template_row(name)
        self._check_owner(row["project"])
        if if_match is not None and row["revision"] != if_match:
            raise PreconditionFailed(f"revision is {row['revision']}, not {if_match}: the "
                                     "template changed; read it again", "revision")
        return row

    @staticmethod
    def _check_owner(owner: str) -> None:
        """Global templates are the admins'; a project's, its operators' (the policy
        table already asked VM_CHANGE in the caller's project of each route)."""
        check(caller(), Action.ADMIN if owner == GLOBAL else Action.VM_CHANGE)

    def _check_name_free(self, name: str, owner: str) -> None:
        if name == BUILTIN:
            raise Conflict("the built-in template is named default", "name")
        if owner == GLOBAL:
            taken = self.store.projects_with_template(name)
            if taken:
                raise Conflict(f"project {taken[0]} has a template named {name!r}: a global "
                               "template cannot take its name", "name")
        found = self.store.find_template(owner, name)
        if found is not None:
            whose = "a global template" if found["project"] == GLOBAL else "a template"
            raise Conflict(f"{whose} named {name!r} exists", "name")

    def _check_image(self, spec: dict[str, Any]) -> None:
        if "image" in spec and not self.store.image_exists(spec["image"]):
            raise Invalid(f"no image named {spec['image']!r}", "spec.image")

    def _event(self, kind: str, message: str, owner: str) -> None:
        # A global template's events are the appliance's (seen in every project).
        self.store.add_event(kind, message, project=owner or None)

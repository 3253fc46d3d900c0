"""vmctl's template commands: create, list, get, delete (/v1/templates), and the
--template of `vmctl create`."""
from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.output import listing, print_answer, print_json
from appliance.cli.values import new_disk, size
from appliance.client import Client

COLUMNS = [("NAME", "name"), ("OWNER", "owner"), ("REVISION", "revision"), ("CPUS", "cpus"),
           ("MEMORY", "memory"), ("IMAGE", "image"), ("DISKS", "disks"),
           ("DESCRIPTION", "description")]


def add_template_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("template", help="templates: named VM shapes a create starts from")
    templates = p.add_subparsers(dest="action", required=True)
    c = templates.add_parser("create", help="create a template (the project's; --global: "
                                            "everyone's, admins only)")
    c.add_argument("name")
    c.add_argument("--cpus", type=int)
    c.add_argument("--memory", type=size, help="MiB, or 512M / 2G")
    c.add_argument("--disk", action="append", type=new_disk, metavar="NAME=SIZE",
                   help="an extra blank disk, e.g. data=10G (repeat for several)")
    c.add_argument("--image", help="an image's name (without: the default template's)")
    c.add_argument("--description", default=None)
    c.add_argument("--global", dest="is_global", action="store_true",
                   help="a global template, seen in every project (admins)")
    templates.add_parser("list", help="the built-in default, the global templates and the "
                                      "project's")
    templates.add_parser("get", help="one template: its spec and revision").add_argument("name")
    templates.add_parser("delete", help="delete a template (VMs made from it keep their spec)"
                         ).add_argument("name")


def template_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/templates body: only the options given (the rest is the default's)."""
    spec: dict[str, Any] = {}
    for field in ("cpus", "memory", "image"):
        if getattr(args, field) is not None:
            spec[field] = getattr(args, field)
    if args.disk:
        spec["disks"] = args.disk  # dicts (appliance/cli/values.py)
    body: dict[str, Any] = {"name": args.name, "spec": spec}
    if args.description is not None:
        body["description"] = args.description
    if args.is_global:
        body["global"] = True
    return body


def _row(template: dict) -> dict:
    spec = template["spec"]
    owner = "built in" if template["builtin"] else (
        "global" if template["global"] else template["project"])
    disks = ",".join(f"{d['name']}={d['size']}M" for d in spec.get("disks", []))
    return {"name": template["name"], "owner": owner, "revision": template["revision"],
            "cpus": spec.get("cpus", "-"),
            "memory": f"{spec['memory']}M" if "memory" in spec else "-",
            "image": spec.get("image", "-"), "disks": disks or "-",
            "description": template.get("description") or ""}


def cmd_template(client: Client, args: argparse.Namespace) -> int:
    if args.action == "create":
        print_answer(client.request("POST", "/v1/templates", template_body(args)), args.json,
                     lambda made: f"{made['name']}: created (revision {made['revision']})")
        return 0
    if args.action == "list":
        listing(client.get("/v1/templates")["items"], args.json, _row, COLUMNS)
        return 0
    if args.action == "delete":
        client.request("DELETE", f"/v1/templates/{args.name}")
        print(f"{args.name}: deleted")
        return 0
    template = client.get(f"/v1/templates/{args.name}")
    if args.json:
        print_json(template)
        return 0
    row = _row(template)
    for header, key in COLUMNS:
        print(f"{header.lower():<12} {row[key] or '-'}")
    print_json(template["spec"])
    return 0

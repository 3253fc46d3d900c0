"""vmctl's project commands: add, list, show (quota and usage), quota, delete."""
from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.output import print_json, table
from appliance.client import Client
from appliance.quotas import RESOURCES

UNLIMITED = "unlimited"
# --option -> the quota's resource, and what the option takes.
QUOTA_OPTIONS = {"vms": ("vms", "how many VMs"), "cpus": ("cpus", "vCPUs in all"),
                 "memory": ("memory_mib", "memory in all: MiB, or 512M / 16G"),
                 "disk": ("disk_gib", "disk in all: GiB, or 200G / 1T")}


def limit(text: str) -> str | int | None:
    """A limit as the API takes it: `unlimited` is null, digits a number; a size
    with a unit (16G) goes as written (the appliance parses it)."""
    if text.strip().lower() == UNLIMITED:
        return None
    if text.strip().isascii() and text.strip().isdigit():
        return int(text.strip())
    return text


def add_project_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project", help="projects: add, list, show, set a quota, delete")
    projects = p.add_subparsers(dest="action", required=True)
    a = projects.add_parser("add", help="add a project (admin)")
    a.add_argument("name")
    a.add_argument("--description", default="")
    projects.add_parser("list", help="projects with their usage and quota")
    projects.add_parser("show", help="one project: quota and usage").add_argument("name")
    q = projects.add_parser("quota", help="set a project's limits (admin); "
                                          f"'{UNLIMITED}' lifts one, others stay as they are")
    q.add_argument("name")
    for option, (_, helptext) in QUOTA_OPTIONS.items():
        q.add_argument(f"--{option}", type=limit, default=argparse.SUPPRESS,
                       help=f"{helptext}, or {UNLIMITED}")
    projects.add_parser("delete", help="delete an empty project (admin)").add_argument("name")


def _used(project: dict, resource: str) -> str:
    shown = project["quota"][resource]
    return f"{project['usage'][resource]}/{'-' if shown is None else shown}"


def _row(project: dict) -> dict:
    return {"name": project["name"], **{r: _used(project, r) for r in RESOURCES},
            "description": project["description"]}


def _show(project: dict) -> None:
    print(f"name         {project['name']}")
    print(f"description  {project['description'] or '-'}")
    rows = [{"resource": r, "used": project["usage"][r],
             "limit": UNLIMITED if project["quota"][r] is None else project["quota"][r]}
            for r in RESOURCES]
    table(rows, [("RESOURCE", "resource"), ("USED", "used"), ("LIMIT", "limit")])


def _answer(project: dict, args: argparse.Namespace, said: str) -> int:
    if args.json:
        print_json(project)
    elif said:
        print(f"{project['name']}: {said}")
    else:
        _show(project)
    return 0


def cmd_project(client: Client, args: argparse.Namespace) -> int:
    if args.action == "list":
        items = client.get("/v1/projects")["items"]
        if args.json:
            print_json(items)
        else:
            table([_row(p) for p in items],
                  [("NAME", "name"), *((r.upper(), r) for r in RESOURCES),
                   ("DESCRIPTION", "description")])
        return 0
    if args.action == "add":
        body = {"name": args.name, "description": args.description}
        return _answer(client.request("POST", "/v1/projects", body), args, "added")
    if args.action == "delete":
        client.request("DELETE", f"/v1/projects/{args.name}")
        print(f"{args.name}: deleted")
        return 0
    if args.action == "quota":
        quota: dict[str, Any] = {resource: getattr(args, option)
                                 for option, (resource, _) in QUOTA_OPTIONS.items()
                                 if hasattr(args, option)}
        if quota:
            client.request("PATCH", f"/v1/projects/{args.name}", {"quota": quota})
    return _answer(client.get(f"/v1/projects/{args.name}"), args, "")

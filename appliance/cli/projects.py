"""vmctl's project commands: add, list, show (quota, usage, backup policy), quota,
backup, delete."""
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
# --option of `project backup` -> the policy's field (appliance/model/backup_policy.py)
BACKUP_OPTIONS = {"schedule": str, "target": str, "keep_last": int, "keep_hourly": int,
                  "keep_daily": int, "keep_weekly": int, "keep_monthly": int, "full_every": int}


def limit(text: str) -> str | int | None:
    """A limit as the API takes it: `unlimited` is null, digits a number; a size
    with a unit (16G) goes as written (the appliance parses it)."""
    if text.strip().lower() == UNLIMITED:
        return None
    if text.strip().isascii() and text.strip().isdigit():
        return int(text.strip())
    return text


def add_project_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("project",
                       help="projects: add, list, show, set a quota or a backup policy, delete")
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
    b = projects.add_parser("backup", help="set the backup policy of the project's VMs that have "
                                           "none of their own (admin); it is replaced whole")
    b.add_argument("name")
    b.add_argument("--schedule", help="hourly, 'daily HH:MM', 'weekly DAY HH:MM' (mon..sun) or "
                                      "'monthly D HH:MM', UTC")
    b.add_argument("--target", help="the backup target (default: the only one)")
    for field, kind in BACKUP_OPTIONS.items():
        if field.startswith("keep_") or field == "full_every":
            b.add_argument("--" + field.replace("_", "-"), dest=field, type=kind)
    b.add_argument("--none", action="store_true", help="remove the project's policy")
    projects.add_parser("delete", help="delete an empty project (admin)").add_argument("name")


def _used(project: dict, resource: str) -> str:
    shown = project["quota"][resource]
    return f"{project['usage'][resource]}/{'-' if shown is None else shown}"


def _row(project: dict) -> dict:
    return {"name": project["name"], **{r: _used(project, r) for r in RESOURCES},
            "description": project["description"]}


def policy_text(policy: dict | None) -> str:
    """One line: `daily 02:00 -> nas, keep_daily 7, full_every 6`."""
    if not policy:
        return "-"
    when = policy.get("schedule") or "manual backups only"
    where = f" -> {policy['target']}" if policy.get("target") else ""
    rest = [f"{k} {policy[k]}" for k in BACKUP_OPTIONS if k.startswith("keep_") and
            policy.get(k) is not None] + [f"full_every {policy.get('full_every')}"]
    return f"{when}{where}, {', '.join(rest)}"


def _show(project: dict) -> None:
    print(f"name         {project['name']}")
    print(f"description  {project['description'] or '-'}")
    print(f"backup       {policy_text(project.get('backup'))}")
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
    if args.action == "backup":
        policy = {field: getattr(args, field) for field in BACKUP_OPTIONS
                  if getattr(args, field) is not None}
        if args.none or policy:
            client.request("PATCH", f"/v1/projects/{args.name}",
                           {"backup": None if args.none else policy})
    return _answer(client.get(f"/v1/projects/{args.name}"), args, "")

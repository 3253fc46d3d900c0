"""vmctl's replica pool commands (KubeVirt's VirtualMachinePool): pool create, list,
get, scale, pause, resume, delete, through /v1/pools."""
from __future__ import annotations

import argparse
from typing import Any

from appliance.cli.output import listing, pair, print_json, table
from appliance.cli.values import count, new_disk, size
from appliance.client import Client
from appliance.model import DEFAULT_CPUS, DEFAULT_IMAGE, DEFAULT_MEMORY_MIB, RUN_STRATEGIES


def add_pool_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pool", help="replica pools: N VMs NAME-0... of one template, kept, "
                                    "scaled and updated one at a time")
    pools = p.add_subparsers(dest="action", required=True)
    c = pools.add_parser("create", help="create a pool (its members follow)")
    c.add_argument("name")
    c.add_argument("--template", help="a template's name the members' spec starts from")
    c.add_argument("--image", help=f"an image's name (default {DEFAULT_IMAGE})")
    c.add_argument("--cpus", type=int, help=f"vCPUs (default {DEFAULT_CPUS})")
    c.add_argument("--memory", type=size,
                   help=f"MiB, or 512M / 2G (default {DEFAULT_MEMORY_MIB})")
    c.add_argument("--disk", action="append", type=new_disk, metavar="NAME:SIZE",
                   help="an extra blank disk, e.g. data:10G")
    c.add_argument("--run-strategy", dest="run_strategy", choices=list(RUN_STRATEGIES),
                   help="Halted: members are made stopped")
    c.add_argument("--label", action="append", type=pair, help="KEY=VALUE")
    c.add_argument("--replicas", type=count, default=0, help="how many members (default 0)")
    c.add_argument("--group", help="a server group the members join (vmctl group create)")
    c.add_argument("--paused", action="store_true", help="template changes wait for resume")
    pools.add_parser("list", help="pools with their replicas, ready and updated members")
    pools.add_parser("get", help="one pool: template, status, members").add_argument("name")
    s = pools.add_parser("scale", help="set the number of members")
    s.add_argument("name")
    s.add_argument("replicas", type=count)
    pools.add_parser("pause", help="pause the roll-out of template changes").add_argument("name")
    pools.add_parser("resume", help="resume the roll-out").add_argument("name")
    pools.add_parser("delete", help="delete a pool and its members").add_argument("name")


def template_body(args: argparse.Namespace) -> dict[str, Any]:
    """The members' spec from the options given (a named template's fields under them)."""
    template: dict[str, Any] = {}
    for field in ("template", "image", "cpus", "memory", "run_strategy"):
        value = getattr(args, field)
        if value is not None:
            template[field] = value
    if args.disk:
        template["disks"] = args.disk  # dicts (appliance/cli/values.py)
    if args.label:
        template["labels"] = dict(args.label)
    return template


def _row(pool: dict) -> dict:
    status = pool["status"]
    return {"name": pool["name"], "replicas": f"{status['current_replicas']}/{pool['replicas']}",
            "ready": status["ready_replicas"], "updated": status["updated_replicas"],
            "revision": pool["revision"], "paused": "yes" if pool["paused"] else "no",
            "rollout": (status["rollout"] or {}).get("member") or "-",
            "message": status["message"] or "-"}


COLUMNS = [("NAME", "name"), ("REPLICAS", "replicas"), ("READY", "ready"),
           ("UPDATED", "updated"), ("REVISION", "revision"), ("PAUSED", "paused"),
           ("ROLLOUT", "rollout"), ("MESSAGE", "message")]


def _show(pool: dict, args: argparse.Namespace) -> int:
    if args.json:
        print_json(pool)
        return 0
    table([_row(pool)], COLUMNS)
    members = pool["status"]["members"]
    if members:
        print()
        table(members, [("MEMBER", "name"), ("STATE", "state"), ("READY", "ready"),
                        ("REVISION", "revision"), ("HOST", "host")])
    if pool["status"]["skipped"]:
        print(f"skipped (held by VMs not of the pool): {', '.join(pool['status']['skipped'])}")
    return 0


def cmd_pool(client: Client, args: argparse.Namespace) -> int:
    path = f"/v1/pools/{getattr(args, 'name', '')}"
    if args.action == "list":
        listing(client.get("/v1/pools")["items"], args.json, _row, COLUMNS)
        return 0
    if args.action == "create":
        body = {"name": args.name, "template": template_body(args), "replicas": args.replicas,
                "paused": args.paused}
        if args.group:
            body["group"] = args.group
        return _show(client.request("POST", "/v1/pools", body), args)
    if args.action == "delete":
        client.request("DELETE", path)
        print(f"{args.name}: deleted with its members")
        return 0
    changes = {"scale": {"replicas": getattr(args, "replicas", 0)}, "pause": {"paused": True},
               "resume": {"paused": False}}.get(args.action)
    if changes is not None:
        return _show(client.request("PATCH", path, changes), args)
    return _show(client.get(path), args)

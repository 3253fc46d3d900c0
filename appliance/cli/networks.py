"""vmctl network list | show | add | rm: the appliance's networks (issue 15),
through /v1/networks."""
from __future__ import annotations

import argparse

from appliance.cli.output import print_answer, print_json, table
from appliance.cli.values import dhcp_range
from appliance.client import Client
from appliance.model.networks import NETWORK_KINDS, NetworkKind

COLUMNS = [("NAME", "name"), ("KIND", "kind"), ("SUBNET", "subnet"), ("DHCP", "dhcp"),
           ("DOMAIN", "domain"), ("BRIDGE", "bridge"), ("VMS", "vms")]


def add_network_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("network", help="networks the appliance manages: nat, isolated, bridge")
    networks = p.add_subparsers(dest="action", required=True)
    networks.add_parser("list", help="the project's networks and their VMs")
    networks.add_parser("show", help="one network (JSON)").add_argument("name")
    a = networks.add_parser("add", help="create a network (a VM joins it with "
                                        "--network network:NAME)")
    a.add_argument("name")
    a.add_argument("--kind", choices=list(NETWORK_KINDS), default=NetworkKind.NAT.value,
                   help="nat (default): NAT to the outside; isolated: guests and the host "
                        "only; bridge: an existing host bridge (admins)")
    a.add_argument("--subnet", help="nat, isolated: a private IPv4 subnet, e.g. 10.20.0.0/24")
    a.add_argument("--dhcp", metavar="START-END", type=dhcp_range,
                   help="the DHCP range (default: the subnet's upper half)")
    a.add_argument("--domain", help="the guests' DNS domain (default: the network's name)")
    a.add_argument("--bridge", help="bridge: the host bridge, e.g. br0")
    networks.add_parser("rm", help="delete a network no VM uses").add_argument("name")


def _body(args: argparse.Namespace) -> dict:
    body: dict = {"name": args.name, "kind": args.kind}
    for field in ("subnet", "domain", "bridge"):
        if getattr(args, field) is not None:
            body[field] = getattr(args, field)
    if args.dhcp is not None:
        start, _, end = args.dhcp.partition("-")
        body["dhcp"] = {"start": start, "end": end or None}
    return body


def _row(net: dict) -> dict:
    dhcp = net.get("dhcp")
    return {**net, "subnet": net.get("subnet") or "-", "domain": net.get("domain") or "-",
            "bridge": net.get("bridge") or "-",
            "dhcp": f"{dhcp['start']}-{dhcp['end']}" if dhcp else "-",
            "vms": ", ".join(net["vms"]) or "-"}


def cmd_network(client: Client, args: argparse.Namespace) -> int:
    if args.action == "add":
        net = client.request("POST", "/v1/networks", _body(args))
        print_answer(net, args.json,
                     lambda n: f"{n['name']}: created ({n['kind']}"
                               + (f" {n['subnet']}, gateway {n['gateway']})" if n["subnet"]
                                  else f" on {n['bridge']})"))
        return 0
    if args.action == "rm":
        client.request("DELETE", f"/v1/networks/{args.name}")
        print(f"{args.name}: deleted")
        return 0
    if args.action == "show":
        print_json(client.get(f"/v1/networks/{args.name}"))
        return 0
    items = client.get("/v1/networks")["items"]
    if args.json:
        print_json(items)
    else:
        table([_row(n) for n in items], COLUMNS)
    return 0

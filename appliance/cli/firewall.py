"""vmctl's firewall options (issue 15): `vmctl create --allow tcp:22:10.0.0.0/8`
and `vmctl firewall NAME` (a VM's rules, or with --group a server group's: shown,
replaced, cleared). Each rule is PROTO[:PORT][:NETWORK]; the appliance checks
them (model/firewall.py), this only splits the text."""
from __future__ import annotations

import argparse
import re
from typing import Any

from appliance.cli.output import print_json
from appliance.client import Client

_PORTS = re.compile(r"[0-9]{1,5}(-[0-9]{1,5})?")
PROTOS = ("tcp", "udp", "icmp", "any")
SYNTAX = "PROTO[:PORT[-PORT]][:NETWORK], e.g. tcp:22, tcp:8000-8100:10.0.0.0/8, icmp"


def _rule(direction: str, text: str) -> dict[str, Any]:
    proto, *rest = text.split(":")
    if proto not in PROTOS or len(rest) > 2:
        raise argparse.ArgumentTypeError(f"{text[:60]!r} is not {SYNTAX}")
    rule: dict[str, Any] = {"direction": direction, "proto": proto}
    for part in rest:
        if _PORTS.fullmatch(part) and "port" not in rule and "." not in part:
            rule["port"] = int(part) if part.isdigit() else part
        elif "." in part and len(part) <= 18:
            rule["from" if direction == "in" else "to"] = part
        else:
            raise argparse.ArgumentTypeError(f"{text[:60]!r} is not {SYNTAX}")
    return rule


def inbound(text: str) -> dict[str, Any]:
    return _rule("in", text)


def outbound(text: str) -> dict[str, Any]:
    return _rule("out", text)


def add_rule_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--allow", action="append", type=inbound, metavar="PROTO[:PORT][:FROM]",
                   help="allow inbound traffic (repeat; with any: inbound is default-deny), "
                        "e.g. tcp:22:10.0.0.0/8")
    p.add_argument("--allow-out", dest="allow_out", action="append", type=outbound,
                   metavar="PROTO[:PORT][:TO]",
                   help="allow outbound traffic (repeat; with any: outbound is default-deny)")


def rules_of(args: argparse.Namespace) -> list[dict[str, Any]] | None:
    """The rules --allow and --allow-out give; None when neither was given."""
    if not (args.allow or args.allow_out):
        return None
    return list(args.allow or []) + list(args.allow_out or [])


def add_firewall_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("firewall", help="a VM's firewall rules (or a server group's, "
                                        "--group): show, replace (--allow...), --clear")
    p.add_argument("name", help="the VM (or with --group, the server group)")
    p.add_argument("--group", action="store_true", help="NAME is a server group: its rules "
                                                        "apply to every member")
    add_rule_options(p)
    p.add_argument("--clear", action="store_true", help="remove every rule (traffic open)")


def _show(rule: dict[str, Any]) -> str:
    peer = rule.get("from") or rule.get("to") or "any"
    port = rule.get("port", "*") if rule["proto"] in ("tcp", "udp") else "-"
    return f"{rule['direction']:<4} {rule['proto']:<5} {port!s:<12} {peer}"


def cmd_firewall(client: Client, args: argparse.Namespace) -> int:
    path = f"/v1/groups/{args.name}" if args.group else f"/v1/vms/{args.name}"
    rules = [] if args.clear else rules_of(args)
    if rules is None:
        found = client.get(path)
        current = found["firewall"] if args.group else found["spec"].get("firewall") or []
    else:
        client.request("PATCH", path, {"firewall": rules}, query={"wait": "false"})
        found = client.get(path)  # the rules as stored (a VM's filter follows at once)
        current = found["firewall"] if args.group else found["spec"]["firewall"]
    if args.json:
        print_json(current)
    elif not current:
        print(f"{args.name}: no rules (traffic open; anti-spoofing on)")
    else:
        print("DIR  PROTO PORT         PEER")
        print("\n".join(_show(r) for r in current))
    return 0


COMMANDS = {"firewall": cmd_firewall}

"""vmctl's host and server-group commands."""
from __future__ import annotations

import argparse
import time
from typing import Any

from appliance.cli import progress
from appliance.cli.output import labels_text, listing, pair, print_answer, print_json, table
from appliance.cli.usage import usage_error
from appliance.cli.values import count, ratio
from appliance.client import Client
from appliance.model import DEFAULT_CPU_RATIO, DEFAULT_DISK_RATIO, DEFAULT_RAM_RATIO, OpStatus

# `vmctl host set`'s options -> PATCH /v1/hosts/NAME's fields (labels are merged apart)
SET_FIELDS = ("uri", "storage", "cpu_ratio", "ram_ratio", "disk_ratio", "migration_address",
              "reserved_memory_mib", "cpu_dedicated_set")

HOST_COLUMNS = [("NAME", "name"), ("STATE", "state"), ("VMS", "vms"), ("CPUS", "cpus"),
                ("MEMORY", "memory"), ("DISK", "disk"), ("STORAGE", "storage"),
                ("LABELS", "labels"), ("URI", "uri")]


def _host_row(host: dict) -> dict:
    """STATE is what placement sees (down, or the administrative state);
    used/capacity after overcommit."""
    used, capacity = host["allocated"], host["capacity"]
    return {"name": host["name"], "state": host["observed_state"], "vms": used["vms"],
            "cpus": f"{used['cpus']}/{capacity['cpus']}",
            "memory": f"{used['memory_mib']}M/{capacity['memory_mib']}M",
            "disk": f"{used['disk_gib']:g}G/{capacity['disk_gib']:g}G",
            "storage": host.get("storage") or "", "labels": labels_text(host.get("labels")),
            "uri": host["uri"]}


def _show_host(host: dict) -> None:
    row = _host_row(host)
    seen = host.get("last_seen")
    last_seen = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen)) if seen else "never"
    lines = [("name", host["name"]), ("uri", host["uri"]), ("state", host["observed_state"]),
             ("admin state", host["state"]), ("last seen", last_seen),
             ("vms", row["vms"]), ("cpus", f"{row['cpus']} (ratio {host['cpu_ratio']:g})"),
             ("memory", (f"{row['memory']} (ratio {host['ram_ratio']:g}, "
                         f"{host.get('reserved_memory_mib') or 0}M reserved)")),
             ("disk", f"{row['disk']} (ratio {host['disk_ratio']:g})"),
             ("storage", row["storage"] or "-"),
             ("migration", host.get("migration_address") or "-"), ("labels", row["labels"] or "-")]
    for label, value in lines:
        print(f"{label:<13} {value}")


def _print_drain(drain: dict) -> None:
    for item in drain.get("migrating", []):
        why = f" ({item['note']})" if item.get("note") else f" (operation {item.get('operation')})"
        print(f"  {item['vm']}: migrating to {item.get('target') or '?'}{why}")
    for item in drain.get("moving", []):
        print(f"  {item['vm']}: moving (stopped) to {item['target']}"
              f" (operation {item['operation']})")
    for item in drain.get("blocked", []):
        print(f"  {item['vm']}: stays: {item['reason']}")


def _list_hosts(client: Client, args: argparse.Namespace) -> int:
    listing(client.get("/v1/hosts")["items"], args.json, _host_row, HOST_COLUMNS)
    return 0


def _show(client: Client, args: argparse.Namespace) -> int:
    host = client.get(f"/v1/hosts/{args.name}")
    if args.json:
        print_json(host)
    else:
        _show_host(host)
    return 0


def _add(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.name, "uri": args.uri}
    for field in ("storage", "cpu_ratio", "ram_ratio", "disk_ratio", "migration_address"):
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    if args.label:
        body["labels"] = dict(args.label)
    # The answer comes once the controller's first connection attempt has finished.
    print_answer(client.request("POST", "/v1/hosts", body), args.json, _added)
    return 0


def _added(host: dict) -> str:
    """`h2: added (URI), enabled` once it answered; else down with the reason
    (`not connected yet` when no attempt finished within the wait); for a qemu+ssh
    host, the host key found (recorded on first use) and the appliance's public key."""
    state = host["observed_state"]
    if host.get("up"):
        line = f"{host['name']}: added ({host['uri']}), {state}"
    else:
        line = f"{host['name']}: added ({host['uri']}), {state}: {host.get('reason') or '?'}"
    return "\n".join([line, *_ssh_lines(host.get("ssh"))])


def _ssh_lines(ssh: dict | None) -> list[str]:
    if not ssh:
        return []
    found = ssh["host_key"]
    how = ("recorded now (trust on first use): compare with `ssh-keygen -lf "
           "/etc/ssh/ssh_host_ed25519_key.pub` on the host" if found["recorded_now"]
           else "matches the recorded key")
    lines = [f"ssh host key of {found['address']} {how}:"]
    lines += [f"  {key['type']} {key['fingerprint']}" for key in found["keys"]]
    return [*lines, "the appliance's public key (for root's ~/.ssh/authorized_keys on the host):",
            f"  {ssh['public_key']}"]


def _set_host_state(client: Client, args: argparse.Namespace) -> int:
    """Exit status 1 when a drain leaves some VMs behind (their reasons are printed).
    On a terminal, the drain's operations are followed to their end with a count of
    the VMs moved (and those that failed, with why: exit status 1 too); piped or with
    --json the answer comes at once, the drain going on (as the API answers)."""
    result = client.request("PUT", f"/v1/hosts/{args.name}/state", {"state": args.state})
    if args.json:
        print_json(result)
        return 0
    print(f"{result['name']}: {result['state']}")
    drain = result.get("drain") or {}
    _print_drain(drain)
    status = 1 if drain.get("blocked") else 0
    vms = {item["operation"]: item["vm"] for key in ("migrating", "moving")
           for item in drain.get(key, []) if item.get("operation")}
    if vms and progress.on_terminal(args):
        for op in progress.follow_all(client, list(vms), f"drain {result['name']}"):
            if op["status"] != OpStatus.SUCCEEDED:
                print(f"  {vms[op['id']]}: {op['kind']} {op['status']}: "
                      f"{op.get('error') or 'no reason given'}")
                status = 1
    return status


def add_host_set(hosts: argparse._SubParsersAction) -> None:
    """vmctl host set NAME --uri/--label/--unset-label/--*-ratio/...: PATCH /v1/hosts/NAME."""
    h = hosts.add_parser("set", help="change a host's URI, labels, storage, overcommit, "
                                     "migration address, reserved memory or dedicated CPUs")
    h.add_argument("name")
    h.add_argument("--uri", help="a new libvirt URI (the same host, reached another way)")
    h.add_argument("--label", action="append", type=pair, metavar="KEY=VALUE",
                   help="set a label (repeat; the host's other labels stay)")
    h.add_argument("--unset-label", dest="unset_label", action="append", metavar="KEY",
                   help="remove a label (repeat)")
    h.add_argument("--storage", help="hosts naming the same storage share VM disks")
    h.add_argument("--cpu-ratio", dest="cpu_ratio", type=ratio, metavar="X",
                   help=f"vCPU overcommit (the default of a new host: {DEFAULT_CPU_RATIO:g})")
    h.add_argument("--ram-ratio", dest="ram_ratio", type=ratio, metavar="X",
                   help=f"RAM overcommit (the default of a new host: {DEFAULT_RAM_RATIO:g})")
    h.add_argument("--disk-ratio", dest="disk_ratio", type=ratio, metavar="X",
                   help=f"disk overcommit (the default of a new host: {DEFAULT_DISK_RATIO:g})")
    h.add_argument("--migration-address", dest="migration_address", metavar="ADDRESS",
                   help="where other hosts reach this one for live migration ('' to unset)")
    h.add_argument("--reserved-memory", dest="reserved_memory_mib", type=count, metavar="MIB",
                   help="memory kept for the host itself, in MiB")
    h.add_argument("--dedicated-cpus", dest="cpu_dedicated_set", metavar="SET",
                   help="host CPUs kept for VMs with --dedicated, e.g. 2-3")


def _set(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {field: getattr(args, field) for field in SET_FIELDS
                            if getattr(args, field) is not None}
    if body.get("migration_address") == "":
        body["migration_address"] = None
    if args.label or args.unset_label:
        labels = dict(client.get(f"/v1/hosts/{args.name}").get("labels") or {})
        labels.update(dict(args.label or []))
        for key in args.unset_label or []:
            labels.pop(key, None)
        body["labels"] = labels
    if not body:
        usage_error("vmctl host set", "nothing to change: give --uri, --label, --cpu-ratio...")
    host = client.request("PATCH", f"/v1/hosts/{args.name}", body)
    if args.json:
        print_json(host)
    else:
        print(f"{host['name']}: {', '.join(sorted(body))} changed")
    return 0


def _remove(client: Client, args: argparse.Namespace) -> int:
    client.request("DELETE", f"/v1/hosts/{args.name}")
    print(f"{args.name}: removed")
    return 0


HOST_ACTIONS = {"list": _list_hosts, "show": _show, "add": _add, "state": _set_host_state,
                "remove": _remove, "set": _set}


def cmd_host(client: Client, args: argparse.Namespace) -> int:
    return HOST_ACTIONS[args.action](client, args)


def cmd_group(client: Client, args: argparse.Namespace) -> int:
    if args.action == "create":
        group = client.request("POST", "/v1/groups", {"name": args.name, "policy": args.policy})
        print_answer(group, args.json, lambda g: f"{g['name']}: created ({g['policy']})")
        return 0
    if args.action == "delete":
        client.request("DELETE", f"/v1/groups/{args.name}")
        print(f"{args.name}: deleted")
        return 0
    items = client.get("/v1/groups")["items"]
    if args.json:
        print_json(items)
    else:
        members = {g["name"]: ", ".join(f"{m['name']}@{m['host'] or '-'}" for m in g["members"])
                   for g in items}
        rows = [{"name": g["name"], "policy": g["policy"], "members": members[g["name"]]}
                for g in items]
        table(rows, [("NAME", "name"), ("POLICY", "policy"), ("MEMBERS", "members")])
    return 0

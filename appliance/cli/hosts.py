"""vmctl's host and server-group commands."""
from __future__ import annotations

import argparse
import time
from typing import Any

from appliance.cli.output import labels_text, listing, print_answer, print_json, table
from appliance.client import Client

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
    """Exit status 1 when a drain leaves some VMs behind (their reasons are printed)."""
    result = client.request("PUT", f"/v1/hosts/{args.name}/state", {"state": args.state})
    if args.json:
        print_json(result)
        return 0
    print(f"{result['name']}: {result['state']}")
    _print_drain(result.get("drain") or {})
    return 1 if (result.get("drain") or {}).get("blocked") else 0


def _remove(client: Client, args: argparse.Namespace) -> int:
    client.request("DELETE", f"/v1/hosts/{args.name}")
    print(f"{args.name}: removed")
    return 0


HOST_ACTIONS = {"list": _list_hosts, "show": _show, "add": _add, "state": _set_host_state,
                "remove": _remove}


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

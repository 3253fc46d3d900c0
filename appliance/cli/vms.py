"""vmctl's VM and image commands: each one REST call (or a poll of one), printed."""
from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

from appliance.access.principal import actor_text
from appliance.cli import firewall
from appliance.cli.output import listing, print_json, print_outcome, table, unfiltered, wait_query
from appliance.cli.progress import chunks, on_terminal, waited
from appliance.client import Client

OPERATION_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}")
VM_COLUMNS = [("NAME", "name"), ("STATE", "state"), ("DESIRED", "desired"), ("CPUS", "cpus"),
              ("MEMORY", "memory"), ("IMAGE", "image"), ("HOST", "host"),
              ("RUN STRATEGY", "strategy"), ("RESTART", "restart")]


def _vm_row(vm: dict) -> dict:
    spec = vm["spec"]
    return {"name": vm["name"], "project": vm.get("project"), "state": vm["state"],
            "desired": vm["desired_state"],
            "cpus": spec["cpus"], "memory": f"{spec['memory']}M", "image": spec["image"],
            "host": vm.get("host") or "", "strategy": spec["run_strategy"],
            "restart": _restart(vm)}


def _restart(vm: dict) -> str:
    """RestartRequired in a word: what waits for the next restart ("" when nothing)."""
    if not vm.get("restart_required"):
        return ""
    return f"required ({','.join(vm.get('pending_changes') or [])})".replace(" ()", "")


def cmd_list(client: Client, args: argparse.Namespace) -> int:
    every = "true" if args.all_projects else None
    items = client.get("/v1/vms", state=args.state, label=args.label, host=args.host,
                       all_projects=every)["items"]
    columns = [("PROJECT", "project"), *VM_COLUMNS] if args.all_projects else VM_COLUMNS
    listing(items, args.json, _vm_row, columns)
    return 0


def _network(args: argparse.Namespace) -> dict[str, Any] | None:
    """--network, --ip and --forward as the spec's network object (None: the default)."""
    if not (args.network or args.forward):
        return None
    network: dict[str, Any] = {"type": "user"}
    if args.network:
        kind, _, name = args.network.partition(":")
        network = {"type": kind, **({"name": name} if name else {})}
    if args.ip:
        network["ip"] = args.ip
    if args.forward:  # checked and made dicts by appliance/cli/values.py
        network["port_forwards"] = args.forward
    return network


def _cpu_fields(args: argparse.Namespace) -> dict[str, Any]:
    """cpu and hugepages from --cpu-mode, --topology, --dedicated, --hugepages."""
    cpu: dict[str, Any] = {}
    if args.cpu_mode:
        cpu["mode"] = args.cpu_mode
    if args.topology:
        cpu["sockets"], cpu["cores"], cpu["threads"] = args.topology
    if args.dedicated:
        cpu["dedicated"] = True
    fields: dict[str, Any] = {"cpu": cpu} if cpu else {}
    if args.hugepages:
        fields["hugepages"] = True
    return fields


def create_body(args: argparse.Namespace) -> dict[str, Any]:
    """The POST /v1/vms body from `vmctl create`'s options: only what was given,
    so that the spec's defaults apply to the rest."""
    body: dict[str, Any] = {"name": args.name}
    for field in ("image", "cpus", "memory", "run_strategy"):
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    if args.disk:
        body["disks"] = args.disk
    network = _network(args)
    if network is not None:
        body["network"] = network
    # the files' text, read as the options were parsed (appliance/cli/values.py)
    parts = {"user_data": args.user_data, "meta_data": args.meta_data,
             "network_config": args.network_config}
    cloud_init = {k: v for k, v in parts.items() if v is not None}
    if cloud_init:
        body["cloud_init"] = cloud_init
    if args.label:
        body["labels"] = dict(args.label)
    if args.node_selector:
        body["node_selector"] = dict(args.node_selector)
    for field in ("group", "host", "template", "firmware", "machine", "tpm"):
        if getattr(args, field, None):
            body[field] = getattr(args, field)
    body.update(_cpu_fields(args))
    rules = firewall.rules_of(args)  # --allow, --allow-out (issue 15)
    if rules is not None:
        body["firewall"] = rules
    if args.stopped:
        body["state"] = "stopped"
    return body


def cmd_create(client: Client, args: argparse.Namespace) -> int:
    result = client.request("POST", "/v1/vms", create_body(args), query=wait_query(args))
    print_outcome(result, args.json,
                  lambda vm: f"{vm['name']}: {vm['state']} on {vm.get('host') or '-'}")
    return 0


def _grace(client: Client, name: str, state: str) -> str:
    """What a stop's progress line adds: how long the guest has to shut down."""
    if state != "stopped":
        return ""
    grace = client.get(f"/v1/vms/{name}")["spec"].get("termination_grace_period")
    return f" (ACPI shutdown: forced after {grace} s)" if grace else ""


def set_state(client: Client, args: argparse.Namespace, state: str) -> int:
    result = waited(client, args, "PUT", f"/v1/vms/{args.name}/state", {"state": state},
                    args.command, note=lambda: _grace(client, args.name, state))
    if isinstance(result, int):
        return result
    print_outcome(result, args.json, lambda vm: f"{vm['name']}: {vm['state']}")
    return 0


def cmd_rebuild(client: Client, args: argparse.Namespace) -> int:
    body = {"image": args.image} if args.image else {}
    result = client.request("POST", f"/v1/vms/{args.name}/rebuild", body,
                            query=wait_query(args))
    print_outcome(result, args.json,
                  lambda vm: f"{vm['name']}: rebuilt from {vm['spec']['image']}, {vm['state']}")
    return 0


def cmd_rename(client: Client, args: argparse.Namespace) -> int:
    result = client.request("PATCH", f"/v1/vms/{args.name}", {"name": args.new_name})
    print(f"{args.name} -> {result['name']}")
    return 0


def cmd_set(client: Client, args: argparse.Namespace) -> int:
    """A PATCH of the shape fields given; says what waits for a restart."""
    body = {field: getattr(args, field) for field in ("cpus", "memory", "max_cpus", "max_memory")
            if getattr(args, field) is not None}
    if not body:
        print("vmctl set: nothing to change (--cpus, --memory, --max-cpus, --max-memory)",
              file=sys.stderr)
        return 2
    client.request("PATCH", f"/v1/vms/{args.name}", body, query=wait_query(args))
    vm = client.get(f"/v1/vms/{args.name}")
    spec = vm["spec"]
    print(f"{vm['name']}: cpus {spec['cpus']}, memory {spec['memory']}M"
          + (f"; restart {_restart(vm)}" if vm.get("restart_required") else ""))
    return 0


def cmd_delete(client: Client, args: argparse.Namespace) -> int:
    client.request("DELETE", f"/v1/vms/{args.name}",
                   query={"force": "true" if args.force else None, **wait_query(args)})
    print(f"{args.name}: deleted" if not args.no_wait else f"{args.name}: deleting")
    return 0


def cmd_migrate(client: Client, args: argparse.Namespace) -> int:
    result = waited(client, args, "PUT", f"/v1/vms/{args.name}/host",
                    {"host": args.host, "force": args.force}, "migrate",
                    note=lambda: f" (to {args.host})")
    if isinstance(result, int):
        return result
    if args.json:
        print_json(result)
    elif "name" not in result:
        print(f"accepted: operation {result['operation']['id']}")
    elif result.get("operation") is None:
        print(f"{result['name']}: already on {result['host']}")
    else:
        print(f"{result['name']}: {result['state']} on {result['host']}")
    return 0


def print_console_log(client: Client, args: argparse.Namespace) -> int:
    """`vmctl console NAME --log [-f]`: the console's log (attaching: appliance/cli/consoles.py)."""
    offset = 0
    while True:
        text = client.get(f"/v1/vms/{args.name}/console", offset=offset) or ""
        if text:  # the guest's terminal output, as its console shows it (output.Printable)
            unfiltered(sys.stdout).write(text)
            sys.stdout.flush()
            offset += len(text.encode())
        if not args.follow:
            return 0
        time.sleep(0.5)


def cmd_cancel(client: Client, args: argparse.Namespace) -> int:
    """DELETE /v1/operations/ID: a pending operation ends cancelled at once; a running
    migration, backup, restore or clone is aborted by the controller, which cleans up."""
    if not OPERATION_ID.fullmatch(args.op_id):  # it goes into the URL's path
        print(f"vmctl cancel: {args.op_id[:80]!r} is not an operation id", file=sys.stderr)
        return 2
    op = client.request("DELETE", f"/v1/operations/{args.op_id}")
    if args.json:
        print_json(op)
    elif op["status"] == "cancelled":
        print(f"{op['kind']} {op['id']}: cancelled")
    else:
        print(f"{op['kind']} {op['id']}: cancel requested; it stops and cleans up "
              "what it wrote")
    return 0


def cmd_events(client: Client, args: argparse.Namespace) -> int:
    since = 0
    while True:
        items = client.get("/v1/events", vm=args.name, since=since, user=args.user,
                           all_projects="true" if args.all_projects else None)["items"]
        for event in items:
            since = max(since, event["id"])
            if args.json:
                print(json.dumps(event))
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["time"]))
                vm = event["vm_name"] or "-"
                result = f": {event['result']}" if event.get("result") else ""
                print(f"{stamp}  {vm:<16} {event['kind']:<16} {event['message']}"
                      f"{actor_text(event)}{result}")
        if not args.follow:
            return 0
        time.sleep(1)


def cmd_lock(client: Client, args: argparse.Namespace) -> int:
    client.request("PUT", f"/v1/vms/{args.name}/lock", {"lock": args.reason})
    print(f"{args.name}: locked ({args.reason})")
    return 0


def cmd_unlock(client: Client, args: argparse.Namespace) -> int:
    client.request("DELETE", f"/v1/vms/{args.name}/lock")
    print(f"{args.name}: unlocked")
    return 0


def cmd_images(client: Client, args: argparse.Namespace) -> int:
    if args.action == "import":
        image = client.request("POST", "/v1/images",
                               {"name": args.name, "path": os.path.abspath(args.path)})
    elif args.action == "upload":  # streamed, with a progress bar on a terminal
        image = client.request("PUT", f"/v1/images/{args.name}",
                               raw=chunks(args.path, tty=on_terminal(args)),
                               headers={"Content-Length": str(os.path.getsize(args.path))},
                               content_type="application/octet-stream")
    elif args.action == "delete":
        client.request("DELETE", f"/v1/images/{args.name}")
        print(f"{args.name}: deleted")
        return 0
    else:
        items = client.get("/v1/images")["items"]
        if args.json:
            print_json(items)
        else:
            table([{**i, "size": f"{i['virtual_size'] // (1 << 20)}M"} for i in items],
                  [("NAME", "name"), ("FORMAT", "format"), ("SIZE", "size"), ("SOURCE", "source")])
        return 0
    if args.json:
        print_json(image)
    else:
        print(f"{image['name']}: {image['format']}, {image['virtual_size'] // (1 << 20)} MiB")
    return 0

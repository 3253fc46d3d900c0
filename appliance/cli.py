"""vmctl: tables for people, --json for scripts; everything through the REST API
except `serve` (which runs it) and `doctor` (which must work when it does not)."""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from appliance.client import APIError, Client
from appliance.config import DEFAULT_HOME, DEFAULT_LISTEN, Config
from appliance.model import (
    DEFAULT_CPU_RATIO,
    DEFAULT_CPUS,
    DEFAULT_DISK_RATIO,
    DEFAULT_MEMORY_MIB,
    DEFAULT_RAM_RATIO,
    DEFAULT_RUN_STRATEGY,
    GROUP_POLICIES,
    HOST_STATES,
    RUN_STRATEGIES,
    STATE_ALIASES,
    StateVerb,
)


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def _table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    cells = [[h for h, _ in columns]] + [[str(row.get(k, "") if row.get(k) is not None else "") for _, k in columns]
                                          for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _vm_row(vm: dict) -> dict:
    spec = vm["spec"]
    return {"name": vm["name"], "state": vm["state"], "desired": vm["desired_state"], "cpus": spec["cpus"],
            "memory": f"{spec['memory']}M", "image": spec["image"], "host": vm.get("host") or "",
            "strategy": spec["run_strategy"]}


VM_COLUMNS = [("NAME", "name"), ("STATE", "state"), ("DESIRED", "desired"), ("CPUS", "cpus"),
              ("MEMORY", "memory"), ("IMAGE", "image"), ("HOST", "host"), ("RUN STRATEGY", "strategy")]


def _pair(text: str) -> tuple[str, str]:
    """KEY=VALUE, for --label and --node-selector (argparse names the option on error)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def _wait_query(args) -> dict:
    return {"wait": "false"} if getattr(args, "no_wait", False) else {}


def cmd_serve(args) -> int:
    from appliance.serve import serve

    config = Config.load(args.home) if (Path(args.home) / "config.json").exists() else Config(home=args.home)
    for field in ("listen", "accel", "libvirt_uri", "domain_prefix", "workers", "mount_group"):
        value = getattr(args, field)
        if value is not None:
            setattr(config, field, value)
    if args.no_mount:
        config.mount = None
    elif args.mount is not None:
        config.mount = str(Path(args.mount).absolute())
    return serve(config, demo_image=args.demo_image)


def cmd_mount(args) -> int:
    """The file system view alone, in the foreground, against the home's store."""
    import logging

    from fs.mount import run

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return run(Config.load(args.home), args.path, group=args.allow_group)


def cmd_exporter(args) -> int:
    """Prometheus metrics of one libvirt host, without the API (exporter/standalone.py)."""
    from exporter.standalone import run

    return run(args.listen, args.libvirt_uri, host_name=args.host_name, all_domains=args.all_domains)


def cmd_list(client: Client, args) -> int:
    items = client.get("/v1/vms", state=args.state, label=args.label, host=args.host)["items"]
    if args.json:
        _print_json(items)
    else:
        _table([_vm_row(vm) for vm in items], VM_COLUMNS)
    return 0


def cmd_get(client: Client, args) -> int:
    vm = client.get(f"/v1/vms/{args.name}")
    if args.json:
        _print_json(vm)
        return 0
    row = _vm_row(vm)
    for key, label in [(k, h) for h, k in VM_COLUMNS]:
        print(f"{label.lower():<13} {row[key]}")
    print(f"{'generation':<13} {vm['generation']}")
    print(f"{'reason':<13} {vm.get('reason') or '-'}")
    if vm.get("restart_required"):
        print("restart       required for spec changes to apply")
    return 0


def _read(path: str | None) -> str | None:
    return Path(path).read_text() if path else None


def cmd_create(client: Client, args) -> int:
    body: dict[str, Any] = {"name": args.name}
    for field in ("image", "cpus", "memory", "run_strategy"):
        value = getattr(args, field)
        if value is not None:
            body[field] = value
    if args.disk:
        body["disks"] = [{"name": d.split(":", 1)[0], "size": d.split(":", 1)[1]} for d in args.disk]
    if args.network or args.forward:
        network: dict[str, Any] = {"type": "user"}
        if args.network:
            kind, _, name = args.network.partition(":")
            network = {"type": kind, **({"name": name} if name else {})}
        if args.ip:
            network["ip"] = args.ip
        if args.forward:
            network["port_forwards"] = [
                {"host_port": int(f.split(":")[0]), "guest_port": int(f.split(":")[1])} for f in args.forward]
        body["network"] = network
    cloud_init = {k: v for k, v in {"user_data": _read(args.user_data), "meta_data": _read(args.meta_data),
                                     "network_config": _read(args.network_config)}.items() if v is not None}
    if cloud_init:
        body["cloud_init"] = cloud_init
    if args.label:
        body["labels"] = dict(args.label)
    if args.node_selector:
        body["node_selector"] = dict(args.node_selector)
    if args.group:
        body["group"] = args.group
    if args.host:
        body["host"] = args.host
    if args.stopped:
        body["state"] = "stopped"
    result = client.request("POST", "/v1/vms", body, query=_wait_query(args))
    if args.json:
        _print_json(result)
    elif "operation" in result and "name" not in result:
        print(f"accepted: operation {result['operation']['id']}")
    else:
        print(f"{result['name']}: {result['state']} on {result.get('host') or '-'}")
    return 0


def _set_state(client: Client, args, state: str) -> int:
    result = client.request("PUT", f"/v1/vms/{args.name}/state", {"state": state}, query=_wait_query(args))
    if args.json:
        _print_json(result)
    elif "name" in result:
        print(f"{result['name']}: {result['state']}")
    else:
        print(f"accepted: operation {result['operation']['id']}")
    return 0


def cmd_rename(client: Client, args) -> int:
    result = client.request("PATCH", f"/v1/vms/{args.name}", {"name": args.new_name})
    print(f"{args.name} -> {result['name']}")
    return 0


def cmd_delete(client: Client, args) -> int:
    client.request("DELETE", f"/v1/vms/{args.name}", query={"force": "true" if args.force else None,
                                                            **_wait_query(args)})
    print(f"{args.name}: deleted" if not args.no_wait else f"{args.name}: deleting")
    return 0


def cmd_console(client: Client, args) -> int:
    offset = 0
    while True:
        text = client.get(f"/v1/vms/{args.name}/console", offset=offset) or ""
        if text:
            sys.stdout.write(text)
            sys.stdout.flush()
            offset += len(text.encode())
        if not args.follow:
            return 0
        time.sleep(0.5)


def cmd_events(client: Client, args) -> int:
    since = 0
    while True:
        items = client.get("/v1/events", vm=args.name, since=since)["items"]
        for event in items:
            since = max(since, event["id"])
            if args.json:
                print(json.dumps(event))
            else:
                stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(event["time"]))
                print(f"{stamp}  {event['vm_name'] or '-':<16} {event['kind']:<16} {event['message']}")
        if not args.follow:
            return 0
        time.sleep(1)


def cmd_images(client: Client, args) -> int:
    if args.action == "import":
        image = client.request("POST", "/v1/images", {"name": args.name, "path": os.path.abspath(args.path)})
    elif args.action == "upload":
        with open(args.path, "rb") as f:
            image = client.request("PUT", f"/v1/images/{args.name}", raw=f.read(),
                                   content_type="application/octet-stream")
    elif args.action == "delete":
        client.request("DELETE", f"/v1/images/{args.name}")
        print(f"{args.name}: deleted")
        return 0
    else:
        items = client.get("/v1/images")["items"]
        if args.json:
            _print_json(items)
        else:
            _table([{**i, "size": f"{i['virtual_size'] // (1 << 20)}M"} for i in items],
                   [("NAME", "name"), ("FORMAT", "format"), ("SIZE", "size"), ("SOURCE", "source")])
        return 0
    if args.json:
        _print_json(image)
    else:
        print(f"{image['name']}: {image['format']}, {image['virtual_size'] // (1 << 20)} MiB")
    return 0


# -- hosts and server groups ----------------------------------------------------------------
HOST_COLUMNS = [("NAME", "name"), ("STATE", "state"), ("VMS", "vms"), ("CPUS", "cpus"), ("MEMORY", "memory"),
                ("DISK", "disk"), ("STORAGE", "storage"), ("LABELS", "labels"), ("URI", "uri")]


def _labels_text(labels: dict) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def _host_row(host: dict) -> dict:
    """STATE is what placement sees (down, or the administrative state); used/capacity after overcommit."""
    used, capacity = host["allocated"], host["capacity"]
    return {"name": host["name"], "state": host["observed_state"], "vms": used["vms"],
            "cpus": f"{used['cpus']}/{capacity['cpus']}",
            "memory": f"{used['memory_mib']}M/{capacity['memory_mib']}M",
            "disk": f"{used['disk_gib']:g}G/{capacity['disk_gib']:g}G", "storage": host.get("storage") or "",
            "labels": _labels_text(host.get("labels")), "uri": host["uri"]}


def _show_host(host: dict) -> None:
    row = _host_row(host)
    seen = host.get("last_seen")
    lines = [("name", host["name"]), ("uri", host["uri"]), ("state", host["observed_state"]),
             ("admin state", host["state"]),
             ("last seen", time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seen)) if seen else "never"),
             ("vms", row["vms"]), ("cpus", f"{row['cpus']} (ratio {host['cpu_ratio']:g})"),
             ("memory", (f"{row['memory']} (ratio {host['ram_ratio']:g}, "
                         f"{host.get('reserved_memory_mib') or 0}M reserved)")),
             ("disk", f"{row['disk']} (ratio {host['disk_ratio']:g})"), ("storage", row["storage"] or "-"),
             ("migration", host.get("migration_address") or "-"), ("labels", row["labels"] or "-")]
    for label, value in lines:
        print(f"{label:<13} {value}")


def _print_drain(drain: dict) -> None:
    for item in drain.get("migrating", []):
        print(f"  {item['vm']}: migrating to {item.get('target') or '?'}"
              + (f" ({item['note']})" if item.get("note") else f" (operation {item.get('operation')})"))
    for item in drain.get("moving", []):
        print(f"  {item['vm']}: moving (stopped) to {item['target']} (operation {item['operation']})")
    for item in drain.get("blocked", []):
        print(f"  {item['vm']}: stays: {item['reason']}")


def cmd_host(client: Client, args) -> int:
    if args.action == "list":
        items = client.get("/v1/hosts")["items"]
        if args.json:
            _print_json(items)
        else:
            _table([_host_row(h) for h in items], HOST_COLUMNS)
        return 0
    if args.action == "show":
        host = client.get(f"/v1/hosts/{args.name}")
        if args.json:
            _print_json(host)
        else:
            _show_host(host)
        return 0
    if args.action == "add":
        body: dict[str, Any] = {"name": args.name, "uri": args.uri}
        for field in ("storage", "cpu_ratio", "ram_ratio", "disk_ratio", "migration_address"):
            value = getattr(args, field)
            if value is not None:
                body[field] = value
        if args.label:
            body["labels"] = dict(args.label)
        host = client.request("POST", "/v1/hosts", body)
        if args.json:
            _print_json(host)
        else:
            print(f"{host['name']}: added ({host['uri']}), {host['observed_state']}")
        return 0
    if args.action == "state":
        result = client.request("PUT", f"/v1/hosts/{args.name}/state", {"state": args.state})
        if args.json:
            _print_json(result)
            return 0
        print(f"{result['name']}: {result['state']}")
        _print_drain(result.get("drain") or {})
        return 1 if (result.get("drain") or {}).get("blocked") else 0
    client.request("DELETE", f"/v1/hosts/{args.name}")  # remove
    print(f"{args.name}: removed")
    return 0


def cmd_migrate(client: Client, args) -> int:
    result = client.request("PUT", f"/v1/vms/{args.name}/host", {"host": args.host, "force": args.force},
                            query=_wait_query(args))
    if args.json:
        _print_json(result)
    elif "name" not in result:
        print(f"accepted: operation {result['operation']['id']}")
    elif result.get("operation") is None:
        print(f"{result['name']}: already on {result['host']}")
    else:
        print(f"{result['name']}: {result['state']} on {result['host']}")
    return 0


def cmd_group(client: Client, args) -> int:
    if args.action == "create":
        group = client.request("POST", "/v1/groups", {"name": args.name, "policy": args.policy})
        if args.json:
            _print_json(group)
        else:
            print(f"{group['name']}: created ({group['policy']})")
        return 0
    if args.action == "delete":
        client.request("DELETE", f"/v1/groups/{args.name}")
        print(f"{args.name}: deleted")
        return 0
    items = client.get("/v1/groups")["items"]
    if args.json:
        _print_json(items)
    else:
        _table([{"name": g["name"], "policy": g["policy"],
                 "members": ", ".join(f"{m['name']}@{m['host'] or '-'}" for m in g["members"])} for g in items],
               [("NAME", "name"), ("POLICY", "policy"), ("MEMBERS", "members")])
    return 0


def cmd_doctor(args) -> int:
    from appliance.doctor import run_checks

    results = run_checks(args.home)
    if args.json:
        _print_json(results)
    else:
        for check in results:
            mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check["status"]]
            print(f"[{mark}] {check['name']}: {check['detail']}")
            if check.get("fix"):
                print(f"       fix: {check['fix']}")
    return 1 if any(c["status"] == "fail" for c in results) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="vmctl", description="Drive the vm-appliance.")
    parser.add_argument("--home", default=os.environ.get("VMAPP_HOME", DEFAULT_HOME),
                        help="the appliance's home (config, token, store); default ./.appliance")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the controller and the REST API")
    serve.add_argument("--listen", default=None, help=f"HOST:PORT (default {DEFAULT_LISTEN})")
    serve.add_argument("--accel", choices=["auto", "kvm", "tcg"], default=None)
    serve.add_argument("--libvirt-uri", dest="libvirt_uri", default=None)
    serve.add_argument("--domain-prefix", dest="domain_prefix", default=None)
    serve.add_argument("--workers", type=int, default=None)
    serve.add_argument("--demo-image", dest="demo_image", default=None,
                       help="register this file as image 'demo' if there is none")
    mount = serve.add_mutually_exclusive_group()
    mount.add_argument("--mount", default=None, metavar="PATH",
                       help="mount the file system view here (default HOME/mnt)")
    mount.add_argument("--no-mount", dest="no_mount", action="store_true", help="do not mount it")
    serve.add_argument("--mount-group", dest="mount_group", default=None, metavar="GROUP",
                       help="let members of GROUP use the mount too (allow_other); default: only its owner")

    p = sub.add_parser("mount", help="mount the file system view at PATH, in the foreground")
    p.add_argument("path")
    p.add_argument("--allow-group", dest="allow_group", default=None, metavar="GROUP",
                   help="let members of GROUP use the mount too (allow_other); default: only its owner")

    p = sub.add_parser("exporter", help="serve Prometheus metrics of a libvirt host, for hosts without the API")
    p.add_argument("--listen", required=True, help="HOST:PORT for /metrics")
    p.add_argument("--libvirt-uri", dest="libvirt_uri", default="qemu:///system")
    p.add_argument("--host-name", dest="host_name", default=None,
                   help="the host label (default: this machine's hostname)")
    p.add_argument("--all-domains", dest="all_domains", action="store_true",
                   help="every domain of the host, not only the appliance's (they may be other tenants')")

    p = sub.add_parser("list", help="list VMs")
    p.add_argument("--state")
    p.add_argument("--label", help="KEY or KEY=VALUE")
    p.add_argument("--host")
    p = sub.add_parser("get", help="show one VM")
    p.add_argument("name")

    p = sub.add_parser("create", help="create a VM (started unless --stopped)")
    p.add_argument("name")
    p.add_argument("--image")
    p.add_argument("--cpus", type=int, help=f"vCPUs (default {DEFAULT_CPUS})")
    p.add_argument("--memory", help=f"MiB, or 512M / 2G (default {DEFAULT_MEMORY_MIB})")
    p.add_argument("--disk", action="append", help="NAME:SIZE, an extra blank disk")
    p.add_argument("--network", help="none | user | network:NAME")
    p.add_argument("--ip", help="fixed IPv4 on a libvirt network")
    p.add_argument("--forward", action="append", help="HOSTPORT:GUESTPORT on 127.0.0.1 (user networking)")
    p.add_argument("--user-data", dest="user_data", help="file")
    p.add_argument("--meta-data", dest="meta_data", help="file")
    p.add_argument("--network-config", dest="network_config", help="file")
    p.add_argument("--run-strategy", dest="run_strategy", choices=list(RUN_STRATEGIES),
                   help=f"when the appliance starts it again (default {DEFAULT_RUN_STRATEGY})")
    p.add_argument("--label", action="append", type=_pair, help="KEY=VALUE")
    p.add_argument("--host", help="place it on this host (the scheduler still checks it fits)")
    p.add_argument("--group", help="a server group (vmctl group create)")
    p.add_argument("--node-selector", dest="node_selector", action="append", type=_pair, metavar="KEY=VALUE",
                   help="only on hosts with this label (repeat for several)")
    p.add_argument("--stopped", action="store_true")
    p.add_argument("--no-wait", dest="no_wait", action="store_true")

    for verb, helptext in [("start", "start"), ("stop", "shut down (ACPI, then force after the grace period)"),
                           ("force-stop", "pull the plug"), ("pause", "pause"), ("resume", "resume"),
                           ("reboot", "restart the guest")]:
        p = sub.add_parser(verb, help=helptext)
        p.add_argument("name")
        p.add_argument("--no-wait", dest="no_wait", action="store_true")
    p = sub.add_parser("rename", help="rename a stopped VM")
    p.add_argument("name")
    p.add_argument("new_name")
    p = sub.add_parser("delete", help="delete a VM and its disks")
    p.add_argument("name")
    p.add_argument("--force", action="store_true", help="even while it runs")
    p.add_argument("--no-wait", dest="no_wait", action="store_true")
    p = sub.add_parser("console", help="print the serial console")
    p.add_argument("name")
    p.add_argument("-f", "--follow", action="store_true")
    p = sub.add_parser("events", help="the event log")
    p.add_argument("name", nargs="?")
    p.add_argument("-f", "--follow", action="store_true")
    p = sub.add_parser("images", help="list, import, upload or delete images")
    p.add_argument("action", nargs="?", choices=["list", "import", "upload", "delete"], default="list")
    p.add_argument("name", nargs="?")
    p.add_argument("path", nargs="?")
    p = sub.add_parser("migrate", help="move a VM to another host: live when it runs, offline when stopped")
    p.add_argument("name")
    p.add_argument("host")
    p.add_argument("--force", action="store_true", help="skip the scheduler's filters (labels, capacity, groups)")
    p.add_argument("--no-wait", dest="no_wait", action="store_true")

    p = sub.add_parser("host", help="list, show, add, change the state of, or remove libvirt hosts")
    hosts = p.add_subparsers(dest="action", required=True)
    hosts.add_parser("list", help="hosts with their state and what is allocated")
    hosts.add_parser("show", help="one host").add_argument("name")
    h = hosts.add_parser("add", help="add a libvirt host")
    h.add_argument("name")
    h.add_argument("uri", help="qemu:///system, qemu+ssh://root@h2/system, qemu+unix:///system?socket=PATH")
    h.add_argument("--label", action="append", type=_pair, metavar="KEY=VALUE")
    h.add_argument("--storage", help="hosts naming the same storage share VM disks (default: shared)")
    h.add_argument("--cpu-ratio", dest="cpu_ratio", type=float, metavar="X",
                   help=f"vCPU overcommit (default {DEFAULT_CPU_RATIO:g})")
    h.add_argument("--ram-ratio", dest="ram_ratio", type=float, metavar="X",
                   help=f"RAM overcommit (default {DEFAULT_RAM_RATIO:g})")
    h.add_argument("--disk-ratio", dest="disk_ratio", type=float, metavar="X",
                   help=f"disk overcommit (default {DEFAULT_DISK_RATIO:g})")
    h.add_argument("--migration-address", dest="migration_address", metavar="ADDRESS",
                   help="where other hosts reach this one for live migration")
    h = hosts.add_parser("state", help="enabled | disabled (no new VMs) | maintenance (and move its VMs away; "
                                       "exit status 1 when some cannot leave)")
    h.add_argument("name")
    h.add_argument("state", choices=list(HOST_STATES))
    hosts.add_parser("remove", help="remove a host that has no VMs").add_argument("name")

    p = sub.add_parser("group", help="server groups: keep VMs together or apart")
    groups = p.add_subparsers(dest="action")
    groups.add_parser("list", help="groups and their members")
    g = groups.add_parser("create", help="create a group")
    g.add_argument("name")
    g.add_argument("policy", choices=list(GROUP_POLICIES))
    groups.add_parser("delete", help="delete a group without members").add_argument("name")
    sub.add_parser("doctor", help="check libvirt, KVM, FUSE, disk space and the API")
    return parser


# vmctl's state subcommands and the state each asks for (the model's verbs and aliases).
STATE_COMMANDS: dict[str, str] = {command: STATE_ALIASES.get(command) or StateVerb(command)
                                  for command in ("start", "stop", "force-stop", "pause", "resume", "reboot")}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "serve":
        return cmd_serve(args)
    if args.command == "doctor":
        return cmd_doctor(args)
    if args.command == "mount":
        return cmd_mount(args)
    if args.command == "exporter":
        return cmd_exporter(args)
    if args.command == "images" and args.action in ("import", "upload", "delete") and not args.name:
        print("vmctl images: NAME (and PATH for import/upload) required", file=sys.stderr)
        return 2
    client = Client.from_home(args.home)
    try:
        if args.command in STATE_COMMANDS:
            return _set_state(client, args, STATE_COMMANDS[args.command])
        handler = globals()["cmd_" + args.command.replace("-", "_")]
        return handler(client, args)
    except APIError as err:
        print(f"vmctl {args.command}: {err}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

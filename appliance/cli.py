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

    return run(args.listen, args.libvirt_uri, host_name=args.host_name)


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
        body["labels"] = dict(label.split("=", 1) for label in args.label)
    if args.stopped:
        body["state"] = "stopped"
    result = client.request("POST", "/v1/vms", body, query=_wait_query(args))
    if args.json:
        _print_json(result)
    elif "operation" in result and "name" not in result:
        print(f"accepted: operation {result['operation']['id']}")
    else:
        print(f"{result['name']}: {result['state']}")
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

    p = sub.add_parser("list", help="list VMs")
    p.add_argument("--state")
    p.add_argument("--label", help="KEY or KEY=VALUE")
    p.add_argument("--host")
    p = sub.add_parser("get", help="show one VM")
    p.add_argument("name")

    p = sub.add_parser("create", help="create a VM (started unless --stopped)")
    p.add_argument("name")
    p.add_argument("--image")
    p.add_argument("--cpus", type=int)
    p.add_argument("--memory", help="MiB, or 512M / 2G")
    p.add_argument("--disk", action="append", help="NAME:SIZE, an extra blank disk")
    p.add_argument("--network", help="none | user | network:NAME")
    p.add_argument("--ip", help="fixed IPv4 on a libvirt network")
    p.add_argument("--forward", action="append", help="HOSTPORT:GUESTPORT on 127.0.0.1 (user networking)")
    p.add_argument("--user-data", dest="user_data", help="file")
    p.add_argument("--meta-data", dest="meta_data", help="file")
    p.add_argument("--network-config", dest="network_config", help="file")
    p.add_argument("--run-strategy", dest="run_strategy",
                   choices=["Always", "RerunOnFailure", "Manual", "Halted"])
    p.add_argument("--label", action="append", help="KEY=VALUE")
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
    sub.add_parser("doctor", help="check libvirt, KVM, FUSE, disk space and the API")
    return parser


STATE_VERBS = {"start": "running", "stop": "stopped", "force-stop": "force-stop", "pause": "paused",
               "resume": "running", "reboot": "reboot"}


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
        if args.command in STATE_VERBS:
            return _set_state(client, args, STATE_VERBS[args.command])
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

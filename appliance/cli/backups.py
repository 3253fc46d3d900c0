"""vmctl's snapshot, backup, restore and clone commands: each one REST call, then (unless
--no-wait) the operation followed to its end with a progress bar on a terminal
(appliance/cli/progress.py).

    snapshot VM S [--memory] [--description D]   snapshots VM   revert VM S
    snapshot-delete VM S   backup VM [--target T] [--full]   backups [VM]
    backup-target add NAME PATH | list | remove NAME [--forget]
    restore VM --backup ID [--as NEW] [--host H]   clone VM NEW [--from-snapshot S] [--host H]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from appliance.cli.output import listing, print_answer, print_json
from appliance.cli.progress import follow, outcome
from appliance.client import Client

NO_WAIT = {"wait": "false"}  # vmctl follows the operation itself, to draw its progress
SNAPSHOT_COLUMNS = [("NAME", "name"), ("CREATED", "created"), ("MEMORY", "memory"),
                    ("STATE", "state"), ("VM STATE", "vm_state"), ("PARENT", "parent"),
                    ("CURRENT", "current"), ("DESCRIPTION", "description")]
BACKUP_COLUMNS = [("ID", "id"), ("VM", "vm_name"), ("KIND", "kind"), ("STATUS", "status"),
                  ("CREATED", "created"), ("SIZE", "size"), ("TARGET", "target"),
                  ("PARENT", "parent")]
TARGET_COLUMNS = [("NAME", "name"), ("PATH", "path"), ("FREE", "free_bytes"),
                  ("BACKUPS", "backups")]


def add_backup_commands(sub: argparse._SubParsersAction) -> None:
    def no_wait(p: argparse.ArgumentParser) -> None:
        p.add_argument("--no-wait", dest="no_wait", action="store_true",
                       help="print the operation and return at once")

    p = sub.add_parser("snapshot", help="take a snapshot of a VM's disks (and memory)")
    p.add_argument("name")
    p.add_argument("snapshot")
    p.add_argument("--memory", action="store_true",
                   help="the RAM and device state too (a running VM): a revert resumes it")
    p.add_argument("--description", default=None)
    no_wait(p)
    sub.add_parser("snapshots", help="a VM's snapshots").add_argument("name")
    for command, helptext in (("revert", "revert a VM to a snapshot"),
                              ("snapshot-delete", "delete a snapshot")):
        p = sub.add_parser(command, help=helptext)
        p.add_argument("name")
        p.add_argument("snapshot")
        no_wait(p)
    p = sub.add_parser("backup", help="back a VM up (full the first time, incremental after)")
    p.add_argument("name")
    p.add_argument("--target", default=None, help="a backup target (default: the VM's policy's, "
                                                  "else the only one)")
    p.add_argument("--full", action="store_true", help="a full backup even if an incremental "
                                                       "one could be taken")
    no_wait(p)
    p = sub.add_parser("backups", help="backups (a VM's, a deleted VM's too)")
    p.add_argument("name", nargs="?")
    p.add_argument("--all-projects", dest="all_projects", action="store_true",
                   help="every project's backups (admins)")
    p = sub.add_parser("backup-target", help="directories backups are written to (admin)")
    targets = p.add_subparsers(dest="action", required=True)
    t = targets.add_parser("add", help="add a directory (local disk or an NFS mount)")
    t.add_argument("target")
    t.add_argument("path")
    targets.add_parser("list", help="targets and their free space")
    t = targets.add_parser("remove", help="remove a target (refused while backups in it are "
                                          "listed unless --forget)")
    t.add_argument("target")
    t.add_argument("--forget", action="store_true",
                   help="forget its backups (their files stay on the target)")
    p = sub.add_parser("restore", help="restore a backup: into a new VM (--as), or in place "
                                       "into the stopped VM")
    p.add_argument("name")
    p.add_argument("--backup", required=True, metavar="ID")
    p.add_argument("--as", dest="as_name", default=None, metavar="NEW")
    p.add_argument("--host", default=None, help="place the new VM on this host")
    no_wait(p)
    p = sub.add_parser("clone", help="a new VM with full copies of a VM's disks")
    p.add_argument("name")
    p.add_argument("new_name")
    p.add_argument("--from-snapshot", dest="from_snapshot", default=None, metavar="S")
    p.add_argument("--host", default=None, help="place the new VM on this host")
    no_wait(p)


def _when(stamp: float | None) -> str:
    return "-" if stamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp))


def _size(size: int | None) -> str:
    """Bytes as people read them: 512 B, 4.0 MiB, 1.2 GiB."""
    if size is None:
        return "-"
    if size < 1024:
        return f"{size} B"
    shown, unit = size / 1024, "KiB"
    for bigger in ("MiB", "GiB", "TiB"):
        if shown < 1024:
            break
        shown, unit = shown / 1024, bigger
    return f"{shown:.1f} {unit}"


def _started(args: argparse.Namespace, answer: dict, command: str) -> int | None:
    """--no-wait: the answer printed, 0. Else None: the caller follows the operation."""
    if not args.no_wait:
        return None
    if args.json:
        print_json(answer)
    else:
        print(f"accepted: operation {answer['operation']['id']}")
    return 0


def _run(client: Client, args: argparse.Namespace, command: str, answer: dict,
         done: str) -> int:
    """Follow the answer's operation (unless --no-wait) and print `done` when it succeeded."""
    early = _started(args, answer, command)
    if early is not None:
        return early
    op = follow(client, answer["operation"])
    status = outcome(op, command)
    if status == 0:
        if args.json:
            print_json({**answer, "operation": op})
        else:
            print(done)
    return status


def cmd_snapshot(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"name": args.snapshot, "memory": args.memory}
    if args.description is not None:
        body["description"] = args.description
    answer = client.request("POST", f"/v1/vms/{args.name}/snapshots", body, query=NO_WAIT)
    kind = "with memory" if args.memory else "disks only"
    return _run(client, args, "snapshot", answer, f"{args.name}: snapshot {args.snapshot} "
                                                  f"taken ({kind})")


def cmd_snapshots(client: Client, args: argparse.Namespace) -> int:
    items = client.get(f"/v1/vms/{args.name}/snapshots")["items"]
    listing(items, args.json, lambda s: {
        **s, "created": _when(s["created"]), "memory": "yes" if s["memory"] else "no",
        "current": "*" if s.get("current") else "", "parent": s.get("parent") or "-"},
        SNAPSHOT_COLUMNS)
    return 0


def cmd_revert(client: Client, args: argparse.Namespace) -> int:
    answer = client.request("POST", f"/v1/vms/{args.name}/snapshots/{args.snapshot}/revert",
                            query=NO_WAIT)
    return _run(client, args, "revert", answer,
                f"{args.name}: reverted to {args.snapshot}")


def cmd_snapshot_delete(client: Client, args: argparse.Namespace) -> int:
    answer = client.request("DELETE", f"/v1/vms/{args.name}/snapshots/{args.snapshot}",
                            query=NO_WAIT)
    return _run(client, args, "snapshot-delete", answer,
                f"{args.name}: snapshot {args.snapshot} deleted")


def cmd_backup(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"full": True} if args.full else {}
    if args.target:
        body["target"] = args.target
    answer = client.request("POST", f"/v1/vms/{args.name}/backups", body, query=NO_WAIT)
    early = _started(args, answer, "backup")
    if early is not None:
        return early
    op = follow(client, answer["operation"])
    status = outcome(op, "backup")
    if status == 0:
        made = client.get("/v1/backups", vm=args.name)["items"]  # its row names its operation
        backup = next((b for b in made if b.get("operation") == op["id"]), None)
        if args.json:
            print_json({"operation": op, "backup": backup})
        elif backup is None:
            print(f"{args.name}: backed up")
        else:
            print(f"{args.name}: backup {backup['id']} ({backup['kind']}, "
                  f"{_size(backup.get('size'))}) in {backup['target']}")
    return status


def _backup_row(backup: dict) -> dict:
    return {**backup, "created": _when(backup["created"]), "size": _size(backup.get("size")),
            "parent": backup.get("parent") or "-"}


def cmd_backups(client: Client, args: argparse.Namespace) -> int:
    items = client.get("/v1/backups", vm=args.name,
                       all_projects="true" if args.all_projects else None)["items"]
    columns = [("PROJECT", "project"), *BACKUP_COLUMNS] if args.all_projects else BACKUP_COLUMNS
    listing(items, args.json, _backup_row, columns)
    return 0


def cmd_backup_target(client: Client, args: argparse.Namespace) -> int:
    if args.action == "add":
        print_answer(client.request("POST", "/v1/backup-targets",
                                    {"name": args.target, "path": args.path}), args.json,
                     lambda t: f"{t['name']}: {t['path']} ({_size(t.get('free_bytes'))} free)")
    elif args.action == "remove":
        client.request("DELETE", f"/v1/backup-targets/{args.target}",
                       query={"forget": "true" if args.forget else None})
        print(f"{args.target}: removed")
    else:
        listing(client.get("/v1/backup-targets")["items"], args.json,
                lambda t: {**t, "free_bytes": _size(t.get("free_bytes"))}, TARGET_COLUMNS)
    return 0


def cmd_restore(client: Client, args: argparse.Namespace) -> int:
    backup = client.get(f"/v1/backups/{args.backup}")
    if backup.get("vm_name") != args.name:
        print(f"vmctl restore: backup {args.backup} is of {backup.get('vm_name')!r}, "
              f"not {args.name!r}", file=sys.stderr)
        return 1
    body = {key: value for key, value in (("name", args.as_name), ("host", args.host)) if value}
    answer = client.request("POST", f"/v1/backups/{args.backup}/restore", body, query=NO_WAIT)
    into = args.as_name or args.name
    return _run(client, args, "restore", answer, f"{into}: restored from backup {args.backup}")


def cmd_clone(client: Client, args: argparse.Namespace) -> int:
    body = {"name": args.new_name}
    for field in ("from_snapshot", "host"):
        if getattr(args, field):
            body[field] = getattr(args, field)
    answer = client.request("POST", f"/v1/vms/{args.name}/clone", body, query=NO_WAIT)
    source = f"{args.name}'s snapshot {args.from_snapshot}" if args.from_snapshot else args.name
    return _run(client, args, "clone", answer, f"{args.new_name}: cloned from {source}")


COMMANDS = {"snapshot": cmd_snapshot, "snapshots": cmd_snapshots, "revert": cmd_revert,
            "snapshot-delete": cmd_snapshot_delete, "backup": cmd_backup,
            "backups": cmd_backups, "backup-target": cmd_backup_target,
            "restore": cmd_restore, "clone": cmd_clone}

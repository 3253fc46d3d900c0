"""vmctl's data disks and CD-ROM drives (issue 14): each one REST call, which waits
for its operation (a running VM's disk is grown, hot-plugged or removed live).

    disk list VM   disk add VM NAME [SIZE]   disk resize VM NAME SIZE   disk remove VM NAME
    cdrom list VM   cdrom insert VM INDEX IMAGE   cdrom eject VM INDEX
"""
from __future__ import annotations

import argparse

from appliance.cli.output import listing, print_answer
from appliance.cli.values import size
from appliance.client import Client
from appliance.model.media import DEFAULT_NEW_DISK_MIB

DISK_COLUMNS = [("NAME", "name"), ("SIZE MIB", "size"), ("ATTACHED MIB", "attached_size"),
                ("FILE", "file")]
CDROM_COLUMNS = [("DRIVE", "index"), ("IMAGE", "image")]


def add_disk_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("disk", help="a VM's data disks: list, add, grow (live), remove")
    disks = p.add_subparsers(dest="action", required=True)
    disks.add_parser("list", help="the VM's data disks").add_argument("name")
    d = disks.add_parser("add", help="add a blank disk (hot-plugged into a running VM)")
    d.add_argument("name")
    d.add_argument("disk")
    d.add_argument("size", nargs="?", default=f"{DEFAULT_NEW_DISK_MIB}M", type=size,
                   help=f"MiB or 512M, 20G... (default {DEFAULT_NEW_DISK_MIB} MiB)")
    d = disks.add_parser("resize", help="grow a disk (live on a running VM; never shrinks)")
    d.add_argument("name")
    d.add_argument("disk")
    d.add_argument("size", type=size)
    d = disks.add_parser("remove", help="detach a disk and delete it with its data")
    d.add_argument("name")
    d.add_argument("disk")
    p = sub.add_parser("cdrom", help="a VM's CD-ROM drives: insert or eject ISO images (live)")
    drives = p.add_subparsers(dest="action", required=True)
    drives.add_parser("list", help="the drives and their media").add_argument("name")
    d = drives.add_parser("insert", help="put an ISO image of the image store in a drive")
    d.add_argument("name")
    d.add_argument("index", type=int)
    d.add_argument("image")
    d = drives.add_parser("eject", help="empty a drive")
    d.add_argument("name")
    d.add_argument("index", type=int)


def cmd_disk(client: Client, args: argparse.Namespace) -> int:
    base = f"/v1/vms/{args.name}/disks"
    if args.action == "list":
        listing(client.get(base)["items"], args.json,
                lambda d: {**d, "attached_size": d.get("attached_size") or "-"}, DISK_COLUMNS)
        return 0
    if args.action == "remove":
        client.request("DELETE", f"{base}/{args.disk}")
        answer = {"name": args.disk, "removed": True}
        text = f"{args.name}: disk {args.disk} removed and deleted"
    else:
        answer = client.request("PUT", f"{base}/{args.disk}", {"size": args.size})
        verb = "added" if args.action == "add" else "resized"
        text = f"{args.name}: disk {args.disk} {verb}, {answer['size']} MiB" if isinstance(
            answer, dict) and "size" in answer else f"{args.name}: disk {args.disk} {verb}"
    print_answer(answer, args.json, lambda _: text)
    return 0


def cmd_cdrom(client: Client, args: argparse.Namespace) -> int:
    base = f"/v1/vms/{args.name}/cdroms"
    if args.action == "list":
        listing(client.get(base)["items"], args.json,
                lambda c: {**c, "image": c["image"] or "(empty)"}, CDROM_COLUMNS)
        return 0
    image = args.image if args.action == "insert" else ""
    done = f"holds {image}" if image else "ejected"
    print_answer(client.request("PUT", f"{base}/{args.index}", {"image": image}), args.json,
                 lambda _: f"{args.name}: drive {args.index} {done}")
    return 0


COMMANDS = {"disk": cmd_disk, "cdrom": cmd_cdrom}

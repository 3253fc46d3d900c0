"""vmctl's VMs in and out (issue 16): each one REST call.

    adopt DOMAIN [--host H] [--name N] [--image I] [--copy-disks] [--start]
    export VM --format kubevirt [--disk-url URL | --container-disk IMAGE]
              [--cloud-init nocloud|configdrive]            (YAML on stdout)
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from appliance.cli.backups import NO_WAIT, _run
from appliance.client import Client
from appliance.kubevirt_export import CLOUD_INIT_KINDS, FORMATS


def add_move_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("adopt", help="manage an existing libvirt domain the appliance did not "
                                     "create (shut off; admins only)")
    p.add_argument("domain", help="the libvirt domain's name")
    p.add_argument("--host", default=None, help="its host (default: the only one)")
    p.add_argument("--name", default=None, help="the VM's name (default: the domain's)")
    p.add_argument("--image", default=None,
                   help="the base image to record (default: the one its root disk overlays)")
    p.add_argument("--copy-disks", dest="copy_disks", action="store_true",
                   help="copy its disks into the home (default: use them in place, which only "
                        "files under config adopt_disk_dirs may be)")
    p.add_argument("--start", action="store_true", help="start it once adopted")
    p.add_argument("--no-wait", dest="no_wait", action="store_true",
                   help="print the operation and return at once")
    p = sub.add_parser("export", help="print a VM as manifests for another platform (YAML)")
    p.add_argument("name")
    p.add_argument("--format", default="kubevirt", choices=FORMATS,
                   help="kubevirt: a kubevirt.io/v1 VirtualMachine (default: %(default)s)")
    disk = p.add_mutually_exclusive_group()
    disk.add_argument("--disk-url", dest="disk_url", default=None, metavar="URL",
                      help="where the DataVolume imports the root disk's qcow2 from "
                           "(default: a placeholder to replace)")
    disk.add_argument("--container-disk", dest="container_disk", default=None, metavar="IMAGE",
                      help="a containerDisk image for the root disk instead of a DataVolume")
    p.add_argument("--cloud-init", dest="cloud_init", default="nocloud", choices=CLOUD_INIT_KINDS,
                   help="the cloud-init volume's kind (default: %(default)s)")


def cmd_adopt(client: Client, args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"domain": args.domain, "copy_disks": args.copy_disks,
                            "state": "running" if args.start else "stopped"}
    for field in ("host", "name", "image"):
        if getattr(args, field):
            body[field] = getattr(args, field)
    answer = client.request("POST", "/v1/vms/adopt", body, query=NO_WAIT)
    name = (answer.get("vm") or {}).get("name", args.domain)
    return _run(client, args, "adopt", answer, f"{name}: adopted from domain {args.domain}")


def cmd_export(client: Client, args: argparse.Namespace) -> int:
    query = {"format": args.format, "disk_url": args.disk_url,
             "container_disk": args.container_disk, "cloud_init": args.cloud_init}
    text = client.request("GET", f"/v1/vms/{args.name}/export", query=query)
    sys.stdout.write(text if isinstance(text, str) else str(text))
    return 0


COMMANDS = {"adopt": cmd_adopt, "export": cmd_export}

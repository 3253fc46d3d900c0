"""vmctl key: add, list, show and remove one's SSH public keys (issue 15), which a
VM's `cloud_init.keys` names; each one REST call to /v1/keys."""
from __future__ import annotations

import argparse
import sys
import time

from appliance.cli.output import listing, print_json
from appliance.cli.values import readable_file
from appliance.client import Client
from appliance.model.sshkeys import MAX_KEY_BYTES

KEY_COLUMNS = [("NAME", "name"), ("TYPE", "type"), ("BITS", "bits"),
               ("FINGERPRINT", "fingerprint"), ("CREATED", "created")]


def add_key_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("key", help="your SSH public keys, for cloud_init.keys")
    keys = p.add_subparsers(dest="action", required=True)
    add = keys.add_parser("add", help="add a public key (an OpenSSH .pub line)")
    add.add_argument("name")
    add.add_argument("file", type=_key_file, help="the .pub file, or - for standard input")
    keys.add_parser("list", help="your keys (an admin: --user NAME, or '*' for everyone's)"
                    ).add_argument("--user", default=None)
    keys.add_parser("show", help="one key, with its public key").add_argument("name")
    keys.add_parser("rm", help="delete a key (VMs keep the copies they were given)"
                    ).add_argument("name")


def _key_file(path: str) -> str:
    return path if path == "-" else readable_file(path)  # a usage error when unreadable


def _read_key(path: str) -> str:
    """The key file's text, at most MAX_KEY_BYTES (more is the server's refusal too)."""
    if path == "-":
        data = sys.stdin.buffer.read(MAX_KEY_BYTES + 1)
    else:
        with open(path, "rb") as f:
            data = f.read(MAX_KEY_BYTES + 1)
    return data.decode("utf-8", "replace")


def _row(key: dict) -> dict:
    created = key.get("created")
    shown = time.strftime("%Y-%m-%d %H:%M", time.localtime(created)) if created else "-"
    return {**key, "created": shown}


def cmd_key(client: Client, args: argparse.Namespace) -> int:
    if args.action == "add":
        key = client.request("POST", "/v1/keys",
                             {"name": args.name, "public_key": _read_key(args.file)})
        if args.json:
            print_json(key)
        else:
            print(f"{key['name']}: added ({key['type']} {key['bits']} {key['fingerprint']})")
    elif args.action == "rm":
        client.request("DELETE", f"/v1/keys/{args.name}")
        print(f"{args.name}: removed")
    elif args.action == "show":
        key = client.get(f"/v1/keys/{args.name}")
        if args.json:
            print_json(key)
        else:
            print(f"{key['name']}: {key['type']} {key['bits']} {key['fingerprint']}")
            print(key["public_key"])
    else:
        listing(client.get("/v1/keys", user=args.user)["items"], args.json, _row, KEY_COLUMNS)
    return 0

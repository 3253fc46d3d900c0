"""vmctl's user, token and whoami commands: each one REST call, printed."""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from appliance.cli.output import listing, print_json
from appliance.client import Client

USER_COLUMNS = [("NAME", "name"), ("ROLE", "role"), ("PROJECTS", "projects"),
                ("STATE", "state"), ("CREATED", "created")]
TOKEN_COLUMNS = [("ID", "id"), ("USER", "user"), ("PREFIX", "prefix"), ("STATE", "state"),
                 ("CREATED", "created"), ("EXPIRES", "expires"), ("LAST USED", "last_used"),
                 ("DESCRIPTION", "description")]


def _when(stamp: float | None, missing: str = "-") -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(stamp)) if stamp else missing


def _user_row(user: dict) -> dict:
    return {"name": user["name"], "role": user["role"], "projects": ",".join(user["projects"]),
            "state": "disabled" if user["disabled"] else "enabled",
            "created": _when(user.get("created"))}


def _token_row(token: dict) -> dict:
    return {**token, "created": _when(token.get("created")),
            "expires": _when(token.get("expires"), "never"),
            "last_used": _when(token.get("last_used"), "never"),
            "description": token.get("description") or ""}


def _print_user(user: dict, json_out: bool, what: str) -> None:
    if json_out:
        print_json(user)
    else:
        row = _user_row(user)
        print(f"{row['name']}: {what} ({row['role']} in {row['projects']}, {row['state']})")


def _user_body(args: argparse.Namespace) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if args.role is not None:
        body["role"] = args.role
    if args.project:
        body["projects"] = args.project
    return body


def cmd_user(client: Client, args: argparse.Namespace) -> int:
    if args.action == "add":
        user = client.request("POST", "/v1/users", {"name": args.name, **_user_body(args)})
        _print_user(user, args.json, "added")
    elif args.action == "set":
        body = _user_body(args)
        if args.disabled is not None:
            body["disabled"] = args.disabled
        user = client.request("PATCH", f"/v1/users/{args.name}", body)
        _print_user(user, args.json, "changed")
    elif args.action == "rm":
        client.request("DELETE", f"/v1/users/{args.name}")
        print(f"{args.name}: removed, and their tokens")
    elif args.action == "show":
        _print_user(client.get(f"/v1/users/{args.name}"), args.json, "shown")
    else:
        listing(client.get("/v1/users")["items"], args.json, _user_row, USER_COLUMNS)
    return 0


def cmd_token(client: Client, args: argparse.Namespace) -> int:
    if args.action == "create":
        body = {"user": args.user, "expires": args.expires, "description": args.description}
        token = client.request("POST", "/v1/tokens", {k: v for k, v in body.items() if v})
        if args.json:
            print_json(token)
            return 0
        print(f"id       {token['id']}")
        print(f"user     {token['user']}")
        print(f"expires  {_when(token.get('expires'), 'never')}")
        print(f"token    {token['token']}")
        # On stderr: stdout stays the record alone, for a script to read.
        print("The token is shown this once: store it now (vmctl token list shows its id).",
              file=sys.stderr)
    elif args.action == "revoke":
        client.request("DELETE", f"/v1/tokens/{args.id}")
        print(f"{args.id}: revoked")
    else:
        items = client.get("/v1/tokens", user=args.user)["items"]
        listing(items, args.json, _token_row, TOKEN_COLUMNS)
    return 0


def cmd_whoami(client: Client, args: argparse.Namespace) -> int:
    me = client.get("/v1/me")
    if args.json:
        print_json(me)
        return 0
    lines = [("user", me["user"]), ("role", me["role"]), ("projects", ",".join(me["projects"])),
             ("project", me["project"]), ("token", me.get("token_id") or "-")]
    for label, value in lines:
        print(f"{label:<9} {value}")
    return 0

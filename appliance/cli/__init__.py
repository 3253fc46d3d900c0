"""vmctl: tables for people, --json for scripts; everything through the REST API
except `serve` (which runs it), `mount`, `exporter` and `doctor` (which must work
when it does not).

    parser.py   the commands and options (--help's defaults from appliance.model)
    vms.py      VMs and images          hosts.py   hosts and server groups
    access.py   users, tokens, whoami   projects.py  projects and quotas
    templates.py  templates (create, list, get, delete)
    consoles.py console, vnc, screenshot (terminal.py: raw mode and the pump)
    backups.py  snapshots, backups, backup targets, restore, clone (progress.py: waiting)
    disks.py    data disks and CD-ROM drives
    local.py    serve, mount, exporter, doctor, tls     output.py  tables and JSON
    pools.py    replica pools          networks.py  networks (issue 15)
    show.py     vmctl get              remotes.py   named remotes, the client config
    target.py   the global options; which URL and token a command uses (--url, --remote...)
    values.py   option values checked as parsed   usage.py  one-line usage errors, --help defaults
    docs.py     shell completion (shtab), the man page's parser (argparse-manpage)
    admin.py    admin backup | restore of the home's store and config (issue 16)
    moves.py    adopt a libvirt domain, export a VM (KubeVirt)
    keys.py     SSH public keys (issue 15), for cloud_init.keys
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from appliance.cli import (
    access,
    admin,
    backups,
    consoles,
    disks,
    docs,
    firewall,
    host_access,
    hosts,
    keys,
    local,
    moves,
    networks,
    output,
    pools,
    projects,
    remotes,
    show,
    templates,
    vms,
)
from appliance.cli.parser import STATE_COMMAND_HELP, build_parser
from appliance.cli.target import client_for
from appliance.cli.usage import check_combinations
from appliance.client import APIError, Client
from appliance.model import STATE_ALIASES, StateVerb

__all__ = ["build_parser", "main"]

# Commands that run here, without a client.
LOCAL_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": local.cmd_serve, "doctor": local.cmd_doctor, "mount": local.cmd_mount,
    "exporter": local.cmd_exporter, "tls": local.cmd_tls, "mount-map": local.cmd_mount_map,
    "remote": remotes.cmd_remote, "completion": docs.cmd_completion,
    "admin": admin.cmd_admin,  # backup | restore of the home (appliance/cli/admin.py)
}
# Commands that are one call of the REST API (or a poll of one).
API_COMMANDS: dict[str, Callable[[Client, argparse.Namespace], int]] = {
    "list": vms.cmd_list, "get": show.cmd_get, "create": vms.cmd_create, "rename": vms.cmd_rename,
    "delete": vms.cmd_delete, "console": consoles.cmd_console, "events": vms.cmd_events,
    "images": vms.cmd_images, "migrate": vms.cmd_migrate, "host": hosts.cmd_host,
    "group": hosts.cmd_group, "user": access.cmd_user, "token": access.cmd_token,
    "whoami": access.cmd_whoami, "project": projects.cmd_project, "lock": vms.cmd_lock,
    "unlock": vms.cmd_unlock, "vnc": consoles.cmd_vnc, "screenshot": consoles.cmd_screenshot,
    "cancel": vms.cmd_cancel, "template": templates.cmd_template, "pool": pools.cmd_pool,
    "set": vms.cmd_set, "network": networks.cmd_network, "key": keys.cmd_key,
    "rebuild": vms.cmd_rebuild,
    **backups.COMMANDS,  # snapshot, snapshots, revert, backup, backups, restore, clone...
    **disks.COMMANDS,  # disk, cdrom
    **moves.COMMANDS,  # adopt, export (issue 16)
    **firewall.COMMANDS,  # firewall (issue 15)
}
# vmctl's state subcommands and the state each asks for (the model's verbs and aliases).
STATE_COMMANDS: dict[str, str] = {command: STATE_ALIASES.get(command) or StateVerb(command)
                                  for command, _ in STATE_COMMAND_HELP}


def _run_api_command(client: Client, args: argparse.Namespace) -> int:
    if args.command in STATE_COMMANDS:
        return vms.set_state(client, args, STATE_COMMANDS[args.command])
    return API_COMMANDS[args.command](client, args)


def main(argv: list[str] | None = None) -> int:
    """vmctl; what it prints goes through output.Printable: no terminal control character
    the server sent (a name, an error, a value) reaches the terminal."""
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = output.Printable(out), output.Printable(err)
    try:
        return _main(argv)
    finally:
        sys.stdout, sys.stderr = out, err


def _main(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    check_combinations(args)  # a usage error (exit status 2) when options do not go together
    if args.command in LOCAL_COMMANDS:
        return LOCAL_COMMANDS[args.command](args)
    if args.command == "host" and args.action in host_access.ACTIONS:  # on this machine's home
        return host_access.cmd_host_access(args)
    try:
        client, target = client_for(args)
    except ValueError as err:  # a remote or trust option that cannot be used
        print(f"vmctl {args.command}: {err}", file=sys.stderr)
        return 2
    try:
        return _run_api_command(client, args)
    except APIError as err:
        # a 401 or no connection says which home, URL or remote it tried, and the token's source
        said = target.explain(err)
        print(f"vmctl {args.command}: {err}" + (f" ({said})" if said else ""), file=sys.stderr)
        return 1
    except BrokenPipeError:
        return 0
    except KeyboardInterrupt:
        return 130

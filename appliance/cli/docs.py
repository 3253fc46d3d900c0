"""vmctl's shell completion and man page, both made from the parser itself, so that
neither can fall behind a new command or option (issue 16):

    vmctl completion bash > /etc/bash_completion.d/vmctl   (or: source <(vmctl completion bash))
    vmctl completion zsh > "${fpath[1]}/_vmctl"
    make man                                                -> build/man/vmctl.1

Completion is shtab's (the scripts are generated from the argparse parser, with
files and directories completed where an option takes one, and VM names where a
command takes one: from `vmctl list`, run by the shell at each Tab with the same
environment, so the same home or remote; at most VM_LIST_SECONDS ($VMCTL_COMPLETE_SECONDS
overrides), and silent when the appliance does not answer: nothing is offered); the man page is
argparse-manpage's, from man_parser(): the same parser, with each option's default
written into its help as --help shows it, and the global options once, on vmctl
itself, rather than again under each of the ninety subcommands.
"""
from __future__ import annotations

import argparse
import sys

from appliance.cli.usage import DefaultsFormatter

SHELLS = ("bash", "zsh")
# Options and arguments that name a local file or directory (by dest).
FILE_DESTS = {"user_data", "meta_data", "network_config", "token_file", "ca_file", "tls_cert",
              "tls_key", "demo_image", "path", "file"}
DIRECTORY_DESTS = {"home", "mount"}
# The commands whose NAME is a VM's (not create's, which names a new one).
VM_NAME_COMMANDS = {"get", "start", "stop", "force-stop", "pause", "resume", "reboot", "suspend",
                    "shelve", "unshelve", "set", "rebuild", "rename", "delete", "console", "vnc",
                    "screenshot", "events", "lock", "unlock", "migrate", "snapshot", "snapshots",
                    "revert", "snapshot-delete", "backup", "backups", "restore", "clone", "export",
                    "disk", "cdrom"}
VM_LIST_SECONDS = 2
# Only what a VM name can be (a DNS label, model/values.py): the list is the server's
# answer, and bash's `compgen -W` expands each word ($(...), `...`) as it splits them.
_VM_NAMES = (f"timeout ${{VMCTL_COMPLETE_SECONDS:-{VM_LIST_SECONDS}}} vmctl list 2>/dev/null"
             " | awk 'NR > 1 && length($1) <= 63 && $1 ~ /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/"
             " {print $1}'")
VM_NAMES = {
    "bash": "_vmctl_vm_names",
    "zsh": "_vmctl_vm_names",
    "preamble": {
        "bash": f"""
# $1=COMP_WORDS[1]: the VMs `vmctl list` shows (nothing when it does not answer)
_vmctl_vm_names() {{
  compgen -W "$({_VM_NAMES})" -- "$1"
}}
""",
        "zsh": f"""
# the VMs `vmctl list` shows (nothing when it does not answer)
_vmctl_vm_names() {{
  local -a names
  names=(${{(f)"$({_VM_NAMES})"}})
  compadd -a names
}}
""",
    },
}


def add_completion_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("completion", help="print the shell completion script for bash or zsh")
    p.add_argument("shell", choices=SHELLS)


def _parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    from appliance.cli.target import subcommand_parsers

    return [parser, *subcommand_parsers(parser)]


def completion_script(shell: str) -> str:
    import shtab

    from appliance.cli.parser import build_parser

    parser = build_parser()
    for each in _parsers(parser):
        for action in each._actions:
            if action.dest in FILE_DESTS:
                action.complete = shtab.FILE  # type: ignore[attr-defined]
            elif action.dest in DIRECTORY_DESTS:
                action.complete = shtab.DIRECTORY  # type: ignore[attr-defined]
            elif (action.dest == "name" and not action.option_strings
                  and each.prog.split()[1:2] and each.prog.split()[1] in VM_NAME_COMMANDS):
                action.complete = VM_NAMES  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def cmd_completion(args: argparse.Namespace) -> int:
    sys.stdout.write(completion_script(args.shell))
    return 0


def man_parser() -> argparse.ArgumentParser:
    """The parser for argparse-manpage (`make man`)."""
    from appliance.cli.parser import build_parser

    parser = build_parser(nested_globals=False)
    for each in _parsers(parser):
        formatter = DefaultsFormatter(each.prog)
        for action in each._actions:
            if action.help is argparse.SUPPRESS:
                continue
            if isinstance(action.default, str) and action.default.startswith("./"):
                # a wrapped line starting with "." would be a roff request: the home's
                # default, ./.appliance, is said as $PWD/.appliance (never parsed here)
                action.default = "$PWD/" + action.default[2:]
            if action.help is None and formatter._shows_default(action):
                action.help = "(default: %(default)s)"
            else:
                action.help = formatter._get_help_string(action)
    return parser

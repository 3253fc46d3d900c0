"""How vmctl refuses a command line: one line that names the option, and exit
status 2 (issue 16), from argparse itself (the `type=` converters of
appliance/cli/values.py, unknown options, missing arguments) and from the checks
of options that only make sense together, which argparse cannot express.
"""
from __future__ import annotations

import argparse
import copy
import sys
from typing import NoReturn

from appliance.cli.values import readable_file

PROG_KEY = "_vmctl_prog"


def usage_error(prog: str, message: str) -> NoReturn:
    """`PROG: MESSAGE (see PROG --help)` on one line, exit status 2."""
    line = " ".join(message.split())
    print(f"{prog}: {line} (see {prog} --help)", file=sys.stderr)
    raise SystemExit(2)


class DefaultsFormatter(argparse.HelpFormatter):
    """--help shows every option's default (as ArgumentDefaultsHelpFormatter does),
    except where its help already names it or there is none to show (None, False)."""

    def _shows_default(self, action: argparse.Action) -> bool:
        default = action.default
        if default is None or default is False or default == [] or default == argparse.SUPPRESS:
            return False
        if not action.option_strings and action.nargs not in ("?", "*"):
            return False
        return "default" not in (action.help or "")

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if not self._shows_default(action):
            return action.help
        return f"{action.help or ''} (default: %(default)s)".strip()

    def _format_action(self, action: argparse.Action) -> str:
        if action.help is None and self._shows_default(action):
            action = copy.copy(action)  # an option without help still shows its default
            action.help = "(default: %(default)s)"
        return super()._format_action(action)


class Parser(argparse.ArgumentParser):
    """argparse's parser with a one-line error instead of the usage block
    (its subcommands' parsers are of this class too)."""

    def error(self, message: str) -> NoReturn:
        usage_error(self.prog, message)

    def parse_known_args(self, args=None, namespace=None):
        namespace, extras = super().parse_known_args(args, namespace)
        # the innermost subcommand's parser returns first: its name is kept
        vars(namespace).setdefault(PROG_KEY, self.prog)
        return namespace, extras

    def parse_args(self, args=None, namespace=None):
        """Unknown options are refused by the subcommand they were given to."""
        namespace, extras = self.parse_known_args(args, namespace)
        prog = vars(namespace).pop(PROG_KEY, self.prog)
        if extras:
            usage_error(prog, f"unrecognized arguments: {' '.join(extras)}")
        return namespace


def check_combinations(args: argparse.Namespace) -> None:
    """The options of one command that need each other (usage_error when not)."""
    prog = f"vmctl {args.command}"
    if args.command == "create":
        kind = (args.network or "").partition(":")[0]
        if args.ip and kind != "network":
            usage_error(prog, "argument --ip: a fixed IP needs a libvirt network: "
                              "add --network network:NAME")
        if args.forward and kind not in ("", "user"):
            usage_error(prog, "argument --forward: port forwards need user networking "
                              "(--network user, the default)")
    if args.command == "images" and args.action in ("import", "upload", "delete"):
        if not args.name:
            usage_error(prog, f"{args.action} needs NAME")
        if args.action != "delete" and not args.path:
            usage_error(prog, f"{args.action} needs NAME PATH")
        if args.action == "upload":
            try:
                readable_file(args.path)
            except argparse.ArgumentTypeError as err:
                usage_error(prog, f"argument path: {err}")

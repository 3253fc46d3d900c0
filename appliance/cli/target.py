"""Which appliance vmctl talks to, and how it says so (issue 16).

The global options --home, --json, --url, --token and --remote are accepted
before or after the subcommand: the root parser has them with their defaults, and every
subcommand's parser has them again with no default (argparse.SUPPRESS), so
that one given after the subcommand overrides the root's value and one not
given leaves it alone.

Where requests go, first found: --url, --remote NAME, $VMAPPLIANCE_URL,
$VMAPPLIANCE_REMOTE, the client config's default remote (appliance/cli/remotes.py;
not when a home is named with --home or $VMAPPLIANCE_HOME), else the listener of
the home (--home, $VMAPPLIANCE_HOME, ./.appliance). The token: --token,
$VMAPPLIANCE_TOKEN, the remote's token file, else the home's token file. VMCTL_URL, VMCTL_TOKEN and
VMAPP_HOME, the names of earlier versions, still count after the new ones.
Every target carries a phrase saying where it came from, which an error names
when a request is refused (401) or cannot connect.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
from importlib import metadata

from appliance import tls
from appliance.cli import remotes
from appliance.client import APIError, Client, home_fingerprint
from appliance.config import DEFAULT_HOME, Config

ENV_HOME = ("VMAPPLIANCE_HOME", "VMAPP_HOME")
ENV_URL = ("VMAPPLIANCE_URL", "VMCTL_URL")
ENV_TOKEN = ("VMAPPLIANCE_TOKEN", "VMCTL_TOKEN")


def from_env(names: tuple[str, ...]) -> tuple[str | None, str]:
    """The first of the variables that is set (and not empty), and its name."""
    for name in names:
        value = os.environ.get(name)
        if value:
            return value, name
    return None, names[0]


def default_home() -> str:
    return from_env(ENV_HOME)[0] or DEFAULT_HOME


def version() -> str:
    try:
        return metadata.version("vm-appliance")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def add_global_options(parser: argparse.ArgumentParser, nested: bool = False) -> None:
    """--home, --json, --url, --token, --remote; nested: on a subcommand's parser,
    without defaults, and only those the subcommand does not use itself."""
    group = parser.add_argument_group("global options (before or after the subcommand)")
    taken = parser._option_string_actions
    options: list[tuple[str, dict]] = [
        ("--home", dict(default=default_home(), metavar="DIR",
                        help="the appliance's home: config, token, store (env VMAPPLIANCE_HOME)")),
        ("--json", dict(action="store_true", help="machine-readable output")),
        ("--url", dict(default=None, help="the appliance's URL, e.g. https://lab:8443 "
                                          "(env VMAPPLIANCE_URL; default: the home's listener)")),
        ("--token", dict(default=None, help="the API token (env VMAPPLIANCE_TOKEN, which `ps` "
                                            "does not show; default: the home's token file)")),
        ("--remote", dict(default=None, metavar="NAME",
                          help="a remote of `vmctl remote list` (env VMAPPLIANCE_REMOTE; "
                               "default: the client config's default remote, else the home)")),
    ]
    for option, kwargs in options:
        if option in taken:
            continue
        if nested:
            kwargs = {**kwargs, "default": argparse.SUPPRESS}
        group.add_argument(option, **kwargs)


def subcommand_parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
    """Every parser under `parser` (not itself), each once."""
    found: list[argparse.ArgumentParser] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for child in dict.fromkeys(action.choices.values()):
                found += [child, *subcommand_parsers(child)]
    return found


@dataclasses.dataclass
class Target:
    """Where vmctl sends its requests, with the token, and a phrase for each
    saying where it came from (for the errors)."""

    url: str
    url_from: str
    token: str | None
    token_from: str
    home: Config | None = None  # the home whose listener (and certificate) it is
    remote: remotes.Remote | None = None

    def explain(self, err: APIError) -> str:
        """What an error adds when it is about reaching or being let in."""
        if err.status == 0:
            listener = self.url_from.startswith("the listener")
            return self.url_from + ("; is `vmctl serve` running there?" if listener else "")
        if err.status == 401:
            return f"sent to {self.url}, {self.url_from}, with {self.token_from}"
        return ""


def _home_config(home: str) -> tuple[Config, str]:
    config = Config.load(home)
    shown = f"home {config.home}"
    if not config.home.exists():
        shown += (" (no such directory: give --home or VMAPPLIANCE_HOME, "
                  "or --url or --remote)")
    return config, shown


def resolve(args: argparse.Namespace) -> Target:
    """The target of this command line (see the module's docstring)."""
    config, home_shown = _home_config(args.home)
    env_url, env_url_name = from_env(ENV_URL)
    flag = getattr(args, "remote", None)
    # a home named (--home, VMAPPLIANCE_HOME) is meant over the config's default remote
    named_home = args.home != DEFAULT_HOME
    remote, why = (None, "") if args.url else remotes.chosen(
        flag, default_too=not (env_url or named_home))
    if args.url:
        target = Target(args.url, "from --url", None, "")
    elif remote is not None and (flag or not env_url):
        target = Target(remote.url, f"remote {remote.name}, {why}", None, "",
                        remote=remote)
    elif env_url:
        target = Target(env_url, f"from ${env_url_name}", None, "")
    else:
        https = tls.tls_enabled(config)
        url = f"{'https' if https else 'http'}://{config.listen}"
        target = Target(url, f"the listener of {home_shown}", None, "", home=config)
    env_token, env_token_name = from_env(ENV_TOKEN)
    if args.token:
        target.token, target.token_from = args.token, "the token of --token"
    elif env_token:
        target.token, target.token_from = env_token, f"the token of ${env_token_name}"
    elif target.remote is not None:
        target.token = target.remote.token()
        target.token_from = (f"the token file {target.remote.token_file}" if target.token
                             else f"no token (remote {target.remote.name} has no token file)")
    elif config.token_path.exists():
        target.token, target.token_from = config.token(), f"the token file of {home_shown}"
        target.home = target.home or config
    else:
        target.token_from = f"no token ({home_shown} has no token file)"
    return target


def client_for(args: argparse.Namespace) -> tuple[Client, Target]:
    """The client of this command line; ValueError (said as a usage error) when the
    URL or the trust options cannot be used."""
    target = resolve(args)
    fingerprint, ca_file = args.fingerprint, args.ca_file
    if target.remote is not None and fingerprint is None and ca_file is None:
        fingerprint, ca_file = target.remote.fingerprint, target.remote.ca_file
    if (fingerprint is None and ca_file is None and target.home is not None
            and target.url_from.startswith("the listener") and target.url.startswith("https:")):
        fingerprint = home_fingerprint(target.home)  # the home's own certificate, pinned
    client = Client(target.url, target.token, fingerprint=fingerprint, ca_file=ca_file,
                    project=args.acting_project)
    return client, target

"""vmctl's named remotes, as `incus remote` has them (issue 16):

    vmctl remote add lab https://lab:8443 --token-file ~/.lab.token [--fingerprint FP]
                     [--accept-certificate] [--no-check]     (the server is asked first:
                                                              appliance/cli/remote_check.py)
    vmctl remote list | get-default | switch NAME | rm NAME
    vmctl --remote lab list        (or VMAPPLIANCE_REMOTE=lab)

They live in the client config, $VMCTL_CONFIG or $XDG_CONFIG_HOME/vmctl/config.toml
(~/.config/vmctl/config.toml), mode 0600:

    default-remote = "lab"

    [remotes.lab]
    url = "https://lab:8443"
    token-file = "/home/ann/.lab.token"
    fingerprint = "AB:CD:..."      # optional: pin the server's certificate
    ca-file = "/etc/ssl/lab-ca.pem"  # optional: or trust this CA

A remote names its token file, never the token: the file is read at each use and
refused unless it is a regular file of the user's (or root's) that others cannot
read or write, as ssh treats a private key. Nothing here prints a token. `local`
is the home's own listener (`vmctl remote switch local` makes it the default again).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

from appliance.cli.output import print_json, table

LOCAL = "local"
ENV_CONFIG = "VMCTL_CONFIG"
ENV_REMOTE = "VMAPPLIANCE_REMOTE"
NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,62}")
MAX_TOKEN_FILE = 4096
FIELDS = ("url", "token-file", "fingerprint", "ca-file")


class RemoteError(ValueError):
    """A remote that cannot be used as asked: said on one line, exit status 2."""


def config_path() -> Path:
    if os.environ.get(ENV_CONFIG):
        return Path(os.environ[ENV_CONFIG])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "vmctl" / "config.toml"


def check_token_file(path: Path) -> None:
    """Refuse a token file others may read or change (RemoteError)."""
    try:
        info = path.stat()
    except OSError as err:
        raise RemoteError(f"token file {path}: {err.strerror or err}") from None
    if not stat.S_ISREG(info.st_mode):
        raise RemoteError(f"token file {path} is not a regular file")
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise RemoteError(f"token file {path} can be read or written by others (mode "
                          f"{stat.S_IMODE(info.st_mode):04o}): chmod go-rwx {path}")
    if info.st_uid not in (os.getuid(), 0):
        raise RemoteError(f"token file {path} belongs to uid {info.st_uid}, not to you")


def read_token_file(path: Path) -> str:
    check_token_file(path)
    try:
        with path.open("rb") as source:
            data = source.read(MAX_TOKEN_FILE + 1)
    except OSError as err:
        raise RemoteError(f"token file {path}: {err.strerror or err}") from None
    token = data.decode(errors="replace").strip()
    if len(data) > MAX_TOKEN_FILE or not token or any(c.isspace() for c in token):
        raise RemoteError(f"token file {path} does not hold one token")
    return token


@dataclasses.dataclass
class Remote:
    name: str
    url: str
    token_file: str | None = None
    fingerprint: str | None = None
    ca_file: str | None = None

    def token(self) -> str | None:
        return None if self.token_file is None else read_token_file(Path(self.token_file))

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "url": self.url, "token_file": self.token_file,
                "fingerprint": self.fingerprint, "ca_file": self.ca_file}


@dataclasses.dataclass
class ClientConfig:
    path: Path
    remotes: dict[str, Remote]
    default: str | None = None

    @classmethod
    def load(cls, path: Path | None = None) -> ClientConfig:
        path = path or config_path()
        try:
            with path.open("rb") as source:
                data = tomllib.load(source)
        except FileNotFoundError:
            return cls(path, {})
        except (OSError, tomllib.TOMLDecodeError) as err:
            raise RemoteError(f"cannot read the client config {path}: {err}") from None
        remotes = {}
        for name, fields in (data.get("remotes") or {}).items():
            if not NAME.fullmatch(name) or not isinstance(fields, dict) or not isinstance(
                    fields.get("url"), str):
                raise RemoteError(f"{path}: remote {name!r} needs a name of a-z, 0-9, _ and - "
                                  "and a url")
            optional = {key.replace("-", "_"): fields[key] for key in FIELDS[1:]
                        if isinstance(fields.get(key), str)}
            remotes[name] = Remote(name, fields["url"], **optional)
        default = data.get("default-remote")
        return cls(path, remotes, default if default in remotes else None)

    def save(self) -> None:
        """Written whole, 0600, by a rename: never half a file."""
        lines = []
        if self.default:
            lines += [f"default-remote = {_quoted(self.default)}", ""]
        for name, remote in sorted(self.remotes.items()):
            lines.append(f"[remotes.{name}]")
            for key in FIELDS:
                value = getattr(remote, key.replace("-", "_"))
                if value is not None:
                    lines.append(f"{key} = {_quoted(value)}")
            lines.append("")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines))
        tmp.replace(self.path)

    def get(self, name: str) -> Remote:
        try:
            return self.remotes[name]
        except KeyError:
            raise RemoteError(f"no remote named {name!r} in {self.path} "
                              "(vmctl remote list)") from None


def _quoted(text: str) -> str:
    """A TOML basic string: JSON's escapes (\\", \\\\, \\n, \\uXXXX) are TOML's too."""
    return json.dumps(text, ensure_ascii=True)


def chosen(flag: str | None, default_too: bool = True) -> tuple[Remote | None, str]:
    """The remote a command line asks for, and why: --remote, else $VMAPPLIANCE_REMOTE,
    else (default_too) the config's default; (None, why) for the home's listener."""
    if flag:
        name, why = flag, "from --remote"
    elif os.environ.get(ENV_REMOTE):
        name, why = os.environ[ENV_REMOTE], f"from ${ENV_REMOTE}"
    elif not default_too:
        return None, ""
    else:
        config = ClientConfig.load()
        if config.default is None:
            return None, ""
        return config.remotes[config.default], f"the default remote of {config.path}"
    if name == LOCAL:
        return None, why
    try:
        return ClientConfig.load().get(name), why
    except RemoteError as err:
        raise RemoteError(f"argument {why.removeprefix('from ')}: {err}") from None


# -- vmctl remote -------------------------------------------------------------------------
def add_remote_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("remote", help="named appliances to talk to (kept in the client config, "
                                      "~/.config/vmctl/config.toml)")
    remotes = p.add_subparsers(dest="action", required=True)
    a = remotes.add_parser("add", help="add a remote")
    a.add_argument("name", type=remote_name)
    a.add_argument("url", type=https_url, help="https://HOST:PORT (http:// only to loopback)")
    a.add_argument("--token-file", dest="token_file", metavar="FILE",
                   help="a file holding the token, readable by you alone (it is read at each "
                        "use, never copied or printed)")
    a.add_argument("--fingerprint", type=fingerprint,
                   help="pin the server's certificate (vmctl tls fingerprint on the server)")
    a.add_argument("--ca-file", dest="ca_file", metavar="FILE",
                   help="trust certificates signed by this CA")
    a.add_argument("--accept-certificate", dest="accept_certificate", action="store_true",
                   help="pin the server's certificate without asking when this machine's CAs "
                        "do not trust it (as incus remote add)")
    a.add_argument("--no-check", dest="no_check", action="store_true",
                   help="keep it without asking the server (reachable, certificate, token)")
    remotes.add_parser("list", help="the remotes, the default marked")
    remotes.add_parser("get-default", help="the default remote's name")
    remotes.add_parser("switch", help=f"make NAME the default ({LOCAL}: the home's listener)"
                       ).add_argument("name")
    remotes.add_parser("rm", help="remove a remote").add_argument("name")


def remote_name(text: str) -> str:
    if not NAME.fullmatch(text) or text == LOCAL:
        raise argparse.ArgumentTypeError(
            f"{text[:64]!r} is not a remote name (a-z, 0-9, _ and -; not {LOCAL!r})")
    return text


def fingerprint(text: str) -> str:
    from appliance.tls import normalize_fingerprint

    try:
        return normalize_fingerprint(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def https_url(text: str) -> str:
    import ipaddress
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        parts = urlsplit("")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise argparse.ArgumentTypeError(f"{text[:80]!r} is not an http(s)://HOST:PORT URL")
    try:
        loopback = ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        loopback = parts.hostname == "localhost"
    if parts.scheme == "http" and not loopback:
        # the token would travel in clear text
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: plain http only to a loopback address")
    return text.rstrip("/")


def cmd_remote(args: argparse.Namespace) -> int:
    try:
        return REMOTE_ACTIONS[args.action](ClientConfig.load(), args)
    except RemoteError as err:
        print(f"vmctl remote: {err}", file=sys.stderr)
        return 2


def _add(config: ClientConfig, args: argparse.Namespace) -> int:
    if args.name in config.remotes:
        raise RemoteError(f"a remote named {args.name!r} exists (vmctl remote rm it first)")
    token_file, token = None, None
    if args.token_file:
        path = Path(args.token_file).expanduser().absolute()
        token = read_token_file(path)  # refused now rather than at the first use
        token_file = str(path)
    ca_file = str(Path(args.ca_file).expanduser().absolute()) if args.ca_file else None
    pin, accepted, me = args.fingerprint, False, None
    if not args.no_check:  # reachable, its certificate, the token (remote_check.py)
        from appliance.cli import remote_check

        pin, accepted = remote_check.certificate_pin(args.url, args.fingerprint, ca_file,
                                                     args.accept_certificate,
                                                     remote_check.ask_on_terminal())
        me = remote_check.check(args.url, token, pin, ca_file)
    config.remotes[args.name] = Remote(args.name, args.url, token_file, pin, ca_file)
    config.save()
    print(f"{args.name}: added ({args.url})")
    if accepted:
        print(f"  its certificate is pinned: SHA-256 fingerprint {pin}")
    if me is not None:
        print(f"  the token is accepted: user {me.get('user')} ({me.get('role')})")
    return 0


def _list(config: ClientConfig, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = [{"name": LOCAL, "url": "the home's listener (--home)",
                                   "token_file": "HOME/token", "default": config.default is None}]
    rows += [{**remote.as_dict(), "default": config.default == name}
             for name, remote in sorted(config.remotes.items())]
    if args.json:
        print_json(rows)
        return 0
    table([{**row, "name": row["name"] + (" (default)" if row["default"] else ""),
            "token_file": row["token_file"] or "-"} for row in rows],
          [("NAME", "name"), ("URL", "url"), ("TOKEN FILE", "token_file")])
    return 0


def _get_default(config: ClientConfig, args: argparse.Namespace) -> int:
    print(config.default or LOCAL)
    return 0


def _switch(config: ClientConfig, args: argparse.Namespace) -> int:
    config.default = None if args.name == LOCAL else config.get(args.name).name
    config.save()
    print(f"default remote: {args.name}")
    return 0


def _remove(config: ClientConfig, args: argparse.Namespace) -> int:
    config.get(args.name)
    del config.remotes[args.name]
    if config.default == args.name:
        config.default = None
    config.save()
    print(f"{args.name}: removed")
    return 0


REMOTE_ACTIONS = {"add": _add, "list": _list, "get-default": _get_default, "switch": _switch,
                  "rm": _remove}

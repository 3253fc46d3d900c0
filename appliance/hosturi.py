"""Host URIs: parsed and allow-listed before libvirt ever sees one.

The appliance runs as root, and a libvirt URI is a program to run as much as
an address: `qemu+ext:///system?command=/path` runs the command, an ssh URI's
user name and `netcat`/`command`/`proxy` parameters end up on a command line,
`test:///FILE` reads FILE. So a host URI from the API or the mount is taken
only in the shapes a user needs (SECURITY.md):

    qemu:///system                          the appliance's own libvirt
    qemu+ssh://[user@]host[:port]/system    ssh, with the appliance's key and
                                            known_hosts (HOME/ssh)
    qemu+tls://host[:port]/system           TLS, with the appliance's CA (HOME/pki)
    qemu+tcp://host[:port]/system           plain TCP (libvirt's SASL, if any)
    qemu+unix:///system[?socket=PATH]       a libvirtd on this machine, PATH
                                            under one of config host_socket_dirs
    test:///default                         libvirt's test driver, test mode only

Query parameters: `socket` (as above), `keyfile` (under HOME/ssh only),
`no_verify` (0 or 1) and `mode` (auto, legacy, direct); nothing else.
The credentials are the appliance's to add (appliance/host_access.py): a user
may not name `pkipath`, `known_hosts`, `known_hosts_verify` nor `sshauth`, and
libvirt's libssh2 transport is what the appliance opens, never what a user types.
"""
from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from appliance import paths
from appliance.errors import Invalid
from appliance.jsonio import shown

if TYPE_CHECKING:
    from appliance.config import Config

FIELD = "uri"
MAX_LENGTH = 1024
REMOTE_SCHEMES = ("qemu+ssh", "qemu+tls", "qemu+tcp")
SCHEMES = ("qemu", "qemu+unix", *REMOTE_SCHEMES, "test")
_USER = re.compile(r"[A-Za-z_][A-Za-z0-9._-]{0,31}")
_HOSTNAME = re.compile(
    r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*"
)
_IPV6 = re.compile(r"\[[0-9A-Fa-f:.]{2,45}\]")
_PATH_CHARS = re.compile(r"/[A-Za-z0-9/._-]{1,200}")
PARAM_VALUES = {"no_verify": ("0", "1"), "mode": ("auto", "legacy", "direct")}
SHAPES = ("qemu:///system, qemu+ssh://root@h2/system, qemu+tls://h2/system, qemu+tcp://h2/system "
          "or qemu+unix:///system?socket=/path/libvirt-sock")


def _refuse(reason: str) -> Invalid:
    return Invalid(f"{reason}; a host URI is one of {SHAPES}", FIELD)


def _under(path: str, directories: Iterable[str | Path]) -> bool:
    """Whether path, with every symlink and `..` resolved, lies inside one of directories
    (appliance/paths.py)."""
    return any(paths.inside(path, directory) for directory in directories)


def _check_path_param(name: str, value: str, directories: Iterable[str | Path], where: str) -> None:
    if not _PATH_CHARS.fullmatch(value) or "/../" in value + "/" or "/./" in value + "/":
        raise _refuse(f"{name}= must be an absolute path of letters, digits and / . _ -")
    if value == "/proc" or value.startswith("/proc/"):
        # realpath reads /proc/PID/root as "/", but the kernel follows it into PID's root
        # and mount namespace: what realpath says would not be where libvirt connects.
        raise _refuse(f"{name}= may not go through /proc")
    if not _under(value, directories):
        raise _refuse(f"{name}= must name a path under {where}")


def _check_authority(parts: urllib.parse.SplitResult) -> None:
    netloc = parts.netloc
    user, at, hostport = netloc.rpartition("@")
    if at and not _USER.fullmatch(user):
        raise _refuse("the user name may hold letters, digits and . _ - only (no /, %, : or @)")
    host, port = hostport, ""
    if hostport.startswith("["):
        host, _, rest = hostport.partition("]")
        host += "]"
        if rest and not rest.startswith(":"):
            raise _refuse("unexpected text after the IPv6 address")
        port = rest[1:]
        if not _IPV6.fullmatch(host):
            raise _refuse("not an IPv6 address in brackets")
    else:
        host, _, port = hostport.partition(":")
        if not _HOSTNAME.fullmatch(host):
            raise _refuse("the host must be a DNS name or an IP address")
    if port and (not port.isdigit() or not 1 <= int(port) <= 65535):
        raise _refuse("the port must be a number from 1 to 65535")


def validate(uri: object, socket_dirs: Iterable[str | Path], key_dir: str | Path,
             allow_test: bool = False) -> str:
    """The URI, unchanged, when it has one of the allowed shapes; Invalid(field "uri") otherwise."""
    parts = _split(uri)
    if parts.scheme == "test":
        if not allow_test or uri != "test:///default":
            raise _refuse("libvirt's test driver is for the appliance's own tests")
        return str(uri)
    if parts.path != "/system":
        raise _refuse("the path must be /system (the appliance drives system-wide libvirtds)")
    if parts.scheme in REMOTE_SCHEMES:
        if not parts.netloc:
            raise _refuse(f"{parts.scheme} needs a host: {parts.scheme}://HOST/system")
        _check_authority(parts)
    elif parts.netloc:
        raise _refuse(f"{parts.scheme} takes no host: {parts.scheme}:///system")
    _check_query(parts, socket_dirs, key_dir)
    return str(uri)


def _split(uri: object) -> urllib.parse.SplitResult:
    """The parts of a printable, bounded URI with an allowed scheme and no fragment."""
    if not isinstance(uri, str) or not uri:
        raise _refuse("must be a string")
    if len(uri) > MAX_LENGTH:
        raise Invalid(f"must be at most {MAX_LENGTH} characters", FIELD)
    if not uri.isascii() or not uri.isprintable() or " " in uri:
        raise _refuse("must be printable ASCII without spaces")
    try:
        parts = urllib.parse.urlsplit(uri)
    except ValueError:  # unbalanced [ ] around a host: a refusal, not a 500 (nor EIO in the mount)
        raise _refuse("the host is not a name or an [IPv6] address") from None
    if parts.scheme not in SCHEMES:
        raise _refuse(f"transport {shown(parts.scheme or uri)} is not allowed")
    if parts.fragment or uri.endswith("#"):
        raise _refuse("a fragment (#...) is not allowed")
    return parts


def _check_query(parts: urllib.parse.SplitResult, socket_dirs: Iterable[str | Path],
                 key_dir: str | Path) -> None:
    if ";" in parts.query:
        raise _refuse("separate parameters with & only")  # libvirt splits on ; as well
    try:
        params = urllib.parse.parse_qsl(
            parts.query, keep_blank_values=True, strict_parsing=bool(parts.query), max_num_fields=8
        )
    except ValueError:
        raise _refuse("the query is not key=value pairs") from None
    seen: set[str] = set()
    for name, value in params:
        if name in seen:
            raise _refuse(f"{name}= is given twice")
        seen.add(name)
        if name == "socket":
            _check_path_param(name, value, socket_dirs, "config host_socket_dirs ("
                              + ", ".join(str(d) for d in socket_dirs) + ")")
        elif name == "keyfile":
            if parts.scheme != "qemu+ssh":
                raise _refuse("keyfile= is for qemu+ssh")
            _check_path_param(name, value, [key_dir], f"the appliance's key folder {key_dir}")
        elif name in PARAM_VALUES:
            if value not in PARAM_VALUES[name]:
                raise _refuse(f"{name}= must be one of {', '.join(PARAM_VALUES[name])}")
        else:
            raise _refuse(
                f"the parameter {name}= is not allowed (allowed: socket, keyfile, no_verify, mode)"
            )


def refused(uri: str, config: Config) -> str | None:
    """Why a host URI found in the store is not to be opened (None: it may be).
    A URI recorded before this allowlist existed, or written into the store by
    hand, is not opened by the controller nor by /metrics. The appliance's own
    libvirt_uri is the admin's choice on the command line and always allowed."""
    if uri == config.libvirt_uri:
        return None
    try:
        validate(uri, config.host_socket_dirs, config.ssh_dir, allow_test=config.allow_test_hosts)
    except Invalid as err:
        return f"its URI is not allowed ({err.reason}); change it with PATCH /v1/hosts/NAME"
    return None

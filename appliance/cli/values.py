"""vmctl's option values, checked as they are parsed: each converter is an argparse
`type=` that raises ArgumentTypeError, so that a bad value is one line naming its
option (`vmctl create: argument --forward: ...`) and exit status 2, never a
traceback from the command that would have used it (issue 16).

They check the form only; the appliance checks the rest (ranges, names that
exist) and names the field in its refusal.
"""
from __future__ import annotations

import argparse
import ipaddress
import re
from pathlib import Path

from appliance.model import NETWORK_TYPES

MAX_TEXT_FILE = 1 << 20  # cloud-init parts travel in the spec: the API's body bound
_SIZE = re.compile(r"\s*\d{1,20}\s*([KMGT](i?B)?)?\s*", re.IGNORECASE)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_PORT = re.compile(r"[0-9]{1,5}")


def _shown(text: str) -> str:
    return repr(text[:60] + ("..." if len(text) > 60 else ""))


def port(text: str) -> int:
    if not _PORT.fullmatch(text) or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a port (1-65535)")
    return int(text)


def port_forward(text: str) -> dict:
    """HOSTPORT:GUESTPORT[/tcp|/udp], as the spec's port_forwards item."""
    ports, _, protocol = text.partition("/")
    host, sep, guest = ports.partition(":")
    if not sep or protocol not in ("", "tcp", "udp"):
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not HOSTPORT:GUESTPORT[/udp], e.g. 8022:22")
    try:
        forward = {"host_port": port(host), "guest_port": port(guest)}
    except argparse.ArgumentTypeError as err:
        raise argparse.ArgumentTypeError(f"{_shown(text)}: {err}, e.g. 8022:22") from None
    return {**forward, "protocol": protocol} if protocol else forward


def size(text: str) -> str:
    """A size as the appliance takes it: MiB, or with a unit (512M, 2G, 1GiB)."""
    if not _SIZE.fullmatch(text):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a size such as 512, 512M or 2G")
    return text.strip()


def new_disk(text: str) -> dict:
    """NAME:SIZE (or NAME=SIZE), an extra blank disk."""
    name, sep, amount = text.replace("=", ":", 1).partition(":")
    if not sep or not _NAME.fullmatch(name):
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not NAME:SIZE or NAME=SIZE, e.g. data:10G")
    return {"name": name, "size": size(amount)}


def text_file(path: str) -> str:
    """The file's text (cloud-init's parts), read now: a missing or unreadable file
    is refused here, by name."""
    try:
        with Path(path).open("rb") as source:
            data = source.read(MAX_TEXT_FILE + 1)
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {err.strerror or err}") from None
    if len(data) > MAX_TEXT_FILE:
        raise argparse.ArgumentTypeError(f"{path} is larger than {MAX_TEXT_FILE} bytes")
    try:
        return data.decode()
    except UnicodeDecodeError:
        raise argparse.ArgumentTypeError(f"{path} is not UTF-8 text") from None


def readable_file(path: str) -> str:
    """A local file that must exist and be readable (an image to upload)."""
    try:
        with Path(path).open("rb"):
            pass
    except OSError as err:
        raise argparse.ArgumentTypeError(f"cannot read {path}: {err.strerror or err}") from None
    return path


def ipv4(text: str) -> str:
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not an IPv4 address") from None


def network(text: str) -> str:
    """none | user | network:NAME."""
    kind, sep, name = text.partition(":")
    if kind not in NETWORK_TYPES or (sep and not _NAME.fullmatch(name)) or (
            kind == "network") != bool(sep):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not none, user or network:NAME")
    return text


def dhcp_range(text: str) -> str:
    """START-END, two IPv4 addresses."""
    start, sep, end = text.partition("-")
    try:
        ipv4(start)
        if sep:
            ipv4(end)
    except argparse.ArgumentTypeError:
        raise argparse.ArgumentTypeError(
            f"{_shown(text)} is not START-END, e.g. 10.20.0.100-10.20.0.200") from None
    return text


def listen_address(text: str) -> str:
    """HOST:PORT (an IPv6 host in brackets)."""
    host, sep, number = text.rpartition(":")
    if not sep or not host or (":" in host and not (host.startswith("[") and host.endswith("]"))):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not HOST:PORT, e.g. 127.0.0.1:8080")
    port(number)
    return text


def positive_int(text: str) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()) or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a whole number of at least 1")
    return int(text)


def count(text: str) -> int:
    """A whole number of at least 0 (replicas, keep counts, bytes of history)."""
    if not re.fullmatch(r"[0-9]{1,9}", text.strip()):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a whole number")
    return int(text)


def ratio(text: str) -> float:
    """An overcommit ratio: a positive number."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a positive number")
    return value

"""What the mount takes from a caller before the service sees anything: how
many bytes a file's value may have, which names may be made, and how much of
a value a log line quotes. (Who may change what is the policy's: fs/guard.py.)

The mount serves root's appliance to other users, so each of these is checked
in the operation itself, not left to the kernel's mode checks alone: a mode
that changes later must not open them.
"""
from __future__ import annotations

import errno
import re

import pyfuse3

from appliance.errors import Invalid
from appliance.files import CONSOLE_INPUT_MAX_BYTES
from appliance.spec import validate_name

Path = tuple[str, ...]

# A value file holds one short line (a state, a count, a size, a host name, a URI: a
# URI's socket path is at most 108 bytes, PATH_MAX 4096); a JSON file holds a VM's
# spec or a server group. The write buffer, and the NULs a write past its end pads
# with, never exceed these: EFBIG instead (one byte at 256 MiB grew the mount to 7.6 GB).
VALUE_MAX_BYTES = 4 << 10
JSON_MAX_BYTES = 1 << 20
# By file name; any other file is a JSON file if it ends in .json, a value file if not.
MAX_BYTES: dict[str, int] = {
    "spec.json": JSON_MAX_BYTES,
    "state": VALUE_MAX_BYTES,
    "cpus": VALUE_MAX_BYTES,
    "memory": VALUE_MAX_BYTES,
    "host": VALUE_MAX_BYTES,
    "uri": VALUE_MAX_BYTES,
    "console": CONSOLE_INPUT_MAX_BYTES,  # one write, typed as it comes (not a value)
}


def max_bytes(path: Path) -> int:
    """The most bytes a value written to this file may have."""
    file = path[-1] if path else ""
    if file in MAX_BYTES:
        return MAX_BYTES[file]
    return JSON_MAX_BYTES if file.endswith(".json") else VALUE_MAX_BYTES


def check_size(path: Path, size: int) -> None:
    """EFBIG for a value (or a truncate) larger than the file may hold."""
    if size > max_bytes(path):
        raise pyfuse3.FUSEError(errno.EFBIG)


# A name the mount makes (a VM, a host, a server group) is a DNS label: no whitespace
# and no control character, at the end either ($ in a regex matches before a final "\n").
_PLAIN = re.compile(r"[^\s\x00-\x1f\x7f]+")


def check_name(name: str, field: str = "name") -> str:
    """The service's name rule, and whole-string: Invalid (EINVAL) before anything is recorded."""
    if not _PLAIN.fullmatch(name):
        raise Invalid("must be a DNS label: no spaces or control characters", field)
    return validate_name(name, field)


# Log lines quote a value or a reason by its start only: a refused value can be as long
# as its file's cap, and what a caller wrote is not the log's to keep.
LOG_EXCERPT_CHARS = 120


def excerpt(value: object, limit: int = LOG_EXCERPT_CHARS) -> str:
    """repr-like text of value, cut to limit characters with the total length noted."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} chars)"

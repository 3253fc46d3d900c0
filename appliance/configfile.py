"""The appliance's settings as a TOML file: /etc/vm-appliance/config.toml of the
Debian package (`vmctl serve --config FILE`), read with tomllib.

The file has the keys of the Config dataclass (appliance/config.py) but
config_version, each written by example() with its default and the comment
above its field in config.py, so the documentation cannot drift from the code:
`python -m appliance.configfile` prints it, and a unit test fails when
packaging/deb/config.toml differs from that. A key whose value may be None
takes "" for none. The home a clone's `vmctl --home H serve` keeps in
H/config.json is untouched: serve still writes the config it runs with there.
"""
from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import json
import tokenize
import tomllib
import types
import typing
from pathlib import Path
from typing import Any

from appliance.config import Config

PACKAGE_HOME = "/var/lib/vm-appliance"
# Keys the file does not carry: the version of config.json's defaults (config.py),
# and the path of the file itself (serve records it in config.json).
INTERNAL = frozenset({"config_version", "config_file"})
# The values a key may take, where Config says so only in a comment.
CHOICES: dict[str, tuple[str, ...]] = {
    "accel": ("auto", "kvm", "tcg"),
    "tls": ("auto", "on", "off"),
    "placement": ("spread", "pack"),
}
MAX_FILE_BYTES = 1 << 20

HEADER = """\
# vm-appliance's settings: vm-appliance.service runs
#   vmctl serve --config /etc/vm-appliance/config.toml
# then `systemctl restart vm-appliance` takes a change.
#
# Every key is listed with its default, commented out: uncomment a line to
# change it. Relative paths are relative to home; "" is "none" for the keys
# that may have no value. A key vmctl does not know stops serve with its name.
# (Generated from the Config dataclass, appliance/config.py, with
# `python -m appliance.configfile`: the comments are the code's.)
"""


class ConfigFileError(ValueError):
    """The file cannot be read, is not TOML, or has a key or value serve refuses."""


def keys() -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if f.name not in INTERNAL]


def field_docs() -> dict[str, str]:
    """Each field's comment in config.py: the comment lines right above it (no
    blank line between) and the one at its line's end."""
    source = inspect.getsource(Config)
    comments: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            comments[tok.start[0]] = tok.string.lstrip("#").strip()
    lines = source.splitlines()
    cls = ast.parse(source).body[0]
    assert isinstance(cls, ast.ClassDef)  # noqa: S101  inspect.getsource(Config) is the class
    docs: dict[str, str] = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above: list[str] = []
        line = node.lineno - 1
        while line >= 1 and line in comments and lines[line - 1].lstrip().startswith("#"):
            above.insert(0, comments[line])
            line -= 1
        if node.lineno in comments:
            above.append(comments[node.lineno])
        docs[node.target.id] = " ".join(above)
    return docs


def _toml_value(value: Any) -> str:
    if value is None:
        return '""'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        value = str(value)
    # json's escapes of a string are TOML's basic string's (ensure_ascii: \\uXXXX)
    return json.dumps(value)


def _wrap(text: str, width: int = 78) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width - 2:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}" if line else word
    return [*lines, line] if line else lines


def example(home: str = PACKAGE_HOME) -> str:
    """The documented file: every key with its comment and its default."""
    docs = field_docs()
    hints = typing.get_type_hints(Config)
    defaults = Config(home=Path(home))
    out = [HEADER.rstrip("\n")]
    for field in keys():
        doc = docs.get(field.name, "")
        if not doc:
            raise ConfigFileError(f"Config.{field.name} has no comment in appliance/config.py")
        if _optional(hints[field.name])[0]:
            doc = doc.replace("None", '""')  # the file's spelling of none
        out.append("")
        out.extend(f"# {line}" for line in _wrap(doc))
        if field.name in CHOICES:
            out.append(f"# One of: {', '.join(CHOICES[field.name])}.")
        value = _toml_value(getattr(defaults, field.name))
        # home is the one key the package sets: the others keep the code's defaults.
        out.append(f"{field.name} = {value}" if field.name == "home"
                   else f"# {field.name} = {value}")
    return "\n".join(out) + "\n"


def _optional(kind: Any) -> tuple[bool, Any]:
    """(whether the type admits None, the type without None)"""
    if isinstance(kind, types.UnionType) and type(None) in typing.get_args(kind):
        return True, next(a for a in typing.get_args(kind) if a is not type(None))
    return False, kind


def _convert(name: str, kind: Any, value: Any) -> Any:
    """value as the field's type, or ConfigFileError naming the key."""
    optional, kind = _optional(kind)
    if optional and value == "":
        return None
    if kind is bool and isinstance(value, bool):
        return value
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is float and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind in (str, Path) and isinstance(value, str):
        if name in CHOICES and value not in CHOICES[name]:
            raise ConfigFileError(f"{name}: {value!r} is not one of {', '.join(CHOICES[name])}")
        return value
    if typing.get_origin(kind) is list and isinstance(value, list) \
            and all(isinstance(item, str) for item in value):
        return list(value)
    expected = (str(kind) if typing.get_origin(kind) else kind.__name__) \
        + (' (or "" for none)' if optional else "")
    raise ConfigFileError(f"{name}: expected {expected}, not {type(value).__name__} {value!r}")


def parse(text: str, default_home: str | Path) -> Config:
    """A Config from the file's text: its keys over Config's defaults; its home,
    else default_home."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigFileError(f"not TOML: {err}") from None
    hints = typing.get_type_hints(Config)
    known = {field.name for field in keys()}
    values: dict[str, Any] = {}
    for name, value in data.items():
        if name not in known:
            raise ConfigFileError(f"{name}: no such key (the keys: {', '.join(sorted(known))})")
        values[name] = _convert(name, hints[name], value)
    if "home" in values and not Path(values["home"]).is_absolute():
        raise ConfigFileError(f"home: {values['home']!r} must be an absolute path")
    return Config(home=Path(values.pop("home", default_home)), **values)


def load(path: str | Path, default_home: str | Path) -> Config:
    """parse() of the file at path; ConfigFileError names the file."""
    try:
        with open(path, "rb") as src:
            raw = src.read(MAX_FILE_BYTES + 1)
    except OSError as err:
        raise ConfigFileError(f"{path}: {err.strerror}") from None
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigFileError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
    try:
        return parse(raw.decode("utf-8"), default_home)
    except UnicodeDecodeError:
        raise ConfigFileError(f"{path}: not UTF-8") from None
    except ConfigFileError as err:
        raise ConfigFileError(f"{path}: {err}") from None


if __name__ == "__main__":
    print(example(), end="")

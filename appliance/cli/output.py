"""What vmctl prints: tables for people, JSON for scripts (--json)."""
from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from typing import Any


def print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, sort_keys=True))


def table(rows: list[dict], columns: list[tuple[str, str]]) -> None:
    """Rows as aligned columns; columns are (HEADER, key)."""
    cells = [[header for header, _ in columns]]
    cells += [["" if row.get(key) is None else str(row[key]) for _, key in columns] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def pair(text: str) -> tuple[str, str]:
    """KEY=VALUE, for --label and --node-selector (argparse names the option on error)."""
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"{text!r} is not KEY=VALUE")
    return key, value


def labels_text(labels: dict | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def wait_query(args: argparse.Namespace) -> dict:
    """The query of a call that waits for its operation unless --no-wait."""
    return {"wait": "false"} if getattr(args, "no_wait", False) else {}


def print_answer(answer: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """A command's answer: as JSON (--json), or the line text(answer) for people."""
    if as_json:
        print_json(answer)
    else:
        print(text(answer))


def print_outcome(result: dict, as_json: bool, done: Callable[[dict], str]) -> None:
    """The answer of a call that may only start an operation (--no-wait, 202): as JSON, or
    `accepted: operation ID` when it carries no VM yet, else done(the VM)."""
    print_answer(result, as_json, lambda r: done(r) if "name" in r
                 else f"accepted: operation {r['operation']['id']}")


def listing(items: list[dict], as_json: bool, row: Any, columns: list[tuple[str, str]]) -> None:
    """A list command's answer: the items as JSON, or one table row each (row(item))."""
    if as_json:
        print_json(items)
    else:
        table([row(item) for item in items], columns)


# C0 controls but tab and newline, DEL and C1 (0x9b is a one-byte CSI): what a terminal acts on.
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7f, *range(0x80, 0xa0)) if c not in (9, 10)}


def printable(text: str) -> str:
    """text with each terminal control character shown as \\xNN: a name, message or value
    from the server (a hostile one, or a guest's text it relays) cannot move the cursor,
    retitle the window, write the clipboard (OSC 52) or hide what was printed."""
    return text.translate(_CONTROLS)


class Printable(io.TextIOBase):
    """vmctl's stdout or stderr with printable() applied to every write: the print
    boundary of the commands that show what the server sent. Bytes (a screenshot on
    sys.stdout.buffer) and the console's own stream (terminal.py: os.write) pass as
    they are; `raw` is the unfiltered stream, for a console log (--log), which is the
    guest's terminal output as a console shows it."""

    def __init__(self, raw: Any):
        self.raw = raw

    def write(self, text: str) -> int:
        self.raw.write(printable(text))
        return len(text)

    def flush(self) -> None:
        self.raw.flush()

    def isatty(self) -> bool:
        return self.raw.isatty()

    def fileno(self) -> int:
        return self.raw.fileno()

    @property
    def buffer(self) -> Any:
        return self.raw.buffer

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return self.raw.encoding


def unfiltered(stream: Any) -> Any:
    """The stream under a Printable (the stream itself otherwise)."""
    return stream.raw if isinstance(stream, Printable) else stream

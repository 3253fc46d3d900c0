"""The README's shell sessions, read and replayed (tests/integration/test_readme.py).

A ```console block is a session: a line starting with `$ ` is a command, the
lines after it, up to the next `$ `, are what it prints (stdout and stderr).
Expected output may hold placeholders, as Python doctest's ELLIPSIS:

- `...` inside a line matches any text on that line (times, ids, sizes);
- a line that is only `...` matches any number of lines, none included.

Trailing spaces are ignored. An HTML comment right before a block says how it
runs (the README's Tests section documents both):

- `<!-- doctest: skip (REASON) -->`: not run, and REASON says why (reported
  as a skipped test); a skip without a reason is an error;
- `<!-- doctest: continue -->`: run in the shell of the block before (its
  working directory and variables), instead of a new one.

Every other block runs, each in a new bash started in the test's repository
directory, so no block is left out silently.
"""
from __future__ import annotations

import dataclasses
import os
import re
import select
import subprocess
import time
import uuid
from pathlib import Path

MARKER_RE = re.compile(r"^<!--\s*doctest:\s*(?P<what>.*?)\s*-->\s*$")
SKIP_RE = re.compile(r"^skip\s*\((?P<reason>.+)\)$")


class ReadmeFormatError(ValueError):
    pass


@dataclasses.dataclass
class Command:
    line: int           # 1-based line of the `$ ` in the README
    command: str
    expected: list[str]


@dataclasses.dataclass
class Block:
    line: int           # 1-based line of the ```console fence
    section: str        # the nearest heading above it
    commands: list[Command]
    skip: str | None = None      # the reason, when marked skip
    continues: bool = False      # runs in the previous block's shell

    index: int = 1               # its number within its section

    @property
    def id(self) -> str:
        """Stable while lines move: the section's slug and the block's number in it."""
        slug = re.sub(r"[^a-z0-9]+", "-", self.section.lower()).strip("-") or "top"
        return f"{slug}-{self.index}"


def _marker(lines: list[str], fence: int) -> str | None:
    """The doctest marker on the line before the fence (index), blank lines between allowed."""
    i = fence - 1
    while i >= 0 and not lines[i].strip():
        i -= 1
    if i < 0:
        return None
    m = MARKER_RE.match(lines[i].strip())
    return m.group("what") if m else None


def parse(text: str) -> list[Block]:
    lines = text.splitlines()
    blocks: list[Block] = []
    section = ""
    in_fence = False
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("```"):
            if not in_fence and line.strip() == "```console":
                blocks.append(_read_block(lines, i, section))
                blocks[-1].index = sum(1 for b in blocks if b.section == section)
                i = blocks[-1].end  # type: ignore[attr-defined]
                continue
            in_fence = not in_fence
        elif not in_fence and line.startswith("#"):
            section = line.lstrip("#").strip()
        elif not in_fence and MARKER_RE.match(line.strip()):
            nxt = i + 1
            while nxt < len(lines) and not lines[nxt].strip():
                nxt += 1
            if nxt >= len(lines) or not lines[nxt].startswith("```"):
                raise ReadmeFormatError(f"README.md:{i + 1}: a doctest marker not followed by a code block")
        i += 1
    return blocks


def _read_block(lines: list[str], fence: int, section: str) -> Block:
    commands: list[Command] = []
    i = fence + 1
    while i < len(lines) and lines[i].strip() != "```":
        line = lines[i]
        if line.startswith("$ "):
            commands.append(Command(i + 1, line[2:], []))
        elif commands:
            commands[-1].expected.append(line)
        elif line.strip():
            raise ReadmeFormatError(f"README.md:{i + 1}: output before the block's first `$ ` command")
        i += 1
    if i >= len(lines):
        raise ReadmeFormatError(f"README.md:{fence + 1}: the ```console block is not closed")
    block = Block(fence + 1, section, commands)
    what = _marker(lines, fence)
    if what is not None:
        skip = SKIP_RE.match(what)
        if skip and skip.group("reason").strip():
            block.skip = skip.group("reason").strip()
        elif what == "continue":
            block.continues = True
        else:
            raise ReadmeFormatError(f"README.md:{fence}: unknown doctest marker {what!r} "
                                    "(`skip (REASON)` with a reason, or `continue`)")
    if not commands:
        raise ReadmeFormatError(f"README.md:{fence + 1}: a ```console block without a `$ ` command")
    block.end = i + 1  # type: ignore[attr-defined]
    return block


def pattern(expected: list[str]) -> re.Pattern[str]:
    """The regex for expected output lines with `...` placeholders."""
    parts = []
    for line in expected:
        line = line.rstrip()
        if line.strip() == "...":
            parts.append(r"(?:[^\n]*\n)*?")
        else:
            parts.append("[^\n]*?".join(re.escape(piece) for piece in line.split("...")) + r"\n")
    return re.compile("".join(parts))


def normalize(output: str) -> str:
    lines = [line.rstrip() for line in output.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return "".join(line + "\n" for line in lines)


def matches(expected: list[str], actual: str) -> bool:
    exp = list(expected)
    while exp and not exp[-1].strip():
        exp.pop()
    return pattern(exp).fullmatch(normalize(actual)) is not None


class Shell:
    """One bash, fed a command at a time; each command's output (stdout and
    stderr together, stdin from /dev/null) is read up to an end marker."""

    def __init__(self, cwd: Path, env: dict[str, str]):
        self.end = f"__readme_doctest_{uuid.uuid4().hex}__"
        self.proc = subprocess.Popen(["bash", "--noprofile", "--norc"], cwd=cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.buffer = b""

    def run(self, command: str, timeout: float) -> tuple[str, int]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        # A brace group runs in this shell: cd, export and variables carry over.
        script = f"{{ {command}\n}} </dev/null 2>&1\nprintf '\\n%s %s\\n' {self.end} $?\n"
        self.proc.stdin.write(script.encode())
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout
        tail = re.compile(rb"\n" + re.escape(self.end.encode()) + rb" (\d+)\n")
        while True:
            found = tail.search(self.buffer)
            if found:
                out = self.buffer[:found.start()]
                self.buffer = self.buffer[found.end():]
                return out.decode(errors="replace"), int(found.group(1))
            left = deadline - time.monotonic()
            if left <= 0:
                so_far = self.buffer.decode(errors="replace")
                raise TimeoutError(f"{command!r} did not finish within {timeout} s; it printed "
                                   f"{len(so_far)} characters, from:\n{so_far[:1500]}\n...\n{so_far[-1500:]}")
            ready, _, _ = select.select([self.proc.stdout], [], [], min(left, 1.0))
            if ready:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    raise RuntimeError(f"bash exited running {command!r}:\n"
                                       f"{self.buffer.decode(errors='replace')[-3000:]}")
                self.buffer += chunk

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)  # the bash we started and what it left running
            except ProcessLookupError:
                pass
            self.proc.wait(10)
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()

"""Waiting for an operation in vmctl: long polls of GET /v1/operations/ID, and on a
terminal a one-line progress bar from the operation's bytes_done / bytes_total (a
copy's progress: backup, restore, clone) or the seconds a stop or a migration has
taken, redrawn in place on stderr; for several operations at once (a host's
drain), how many of them have ended (follow_all).

Hand-written rather than a library's (tqdm, rich): one line of output, and no new
dependency on an appliance host for it.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TextIO

from appliance.cli.output import printable, unfiltered, wait_query
from appliance.client import Client
from appliance.model import FINAL_OP_STATES, OpStatus

POLL_SECONDS = 1.0  # each GET long-polls this long (the server returns sooner when it ends)
BAR_WIDTH = 30
MIB = 1 << 20


def bar(op: dict, width: int = BAR_WIDTH) -> str:
    """`kind [#####.....]  42%  120.0/256.0 MiB`; without a byte count yet, the kind
    and status alone; once it succeeded, full."""
    done, total = op.get("bytes_done"), op.get("bytes_total")
    if not total or done is None:
        return f"{op['kind']}: {op['status']}"
    if op["status"] == OpStatus.SUCCEEDED:
        # libvirt counts what it copied, not the unallocated parts it went past: an ended
        # copy has gone through all of it
        done = total
    fraction = min(max(done / total, 0.0), 1.0)
    filled = int(fraction * width)
    return (f"{op['kind']} [{'#' * filled}{'.' * (width - filled)}] {fraction:4.0%}  "
            f"{done / MIB:.1f}/{total / MIB:.1f} MiB")


def follow(client: Client, op: dict, stream: TextIO | None = None,
           tty: bool | None = None, note: str | None = None) -> dict:
    """The operation once it ended, drawing its progress on a terminal meanwhile.
    Ctrl-C stops following (KeyboardInterrupt goes on up: vmctl exits 130), not the
    operation: what to type to cancel it is printed. note: an operation without a
    byte count (a stop, a migration) shows the seconds it has taken and this note."""
    # its own \r redraws the line: written past vmctl's filter (output.Printable), the
    # server's text in it filtered here
    out = unfiltered(stream if stream is not None else sys.stderr)
    draw = out.isatty() if tty is None else tty
    shown = ""
    started = time.monotonic()
    try:
        while op["status"] not in FINAL_OP_STATES:
            if draw:
                line = bar(op)
                if note is not None and not op.get("bytes_total"):
                    line += f", {time.monotonic() - started:.0f} s{note}"
                if line != shown:
                    out.write("\r" + printable(line).ljust(len(shown)))
                    out.flush()
                    shown = line
            op = client.get(f"/v1/operations/{op['id']}", wait=POLL_SECONDS)
    except KeyboardInterrupt:
        out.write(("\n" if shown else "") + printable(stopped_following(op)) + "\n")
        out.flush()
        raise
    if draw and shown:
        line = bar(op) if op["status"] == OpStatus.SUCCEEDED else ""
        out.write("\r" + printable(line).ljust(len(shown)) + "\n")
        out.flush()
    return op


def count_bar(what: str, done: int, total: int, failed: int = 0, unit: str = "VMs moved",
              width: int = BAR_WIDTH) -> str:
    """`drain h3 [######......] 2/5 VMs moved` (`, 1 failed` when some did)."""
    filled = int(width * done / total) if total else width
    line = f"{what} [{'#' * filled}{'.' * (width - filled)}] {done}/{total} {unit}"
    return line + (f", {failed} failed" if failed else "")


def follow_all(client: Client, op_ids: list[str], what: str,
               stream: TextIO | None = None) -> list[dict]:
    """The operations once every one ended, drawing how many have (count_bar) on
    `stream` (stderr) meanwhile: the caller knows it is a terminal. One long poll at
    a time (the first still open, POLL_SECONDS), the others read as they are. Ctrl-C
    stops following, not the operations (KeyboardInterrupt goes on up)."""
    # its own \r redraws the line: written past vmctl's filter (output.Printable), the
    # server's text in it filtered here
    out = unfiltered(stream if stream is not None else sys.stderr)
    ops = {op_id: client.get(f"/v1/operations/{op_id}") for op_id in op_ids}
    shown = ""
    try:
        while True:
            ended = [op for op in ops.values() if op["status"] in FINAL_OP_STATES]
            failed = sum(op["status"] != OpStatus.SUCCEEDED for op in ended)
            line = count_bar(what, len(ended) - failed, len(ops), failed)
            if line != shown:
                out.write("\r" + printable(line).ljust(len(shown)))
                out.flush()
                shown = line
            still = [op_id for op_id, op in ops.items() if op["status"] not in FINAL_OP_STATES]
            if not still:
                break
            for n, op_id in enumerate(still):
                ops[op_id] = client.get(f"/v1/operations/{op_id}",
                                        **({"wait": POLL_SECONDS} if n == 0 else {}))
    except KeyboardInterrupt:
        out.write(f"\nvmctl: stopped following; the {what} goes on (vmctl host list, "
                  "vmctl events)\n")
        out.flush()
        raise
    out.write("\n")
    out.flush()
    return list(ops.values())


def on_terminal(args: argparse.Namespace) -> bool:
    """Whether vmctl follows an operation itself to draw its progress: on a terminal,
    unless --json or --no-wait (quiet when piped: the server waits, as before)."""
    return (not getattr(args, "json", False) and not getattr(args, "no_wait", False)
            and sys.stderr.isatty())


def waited(client: Client, args: argparse.Namespace, method: str, path: str, body: Any,
           command: str, note: Callable[[], str] = lambda: "") -> dict | int:
    """The answer of a call (path: /v1/vms/NAME/SUFFIX) that starts an operation on a
    VM, once the operation ended: the server waits for it (?wait) off a terminal; on
    one, vmctl asks it not to and follows the operation, drawing how long it has taken
    (and note()), then reads the VM at /v1/vms/NAME. An int: the exit status of an
    operation that failed (said on stderr)."""
    if not on_terminal(args):
        answer: dict = client.request(method, path, body, query=wait_query(args))
        return answer
    answer = client.request(method, path, body, query={"wait": "false"})
    if "name" in answer or answer.get("operation") is None:
        return answer  # nothing to wait for (already so)
    op = follow(client, answer["operation"], tty=True, note=note())
    status = outcome(op, command)
    if status:
        return status
    vm: dict = client.get(path.rsplit("/", 1)[0])
    return {**vm, "operation": op}


def chunks(path: str, stream: TextIO | None = None, tty: bool = False,
           size: int = 1 << 20) -> Iterator[bytes]:
    """The file's bytes in chunks of `size`, drawing how much was sent on a terminal
    (`upload [###....]  42%  120.0/256.0 MiB`): what an image upload sends."""
    # its own \r redraws the line: written past vmctl's filter (output.Printable), the
    # server's text in it filtered here
    out = unfiltered(stream if stream is not None else sys.stderr)
    total = os.path.getsize(path)
    sent, shown = 0, ""
    with open(path, "rb") as source:
        while chunk := source.read(size):
            sent += len(chunk)
            yield chunk
            if tty:
                line = bar({"kind": "upload", "status": "running", "bytes_done": sent,
                            "bytes_total": total})
                if line != shown:
                    out.write("\r" + printable(line).ljust(len(shown)))
                    out.flush()
                    shown = line
    if shown:
        out.write("\n")
        out.flush()


def stopped_following(op: dict) -> str:
    """What Ctrl-C while following prints: the operation goes on, and how to cancel it."""
    return (f"vmctl: stopped following; the {op['kind']} goes on (operation {op['id']}). "
            f"To cancel it: vmctl cancel {op['id']}")


def outcome(op: dict, command: str) -> int:
    """0 for a succeeded operation; else its failure on stderr and 1."""
    if op["status"] == OpStatus.SUCCEEDED:
        return 0
    print(f"vmctl {command}: {op['kind']} {op['status']}: {op.get('error') or 'no reason given'}",
          file=sys.stderr)
    return 1

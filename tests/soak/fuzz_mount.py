"""Mount fuzzing (issue 17): random bytes, sizes, offsets and open flags written into every
writable file of the real mount (the soak's `vmctl serve` and its mount child).

The files are found by walking the mount (owner-writable regular files: a VM's state,
spec.json, cpus, memory, host, rebuild, lock and console, a snapshot's action, a host's
state, the same under projects/), over two VMs (one running, one stopped with a
snapshot). Each write is one of: random bytes; a valid word with random bytes after it;
a valid word at a random offset; zero bytes with O_TRUNC; a large or huge write; with
O_TRUNC, O_APPEND or neither, at offsets from 0 to 2^40. Checked after each: the mount
process is the same and answers (no crash); the write was refused with an errno, at the
write or at close (EINVAL, EFBIG, ...), or it is one of the files whose content is free
text by design (console: typed into the guest; lock: the reason); a refused write changed
nothing in the store (tests/soak/store_changes.py, read with no operation busy).
"""
from __future__ import annotations

import errno
import logging
import os
import random
import stat
import time
from collections import Counter
from pathlib import Path

from tests.soak.spent import Spent
from tests.soak.store_changes import StoreChanges
from tests.soak.world import VM_MEMORY, SoakWorld

log = logging.getLogger("soak.fuzz_mount")
FREE_TEXT = {"console", "lock"}  # what any bytes may be written to (and are taken)
WORDS = [b"running", b"stopped", b"force-stop", b"paused", b"2", b"64M", b"local", b"demo", b"revert",
         b"enabled", b"{}", b'{"cpus": 2}', b"1", b"0"]


def writable_files(mnt: Path) -> list[Path]:
    found = []
    for root, _dirs, files in os.walk(mnt):
        for name in files:
            path = Path(root) / name
            try:
                if path.stat().st_mode & stat.S_IWUSR:
                    found.append(path)
            except OSError:
                continue
    return sorted(found)


def garbage(rng: random.Random) -> tuple[bytes, int, int, str]:
    """(data, offset, extra open flags, what it is)."""
    kind = rng.choice(("random", "word+junk", "word@offset", "truncate", "large", "huge-offset"))
    junk = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    if kind == "random":
        data, offset = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 4096))), rng.choice((0, 0, 3, 4095))
    elif kind == "word+junk":
        data, offset = rng.choice(WORDS) + b"\x00" + junk, 0
    elif kind == "word@offset":
        data, offset = rng.choice(WORDS) + b"\n", rng.choice((1, 7, 4096, 1 << 20))
    elif kind == "truncate":
        data, offset = b"", 0
    elif kind == "large":
        data, offset = rng.randbytes(rng.choice((65537, 1 << 20, (2 << 20) + 1))), 0
    else:
        data, offset = rng.choice(WORDS), rng.choice((1 << 31, 1 << 40, (1 << 62)))
    flags = os.O_TRUNC if kind == "truncate" else rng.choice((0, os.O_TRUNC, os.O_APPEND))
    if kind in ("word@offset", "huge-offset") and flags == os.O_APPEND:
        flags = 0  # appended, a word is a valid value: not garbage
    return data, offset, flags, kind


def write_once(path: Path, data: bytes, offset: int, flags: int) -> str | None:
    """None when the whole write and the close went through, else the errno's name."""
    try:
        fd = os.open(path, os.O_WRONLY | flags)
    except OSError as err:
        return errno.errorcode.get(err.errno or 0, str(err.errno))
    failure = None
    try:
        done = 0
        while done < len(data):  # a short write is retried from where it stopped, as cp and shells do
            rest = data[done:]
            done += os.write(fd, rest) if flags & os.O_APPEND else os.pwrite(fd, rest, offset + done)
    except OSError as err:
        failure = errno.errorcode.get(err.errno or 0, str(err.errno))
    finally:
        try:
            os.close(fd)
        except OSError as err:
            failure = failure or errno.errorcode.get(err.errno or 0, str(err.errno))
    return failure


def setup_vms(world: SoakWorld) -> None:
    world.delete_all_vms()
    app = world.app
    for body in ({"name": "fz-run", "memory": VM_MEMORY},
                 {"name": "fz-stop", "memory": VM_MEMORY, "state": "stopped"}):
        resp = app.api("POST", "/v1/vms", json=body)
        resp.raise_for_status()
    app.api("POST", "/v1/vms/fz-stop/snapshots", json={"name": "s1"}).raise_for_status()


def run_fuzz_mount(world: SoakWorld, count: int, budget: float, seed: int = 17) -> dict:
    rng = random.Random(seed)
    setup_vms(world)
    files = writable_files(world.mnt)
    db_path = world.app.home / "appliance.db"
    errnos: Counter = Counter()
    accepted: Counter = Counter()
    failures: list[str] = []
    crashes = 0
    writes = 0
    t0 = time.monotonic()
    store_changes = StoreChanges(db_path)
    spent = Spent()  # seconds of the writes by what they were spent on (logged each round)
    timed = spent.timed

    mount = _process(world.mount_pid())
    settled = False  # converged since the last write
    try:
        while writes < count and time.monotonic() - t0 < budget:
            path = rng.choice(files)
            rel = path.relative_to(world.mnt)
            data, offset, flags, kind = garbage(rng)
            if not settled:
                with timed("converge"):
                    world.converge(30)
            settled = False
            before = store_changes.mark()
            with timed("write"):
                result = write_once(path, data, offset, flags)
            writes += 1
            if writes % 100 == 0:
                log.info("%d writes in %.0f s; %s", writes, time.monotonic() - t0,
                         spent.line())
            label = f"{rel} ({kind}, {len(data)} bytes at {offset}, flags {flags:#o})"
            with timed("mount alive"):  # the same process (/proc: a ps per write cost 12 ms), answering
                crashed = mount is None or _process(mount[0]) != mount or not _answers(world.mnt)
            if crashed:
                crashes += 1
                failures.append(f"mount crashed after {label}")
                world.wait_mount()
                mount = _process(world.mount_pid())
            if result is None:
                accepted[f"{rel.name} ({'empty' if kind == 'truncate' else 'data'})"] += 1
                if rel.name in FREE_TEXT:
                    if rel.name == "lock":
                        os.unlink(path)  # unlocked again: the other files stay writable
                    continue
                if kind != "truncate":  # an empty write is no write: it must change nothing either
                    failures.append(f"accepted: {label}: {data[:60]!r}")
            else:
                errnos[result] += 1
                if result in ("ENOTCONN", "EIO", "ECONNABORTED"):
                    failures.append(f"{result}: {label}")
            with timed("converge"):
                world.converge(30)
            settled = True
            with timed("check"):
                changed = store_changes.since(before)
            if changed:
                failures.append(f"changed on a write refused or empty ({result}): {label}: {'; '.join(changed)[:400]}")
    finally:
        store_changes.close()
    return {"writes": writes, "files": len(files), "file_names": sorted({p.name for p in files}),
            "errnos": dict(errnos.most_common()), "accepted": dict(accepted.most_common()),
            "mount_crashes": crashes, "failures": len(failures), "failure_examples": failures[:15],
            "spent_s": spent.record()}


def _process(pid: int | None) -> tuple[int, str] | None:
    """(pid, its start time) while it lives (not a zombie), else None: the same process
    when equal (a pid used again has another start time)."""
    if pid is None:
        return None
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rpartition(")")[2].split()  # after the command's name, which may hold spaces
    return None if fields[0] in ("Z", "X") else (pid, fields[19])


def _answers(mnt: Path) -> bool:
    try:
        os.listdir(mnt / "vms")
        return True
    except OSError:
        return False

"""Full standalone copies of a VM's disks with `qemu-img convert` (a clone's).

The source is one of the appliance's own disk files: a qcow2 whose backing
file, if any, is the VM's base image. Its header is read first (no qemu
involved: images.qcow2_backing) and the copy is refused unless the backing
file is exactly the expected image with its format recorded, so qemu never
probes a format nor follows a name it was not meant to. Formats are pinned
(-f qcow2 -O qcow2), no shell.

From an internal snapshot, `-l snapshot.name=S` reads the disk as the
snapshot holds it. With `force_share` (-U) the file may be read while its VM
runs: what a snapshot holds cannot change under the copy, since qcow2 copies
a cluster or an L2 table on write while a snapshot still refers to it
(refcount > 1), and the snapshot table changes only when a snapshot is taken
or deleted, which the controller does not do while the copy holds the VM.
Without a snapshot a running VM's disk is not read this way (its current
state changes under the copy): a backup job copies it instead.
"""
from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from appliance.errors import Failed
from appliance.model.values import DNS_LABEL
from appliance.virt import images

log = logging.getLogger("vmctl.disk_copy")

_SNAPSHOT_NAME = re.compile(DNS_LABEL)
_PROGRESS = re.compile(rb"\((\d+(?:\.\d+)?)/100%\)")
POLL_SECONDS = 0.2


def check_source(path: Path, backing: tuple[str, str] | None) -> None:
    """The disk file stands alone, or its backing file is exactly `backing`
    (path, format): Failed with the reason otherwise, before qemu opens it."""
    try:
        name, fmt = images.qcow2_backing(path)
    except FileNotFoundError:
        raise Failed(f"{path.name} is missing") from None
    except Exception as err:  # noqa: BLE001 - Invalid and OSError alike: the reason, no path
        raise Failed(f"{path.name} is not a disk this appliance made: "
                     f"{getattr(err, 'reason', type(err).__name__)}") from None
    if name is None:
        return
    if backing is None or name != backing[0] or fmt != backing[1]:
        raise Failed(f"{path.name} has a backing file the appliance did not give it")


def detach_backing(path: Path, allowed: tuple[str, str]) -> None:
    """A full copy made by a backup job, made standalone: the backing file
    libvirt recorded (only ever `allowed`: the source disk) is dropped from
    its header (`qemu-img rebase -u -b ""`: no data is read or changed, the
    old backing file is not opened)."""
    try:
        name, _fmt = images.qcow2_backing(path)
    except Exception as err:  # noqa: BLE001 - Invalid and OSError alike: the reason, no path
        raise Failed(f"{path.name} is not a disk copy: "
                     f"{getattr(err, 'reason', type(err).__name__)}") from None
    if name is None:
        return
    if name != allowed[0]:
        raise Failed(f"{path.name} has a backing file the appliance did not give it")
    try:
        done = subprocess.run(  # noqa: S603 - qemu-img from PATH, no shell, format pinned
            ["qemu-img", "rebase", "-u", "-f", "qcow2", "-b", "", str(path)],  # noqa: S607
            capture_output=True, text=True, timeout=120,
        )
    except FileNotFoundError:
        raise Failed("qemu-img is not installed (apt-get install qemu-utils)") from None
    if done.returncode != 0:
        log.warning("qemu-img rebase %s: %s", path, done.stderr.strip()[:2000])
        raise Failed(f"making {path.name} stand alone failed: {_short(done.stderr.strip())}")
    check_source(path, None)


def convert_args(source: Path, dest: Path, snapshot: str | None = None,
                 force_share: bool = False) -> list[str]:
    args = ["qemu-img", "convert", "-p", "-f", "qcow2", "-O", "qcow2"]
    if force_share:
        args.append("-U")
    if snapshot is not None:
        if not _SNAPSHOT_NAME.fullmatch(snapshot):
            raise Failed("not a snapshot name")
        args += ["-l", f"snapshot.name={snapshot}"]
    return [*args, str(source), str(dest)]


def convert(source: Path, dest: Path, snapshot: str | None = None, force_share: bool = False,
            progress: Callable[[float], None] | None = None,
            timeout: float = images.CONVERT_TIMEOUT,
            cancelled: Callable[[], bool] | None = None) -> None:
    """A standalone qcow2 at `dest` (replaced whole: written beside it, renamed)
    with the data of `source` (as `snapshot` holds it); check_source first.
    `progress(fraction)` is told how far qemu-img is; `cancelled()` is polled and
    stops the copy (qemu-img killed, the partial file removed, Failed("cancelled"))."""
    tmp = dest.with_name(f".{dest.name}.copy")
    tmp.unlink(missing_ok=True)
    try:
        stopped, returncode, stderr = follow_convert(
            convert_args(source, tmp, snapshot, force_share), progress, cancelled, timeout)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if stopped == "cancelled":
        tmp.unlink(missing_ok=True)
        raise Failed("cancelled")
    if stopped or returncode != 0:
        tmp.unlink(missing_ok=True)
        log.warning("qemu-img convert %s: %s", source, stderr[:2000])
        raise Failed(f"copying {source.name} " + (stopped or f"failed: {_short(stderr)}"))
    tmp.replace(dest)
    if progress is not None:
        progress(1.0)


def follow_convert(args: list[str], progress: Callable[[float], None] | None,
                   cancelled: Callable[[], bool] | None, timeout: float,
                   pass_fds: tuple[int, ...] = ()) -> tuple[str | None, int, str]:
    """Run a `qemu-img convert -p` command line, telling `progress(fraction)` how far
    it is and polling `cancelled()`: (why it was stopped — "cancelled" or "timed
    out" — or None, its exit status, its stderr stripped). A stopped or
    interrupted qemu-img is killed; what it wrote is the caller's to remove."""
    proc = subprocess.Popen(  # noqa: S603 - the callers' qemu-img lines: no shell, formats pinned
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=pass_fds,
    )
    assert proc.stdout is not None and proc.stderr is not None  # noqa: S101 - PIPEs above
    os.set_blocking(proc.stdout.fileno(), False)
    deadline = time.monotonic() + timeout
    stopped: str | None = None
    try:
        while proc.poll() is None:
            if cancelled is not None and cancelled():
                stopped = "cancelled"
            elif time.monotonic() > deadline:
                stopped = "timed out"
            if stopped:
                break
            found = _PROGRESS.findall(proc.stdout.read() or b"")
            if found and progress is not None:
                progress(float(found[-1]) / 100)
            time.sleep(POLL_SECONDS)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    return stopped, proc.returncode, proc.stderr.read().decode("utf-8", "replace").strip()


def _short(stderr: str) -> str:
    """qemu-img's last line, without the paths it quotes (they are the appliance's)."""
    line = stderr.splitlines()[-1] if stderr else "no reason given"
    return re.sub(r"'[^']*'", "'…'", line)[:200]

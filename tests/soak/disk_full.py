"""Disk full (issue 17): the appliance's home on a small file system, filled up.

The home is a 400 MiB ext4 file system in a file, loop-mounted (O_DIRECT works there,
as QEMU's cache=none needs; a tmpfs would refuse it). A real `vmctl serve` (world.py)
with three VMs (one running) is started on it, then a file fills the file system to
the last block. While it is full, `rounds` times each: a create (REST and mkdir in the
mount), an image upload, a start, a state write in the mount; and the reads: GET /v1/vms,
GET /v1/vms/NAME, `cat vms/NAME/state`, `ls vms`. Checked: every write is refused with a
clear error (HTTP 507, or ENOSPC in the mount; anything else is listed); every read
answers; `PRAGMA integrity_check` is ok while full. Then the file is removed and: the
VMs from before are there as they were, a create and an upload succeed, every VM
converges, no orphan, integrity ok.
"""
from __future__ import annotations

import errno
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

import requests

from tests.soak.world import VM_MEMORY, SoakWorld, make_blank_image

FS_MIB = 400
CLEAR = {"507", "ENOSPC"}


def fill(path: Path) -> int:
    """Write path until the file system has no block left: the bytes written."""
    written = 0
    with open(path, "wb", buffering=0) as f:
        for size in (4 << 20, 64 << 10, 4096, 512, 1):
            chunk = b"\xa5" * size
            while True:
                try:
                    written += f.write(chunk) or 0
                except OSError as err:
                    if err.errno != errno.ENOSPC:
                        raise
                    break
        try:
            os.fsync(f.fileno())
        except OSError:
            pass
    return written


class DiskFull:
    def __init__(self, base: Path):
        self.base = base
        self.image = base / "home.ext4"
        self.home = base / "home"
        self.mounted = False

    def __enter__(self) -> "DiskFull":
        self.base.mkdir(parents=True, exist_ok=True)
        with open(self.image, "wb") as f:
            f.truncate(FS_MIB << 20)
        subprocess.run(["mkfs.ext4", "-q", "-F", "-m", "0", str(self.image)], check=True)
        self.home.mkdir(exist_ok=True)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.home)], check=True)
        self.mounted = True
        return self

    def __exit__(self, *exc) -> None:
        for log in ("serve.log", "logs"):  # kept for a look: the file system goes
            src = self.home / log
            try:
                if src.is_dir():
                    shutil.copytree(src, self.base / log, dirs_exist_ok=True)
                elif src.exists():
                    shutil.copy(src, self.base / log)
            except OSError:
                pass
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.home)], check=False)
        self.image.unlink(missing_ok=True)


def rest(app, reasons: dict, what: str, method: str, path: str, **kwargs) -> str:
    """The outcome of one request: accepted, its status, or how it went without one."""
    try:
        resp = app.api(method, path, timeout=60, **kwargs)
    except requests.RequestException as err:
        reasons.setdefault(f"{what}: no answer", str(err)[:200])
        return "no answer"
    if resp.status_code < 300:
        return "accepted"
    reasons.setdefault(f"{what} {resp.status_code}", resp.text[:200])
    return str(resp.status_code)


def outcome_mount(call) -> str:
    try:
        call()
    except OSError as err:
        return errno.errorcode.get(err.errno or 0, str(err.errno))
    return "accepted"


def run_disk_full(base: Path, rounds: int = 5) -> dict:
    results: dict = {"writes": {}, "reads": {}, "findings": []}
    with DiskFull(base):
        world = SoakWorld(base)
        try:
            world.start()
            app = world.app
            for name, state in (("full-a", "running"), ("full-b", "stopped"), ("full-c", "stopped")):
                app.api("POST", "/v1/vms", json={"name": name, "memory": VM_MEMORY, "state": state}).raise_for_status()
            before = {vm["name"]: (vm["id"], vm["desired_state"]) for vm in world.vms()}
            upload = make_blank_image(base / "upload.img").read_bytes()
            filler = world.app.home / "filler"
            results["filled_bytes"] = fill(filler)
            writes: dict[str, Counter] = {k: Counter() for k in (
                "create (REST)", "create (mkdir)", "upload", "start (REST)", "state (mount)")}
            reads: dict[str, Counter] = {k: Counter() for k in ("GET /v1/vms", "GET /v1/vms/NAME", "cat state",
                                                                 "ls vms")}
            reasons: dict[str, str] = {}
            t0 = time.monotonic()
            for i in range(rounds):
                writes["create (REST)"][rest(app, reasons, "create", "POST", "/v1/vms", json={
                    "name": f"new-{i}", "memory": VM_MEMORY, "state": "stopped"})] += 1
                writes["create (mkdir)"][outcome_mount(lambda: os.mkdir(world.mnt / "vms" / f"newm-{i}"))] += 1
                writes["upload"][rest(app, reasons, "upload", "PUT", f"/v1/images/up{i}", data=upload,
                                      headers={"Content-Type": "application/octet-stream"})] += 1
                started = rest(app, reasons, "start", "PUT", "/v1/vms/full-b/state", data="running",
                               headers={"Content-Type": "text/plain"})
                writes["start (REST)"][started] += 1
                if started == "accepted":  # it ran: back to stopped for the next round
                    app.api("PUT", "/v1/vms/full-b/state", data="force-stop", headers={"Content-Type": "text/plain"})

                def write_state():
                    with open(world.mnt / "vms" / "full-c" / "state", "w") as f:
                        f.write("running\n")
                writes["state (mount)"][outcome_mount(write_state)] += 1
                reads["GET /v1/vms"][rest(app, reasons, "list", "GET", "/v1/vms")] += 1
                reads["GET /v1/vms/NAME"][rest(app, reasons, "get", "GET", "/v1/vms/full-a")] += 1
                reads["cat state"][outcome_mount(lambda: (world.mnt / "vms" / "full-a" / "state").read_text())] += 1
                reads["ls vms"][outcome_mount(lambda: os.listdir(world.mnt / "vms"))] += 1
            results["full_for_s"] = round(time.monotonic() - t0, 1)
            results["integrity_while_full"] = world.integrity()
            results["writes"] = {k: dict(v) for k, v in writes.items()}
            results["reads"] = {k: dict(v) for k, v in reads.items()}
            results["reasons"] = reasons
            for what, counts in writes.items():
                for result, n in counts.items():
                    if result not in CLEAR:
                        results["findings"].append(f"{what} while full: {result} x{n}")
            for what, counts in reads.items():
                for result, n in counts.items():
                    if result != "accepted":
                        results["findings"].append(f"{what} while full: {result} x{n}")
            # space returns
            filler.unlink()
            t1 = time.monotonic()
            resp = app.api("POST", "/v1/vms", json={"name": "after", "memory": VM_MEMORY, "state": "running"})
            results["create_after"] = resp.status_code
            resp = app.api("PUT", "/v1/images/after", data=upload, headers={"Content-Type": "application/octet-stream"})
            results["upload_after"] = resp.status_code
            converged, vms = world.converge(90)
            results["recovered_s"] = round(time.monotonic() - t1, 1)
            results["converged_after"] = converged is not None
            after = {vm["name"]: (vm["id"], vm["desired_state"]) for vm in vms}
            results["vms_lost"] = sorted(n for n in before if after.get(n, (None,))[0] != before[n][0])
            results["orphans_after"] = world.orphans(vms)
            results["integrity_after"] = world.integrity()
            if results["create_after"] != 201 or results["upload_after"] != 201:
                results["findings"].append(f"after: create {results['create_after']}, upload {results['upload_after']}")
            for key in ("integrity_while_full", "integrity_after"):
                if results[key] != "ok":
                    results["findings"].append(f"{key}: {results[key]}")
            results["changed_by_refused"] = sorted(
                [n for n in after if n.startswith("new")]  # a create refused, yet there
                + [n for n in before if n in after and after[n][1] != before[n][1]])  # a state
            if results["changed_by_refused"]:
                results["findings"].append(f"refused writes that changed something: {results['changed_by_refused']}")
            if results["vms_lost"] or results["orphans_after"] or not results["converged_after"]:
                results["findings"].append("after: lost, orphans or not converged")
        finally:
            world.close()
    results["failures"] = len(results["findings"])
    results["failure_examples"] = results["findings"][:10]
    results["rounds"] = rounds
    return results

"""What the backup and snapshot benchmarks share: driving the appliance's long operations
over REST and timing them, typing into a guest, and removing domains that carry
snapshot or checkpoint metadata (a plain undefine refuses those).
"""
from __future__ import annotations

import subprocess
import time
from pathlib import Path


FINAL = ("succeeded", "failed", "cancelled")


def _operation_of(body: dict) -> dict:
    """An accepted write answers {"operation": {...}} (a new VM: {"vm": ..., "operation": ...});
    some answer the operation itself."""
    op = body.get("operation", body)
    if not isinstance(op, dict) or "id" not in op:
        raise RuntimeError(f"no operation in the answer: {body}")
    return op


def timed_operation(app, method: str, path: str, body: dict | None = None, timeout: float = 1800) -> tuple[float, dict]:
    """Send the write and wait for its operation (the API waits for it by default; a wait cut
    short is followed by GET /v1/operations/ID?wait=): the seconds from the request until the
    client knows the result, and the final operation. A failed operation raises."""
    started = time.perf_counter()
    resp = app.api(method, path, json=body, timeout=timeout)
    if resp.status_code >= 300:
        raise RuntimeError(f"{method} {path} {body}: HTTP {resp.status_code} {resp.text[:2000]}")
    op = _operation_of(resp.json())
    deadline = time.monotonic() + timeout
    while op.get("status") not in FINAL:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{method} {path}: operation still {op.get('status')} after {timeout} s: {op}")
        op = app.api("GET", f"/v1/operations/{op['id']}", params={"wait": 60}, timeout=90).json()
    elapsed = time.perf_counter() - started
    if op["status"] != "succeeded":
        raise RuntimeError(f"{method} {path} {body}: operation {op['status']}: {op.get('error')}")
    return elapsed, op


def operation_split(op: dict, sent_wall: float, answered_wall: float) -> dict:
    """Where the client's time went, from the operation's record (epoch seconds): before the
    operation was recorded (HTTP, validation, store), queued until the controller took it,
    running in the controller, and after it finished until the client had the answer."""
    def ms(seconds: float) -> float:
        return round(seconds * 1000, 1)

    split = {"before_op_recorded_ms": ms(op["created"] - sent_wall)}
    if op.get("started"):
        split["op_queued_ms"] = ms(op["started"] - op["created"])
        if op.get("finished"):
            split["op_running_ms"] = ms(op["finished"] - op["started"])
    if op.get("finished"):
        split["after_op_finished_ms"] = ms(answered_wall - op["finished"])
    return split


def type_and_wait(app, vm: str, command: str, marker: str, timeout: float = 120) -> None:
    """Type a shell line into the guest's serial console (PUT /v1/vms/VM/console) and wait for
    marker on its console log. marker must be what the guest computes, not what is typed
    (the terminal echoes the typed line)."""
    resp = app.api("PUT", f"/v1/vms/{vm}/console", data=(command + "\n").encode(),
                   headers={"Content-Type": "text/plain"})
    if resp.status_code != 200:
        raise RuntimeError(f"PUT /v1/vms/{vm}/console: HTTP {resp.status_code} {resp.text}")
    app.wait_console(vm, marker, timeout)


def qemu_img(*args: str, timeout: float = 600) -> str:
    proc = subprocess.run(["qemu-img", *args], capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"qemu-img {' '.join(args)} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc.stdout


def tree_bytes(path: Path) -> dict:
    """A folder's files: their sizes (what a copy moves) and the blocks they take (du)."""
    apparent = allocated = files = 0
    for item in Path(path).rglob("*"):
        if item.is_file():
            info = item.stat()
            apparent += info.st_size
            allocated += info.st_blocks * 512
            files += 1
    return {"files": files, "apparent_bytes": apparent, "allocated_bytes": allocated}

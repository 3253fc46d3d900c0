"""The soak's clients and their ledger: what each acknowledged write promises.

Each client owns a few slots (a VM each, over its life: created, renamed, deleted,
created again under a new name) and works them one operation at a time, at random,
through REST or the mount. No two clients touch one VM, so a client's ledger is
exact: an operation answered 2xx (or, in the mount, returning without error) is
acknowledged and must be visible after any kill; one answered 4xx or refused with
an errno changed nothing; one whose answer was lost (the process answering it was
killed: a reset connection, ENOTCONN) is pending, and may or may not have happened,
and the client leaves that VM alone until the next check settles it.

With two hosts (the soak's world has "local" and "h2") a VM is also moved between
them: PUT /v1/vms/NAME/host, or a write to vms/NAME/host in the mount (live when it
runs, cold when stopped); the ledger holds where an acknowledged move left it. And
each client uploads images (PUT /v1/images/NAME, or `cp` into images/ in the mount)
and deletes them: an acknowledged upload is there after any kill, a deleted one gone.
"""
from __future__ import annotations

import errno
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.soak.world import VM_MEMORY

STATE_VERBS = {"running": "running", "force-stop": "stopped", "paused": "paused"}
# Errnos by which the mount says it did not do it (anything else is a lost answer).
REFUSALS = {errno.EBUSY, errno.EINVAL, errno.EEXIST, errno.EPERM, errno.EACCES, errno.ENOTEMPTY,
            errno.EAGAIN, errno.ENOSPC, errno.EXDEV, errno.ETIMEDOUT}


@dataclass
class Slot:
    exists: bool = False
    name: str | None = None
    vm_id: str | None = None
    desired: str | None = None
    snapshots: set[str] = field(default_factory=set)
    pending: tuple | None = None  # the operation whose answer was lost
    host: str | None = None  # where it is placed (None: not known yet, as after a mount mkdir)

    def after(self) -> "Slot":
        """What the slot is if its pending operation happened."""
        kind, *args = self.pending or ("none",)
        new = Slot(self.exists, self.name, self.vm_id, self.desired, set(self.snapshots), host=self.host)
        if kind == "create":
            new.exists, new.name, new.desired, new.vm_id, new.snapshots = True, args[0], args[1], None, set()
            new.host = None
        elif kind == "state":
            new.desired = args[0]
        elif kind == "rename":
            new.name = args[0]
        elif kind == "delete":
            new.exists, new.snapshots = False, set()
        elif kind == "snapshot":
            new.snapshots.add(args[0])
        elif kind == "host":
            new.host = args[0]
        return new


@dataclass
class Tally:
    acked: Counter = field(default_factory=Counter)
    refused: Counter = field(default_factory=Counter)
    lost_answers: Counter = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    anomalies: list[str] = field(default_factory=list)  # a VM the ledger has answered as missing


@dataclass
class Images:
    """A client's uploaded images: those acknowledged, and the one upload or delete
    whose answer was lost (either outcome is fine until the next check)."""
    prefix: str
    present: set[str] = field(default_factory=set)
    pending: tuple[str, str] | None = None  # ("upload" | "delete", name)


class Client(threading.Thread):
    def __init__(self, cid: int, slots: int, world, go: threading.Event, seed: int, mount: bool,
                 tag: str = "c", migrate_paused: bool = True):
        super().__init__(name=f"soak-client-{cid}", daemon=True)
        # False: no paused VM is moved (the short run's choice until the QEMU 7.2 fault of
        # tests/soak/notes.md, a paused arrival killed by its next migration, was fixed)
        self.migrate_paused = migrate_paused
        self.cid, self.world, self.go, self.mount = cid, world, go, mount
        self.rng = random.Random(seed)
        self.slots = [Slot() for _ in range(slots)]
        self.tally = Tally()
        self.busy = False
        self.doing: tuple[str, float] | None = None  # the operation under way and its start
        self.stopping = False
        self.counter = 0
        self.tag = tag  # names: TAG CID-N, unique in a run
        self.http = requests.Session()
        self.images = Images(f"i{tag}{cid}-")

    # -- the loop ----------------------------------------------------------------------------
    def run(self) -> None:
        while not self.stopping:
            if not self.go.wait(0.2):
                continue
            self.busy = True
            try:
                if self.go.is_set():
                    self.step()
            finally:
                self.busy = False

    def fresh_name(self) -> str:
        self.counter += 1
        return f"{self.tag}{self.cid}-{self.counter}"

    def step(self) -> None:
        free = [s for s in self.slots if s.pending is None]
        if not free:
            time.sleep(0.1)
            return
        slot = self.rng.choice(free)
        via_mount = self.mount and self.rng.random() < 0.5
        if self.images.pending is None and self.rng.random() < 0.1:
            self.image_step(via_mount)
            return
        if not slot.exists:
            self.act(slot, ("create", self.fresh_name(), self.rng.choice(("running", "stopped"))), via_mount)
            return
        roll = self.rng.random()
        if roll < 0.45:
            verb = self.rng.choice(list(STATE_VERBS))
            op: tuple = ("state", STATE_VERBS[verb], verb)
        elif roll < 0.65:
            op = ("rename", self.fresh_name())
        elif roll < 0.75:
            op = ("snapshot", f"s{self.fresh_name()}")
        elif roll < 0.9 and len(hosts := getattr(self.world, "hosts", ())) > 1 and \
                (self.migrate_paused or slot.desired != "paused"):
            op = ("host", self.rng.choice([h for h in hosts if h != slot.host]))
        else:
            op = ("delete",)
        self.act(slot, op, via_mount)

    def image_step(self, via_mount: bool) -> None:
        """Upload a new image (at most three of a client's at once) or delete one."""
        imgs = self.images
        if len(imgs.present) >= 3 or (imgs.present and self.rng.random() < 0.4):
            op: tuple = ("delete-image", self.rng.choice(sorted(imgs.present)))
        else:
            self.counter += 1
            op = ("upload", f"{imgs.prefix}{self.counter}")
        key = f"{op[0]} ({'mount' if via_mount else 'rest'})"
        self.doing = (key, time.monotonic())
        outcome, detail = (self._mount if via_mount else self._rest)(None, op)
        self.doing = None
        if outcome == "acked":
            self.tally.acked[key] += 1
            (imgs.present.add if op[0] == "upload" else imgs.present.discard)(op[1])
        elif outcome == "refused":
            self.tally.refused[f"{key} {detail}"] += 1
            if detail in ("connection refused", "no mount"):
                time.sleep(0.2)
            if detail in (404, "ENOENT") and op[0] == "delete-image":
                self.tally.anomalies.append(f"{key} of {op[1]}: {detail}, the ledger has it")
        else:
            if outcome == "5xx":
                self.tally.server_errors.append(f"{key} of {op[1]}: {detail}")
            self.tally.lost_answers[key] += 1
            imgs.pending = ("upload" if op[0] == "upload" else "delete", op[1])

    # -- one operation -------------------------------------------------------------------------
    def act(self, slot: Slot, op: tuple, via_mount: bool) -> None:
        kind = op[0]
        slot.pending = op[:3] if kind != "state" else ("state", op[1])
        if kind == "create":
            slot.pending = ("create", op[1], "stopped" if via_mount else op[2])
        where = "mount" if via_mount else "rest"
        key = f"{kind} ({where})"
        self.doing = (key, time.monotonic())
        outcome, detail = (self._mount if via_mount else self._rest)(slot, op)
        self.doing = None
        if outcome == "acked":
            self.tally.acked[key] += 1
            new = slot.after()
            if kind == "create" and isinstance(detail, dict):
                new.vm_id, new.host = detail.get("id"), detail.get("host")
            self.slots[self.slots.index(slot)] = new
            return
        if outcome == "refused":
            self.tally.refused[f"{key} {detail}"] += 1
            slot.pending = None
            if detail in ("connection refused", "no mount"):
                time.sleep(0.2)  # the appliance is coming back
            if detail in (404, "ENOENT") and slot.exists and kind != "create":
                self.tally.anomalies.append(f"{key} of {slot.name}: {detail}, the ledger has it")
            return
        if outcome == "5xx":
            self.tally.server_errors.append(f"{key} of {slot.name}: {detail}")
        self.tally.lost_answers[key] += 1  # slot.pending stays: the next check settles it

    def _rest(self, slot: Slot, op: tuple) -> tuple[str, object]:
        app = self.world.app
        self.http.headers["Authorization"] = f"Bearer {app.token}"
        kind, url = op[0], f"{app.url}/v1/vms"
        try:
            if kind == "create":
                resp = self.http.post(url, json={"name": op[1], "memory": VM_MEMORY, "state": op[2]}, timeout=90)
            elif kind == "state":
                resp = self.http.put(f"{url}/{slot.name}/state", data=op[2], timeout=90,
                                     headers={"Content-Type": "text/plain"})
            elif kind == "rename":
                resp = self.http.patch(f"{url}/{slot.name}", json={"name": op[1]}, timeout=90)
            elif kind == "snapshot":
                resp = self.http.post(f"{url}/{slot.name}/snapshots", json={"name": op[1]}, timeout=90)
            elif kind == "host":
                resp = self.http.put(f"{url}/{slot.name}/host", data=op[1], timeout=90,
                                     headers={"Content-Type": "text/plain"})
            elif kind == "upload":
                resp = self.http.put(f"{app.url}/v1/images/{op[1]}", data=self.world.image_bytes, timeout=90,
                                     headers={"Content-Type": "application/octet-stream"})
            elif kind == "delete-image":
                resp = self.http.delete(f"{app.url}/v1/images/{op[1]}", timeout=90)
            else:
                resp = self.http.delete(f"{url}/{slot.name}", params={"force": "true"}, timeout=90)
        except requests.exceptions.ConnectionError as err:
            # refused before anything was sent: nothing happened
            if "Connection refused" in str(err) or "NewConnectionError" in str(err):
                return "refused", "connection refused"
            return "lost", str(err)[:100]
        except requests.exceptions.RequestException as err:
            return "lost", str(err)[:100]
        if resp.status_code == 202 and kind in ("snapshot", "host"):
            return "lost", "202: still under way"  # may yet fail and go: the next check settles it
        if resp.status_code < 300:
            return "acked", resp.json() if resp.content else None
        if resp.status_code >= 500:
            return "5xx", f"HTTP {resp.status_code} {resp.text[:200]}"
        return "refused", resp.status_code

    def _mount(self, slot: Slot, op: tuple) -> tuple[str, object]:
        mnt: Path = self.world.mnt
        if not os.path.ismount(mnt):
            return "refused", "no mount"  # nothing was sent
        kind = op[0]
        try:
            if kind == "create":
                os.mkdir(mnt / "vms" / op[1])
            elif kind in ("state", "host"):  # one write(2), as `echo VERB > state` (Python's file
                # object writes again at close after an error: a second apply, a second answer)
                fd = os.open(mnt / "vms" / slot.name / kind, os.O_WRONLY | os.O_TRUNC)
                try:
                    os.write(fd, op[-1].encode() + b"\n")
                finally:
                    os.close(fd)
            elif kind == "upload":  # `cp FILE images/NAME.img`: the answer comes with close()
                fd = os.open(mnt / "images" / f"{op[1]}.img", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                try:
                    os.write(fd, self.world.image_bytes)
                finally:
                    os.close(fd)
            elif kind == "delete-image":
                os.unlink(mnt / "images" / f"{op[1]}.json")
            elif kind == "rename":
                os.rename(mnt / "vms" / slot.name, mnt / "vms" / op[1])
            elif kind == "snapshot":
                os.mkdir(mnt / "vms" / slot.name / "snapshots" / op[1])
            else:
                os.rmdir(mnt / "vms" / slot.name)
        except OSError as err:
            code = errno.errorcode.get(err.errno or 0, str(err.errno))
            if err.errno in REFUSALS or (err.errno == errno.ENOENT and os.path.ismount(mnt)):
                return "refused", code
            return "lost", code
        return "acked", None


def check_ledger(clients: list[Client], vms: list[dict], snapshots_of) -> dict[str, list[str]]:
    """Every slot against the VMs seen after the kill: violations by kind; then every slot
    is set to what was seen (its pending operation settled)."""
    by_id = {vm["id"]: vm for vm in vms}
    by_name = {vm["name"]: vm for vm in vms}
    found: dict[str, list[str]] = {"lost VMs": [], "lost writes": [], "unexpected VMs": []}
    claimed: set[str] = set()
    for client in clients:
        for i, slot in enumerate(client.slots):
            choices = [slot] + ([slot.after()] if slot.pending else [])
            names = {c.name for c in choices if c.exists and c.name}
            vm = by_id.get(slot.vm_id) if slot.vm_id else None
            vm = vm or next((by_name[n] for n in names if n in by_name), None)
            seen = Slot()
            if vm is not None:
                claimed.add(vm["id"])
                seen = Slot(True, vm["name"], vm["id"], vm["desired_state"], set(snapshots_of(vm["name"])),
                            host=vm.get("host"))
            if not any(_matches(c, seen) for c in choices):
                label = f"client {client.cid} slot {i}: expected {_show(choices)}, saw {_show([seen])}"
                if any(c.exists for c in choices) and not seen.exists and not slot.pending:
                    found["lost VMs"].append(label)
                else:
                    found["lost writes"].append(label)
            client.slots[i] = seen
    found["unexpected VMs"] = sorted(vm["name"] for vm in vms if vm["id"] not in claimed)
    return {k: v for k, v in found.items() if v}


def check_images(clients: list[Client], names: list[str]) -> dict[str, list[str]]:
    """Every client's images against the image names seen after the kill (as check_ledger
    for VMs): an acknowledged upload must be there, an acknowledged delete gone; an image
    of the soak that no client accounts for is unexpected."""
    seen = set(names)
    found: dict[str, list[str]] = {"lost images": [], "unexpected images": []}
    claimed: set[str] = set()
    for client in clients:
        imgs = client.images
        pending = imgs.pending[1] if imgs.pending else None
        for name in imgs.present - {pending}:
            if name not in seen:
                found["lost images"].append(f"client {client.cid}: {name}")
        mine = {n for n in seen if n.startswith(imgs.prefix)}
        for name in mine - imgs.present - {pending}:  # deleted (acknowledged), or never uploaded
            found["unexpected images"].append(f"client {client.cid}: {name}")
        claimed |= mine
        imgs.present, imgs.pending = mine, None
    ours = tuple({f"i{c.tag}" for c in clients})  # this part's images (clients' tags)
    found["unexpected images"] += sorted(n for n in seen - claimed if n.startswith(ours))
    return {k: v for k, v in found.items() if v}


def _matches(want: Slot, seen: Slot) -> bool:
    if want.exists != seen.exists:
        return False
    if not want.exists:
        return True
    return (want.name == seen.name and want.desired == seen.desired
            and want.snapshots <= seen.snapshots and (want.vm_id in (None, seen.vm_id))
            and want.host in (None, seen.host))


def _show(slots: list[Slot]) -> str:
    return " or ".join(f"{s.name}/{s.desired}/{sorted(s.snapshots)}@{s.host or '?'}" if s.exists else "absent"
                       for s in slots)

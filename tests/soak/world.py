"""The soak's appliance and what is checked after each kill (issue 17, `make soak`).

A real `vmctl serve` (tests/appliance_process.py: its own home, port and domain-name
prefix) on the machine's libvirtd, qemu:///system. Its guests are real QEMU domains
that never boot: image "demo" is 1 MiB whose boot sector is `cli; hlt`, so a running
VM is one halted vCPU under TCG (no CPU to speak of) in 32 MiB. Creates, starts,
stops, pauses, renames, snapshots and deletes are the appliance's real ones, and
the domains outlive a killed serve as real guests do (libvirt's test driver and the
FakeDriver live inside the process that is killed, so they cannot stand in here).

After each kill, `check()` answers what the brief asks: every VM converges to its
desired state (and how long that took), no orphan (domain, VM directory with its
disks and seed ISO, stray temporary file, upload file, image file, DHCP host entry,
second or stale mount), and `PRAGMA integrity_check` is ok.
"""
from __future__ import annotations

import logging
import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

from tests.appliance_process import Appliance, remove_prefixed_domains, wait_for

log = logging.getLogger("soak.world")
# cli; hlt; jmp $-1, then the boot signature: SeaBIOS boots it, the vCPU halts for good.
BOOT_SECTOR = bytes([0xFA, 0xF4, 0xEB, 0xFD])
VM_MEMORY = "32M"
# What a VM directory holds (appliance/paths.py): anything else there is a leftover.
VM_DIR_FILES = ("root.qcow2", "cidata.iso", "console.log")


def make_blank_image(path: Path) -> Path:
    data = bytearray(1 << 20)
    data[:len(BOOT_SECTOR)] = BOOT_SECTOR
    data[510:512] = b"\x55\xaa"
    path.write_bytes(bytes(data))
    return path


def children(pid: int) -> dict[int, str]:
    """pid's child processes and their titles (ps: the forked ones carry their own)."""
    out = subprocess.run(["ps", "-o", "pid=,args=", "--ppid", str(pid)], capture_output=True, text=True,
                         check=False).stdout
    found = {}
    for line in out.splitlines():
        child, _, args = line.strip().partition(" ")
        found[int(child)] = args.strip()
    return found


def _alive(pid: int, comm: str) -> bool:
    """pid is a live (not zombie) process named comm."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except OSError:
        return False
    name, _, rest = stat.partition("(")[2].rpartition(")")
    return name == comm and rest.split()[0] not in ("Z", "X")


def mounts_at(point: Path) -> int:
    """How many mounts sit on point (a stale one counts: /proc/self/mountinfo lists it)."""
    target = str(point)
    with open("/proc/self/mountinfo") as f:
        return sum(1 for line in f if line.split()[4] == target)


class SoakWorld:
    def __init__(self, base: Path, local_host=None, second_host=None):
        """local_host: a tests.local_hosts.LocalHost (up) whose private libvirtd the
        appliance uses instead of the machine's, so that it can be killed. second_host:
        another (up), added as host "h2" by add_second_host (tests/soak/migrations.py)."""
        self.base = base
        base.mkdir(parents=True, exist_ok=True)
        image = make_blank_image(base / "blank.img")
        self.image_bytes = image.read_bytes()  # what the clients upload as images
        self.local_host, self.second_host = local_host, second_host
        self.hosts = ["local"]  # the appliance's hosts: "h2" too once added
        uri = {"libvirt_uri": local_host.uri} if local_host is not None else {}
        self.app = Appliance(base / "home", demo_image=image, **uri)
        self.mnt = self.app.home / "mnt"
        self.restarts = 0
        self.libvirtd_crashes: list[str] = []  # local hosts whose libvirtd died unasked (restarted)

    # -- the processes -----------------------------------------------------------------------
    def start(self) -> None:
        self.app.start(timeout=120)
        self.wait_mount()

    def close(self) -> None:
        self.app.cleanup()

    @property
    def serve_pid(self) -> int:
        assert self.app.proc is not None
        return self.app.proc.pid

    def child(self, title: str) -> int | None:
        for pid, args in children(self.serve_pid).items():
            if title in args:
                return pid
        return None

    def mount_pid(self) -> int | None:
        return self.child(" mount ")

    def workers(self) -> list[int]:
        master = self.child("gunicorn: master")
        return sorted(children(master)) if master else []

    def restart_serve(self) -> float:
        """SIGKILL serve (Appliance.kill waits until its API let go of the port), start it
        again: the seconds until it answered /readyz and its mount was back."""
        t_kill = time.monotonic()
        self.app.kill()
        t0 = time.monotonic()
        try:
            self.app.start(timeout=120)
        except RuntimeError:  # serve gives up on a libvirt that does not answer for 30 s
            if not self.revive_libvirtds():
                raise
            self.app.start(timeout=120)
        t_ready = time.monotonic()
        self.wait_mount()
        self.restarts += 1
        now = time.monotonic()
        log.info("serve restart: port free %.2f s, /readyz %.2f s, mount %.2f s", t0 - t_kill, t_ready - t0,
                 now - t_ready)
        return now - t0

    def kill_mount(self) -> float:
        """SIGKILL the mount child; serve starts a new one: seconds until it serves again."""
        pid = self.mount_pid()
        assert pid is not None, "no mount child"
        os.kill(pid, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for("the mount back after SIGKILL", lambda: self.mount_pid() not in (None, pid), 60)
        self.wait_mount()
        return time.monotonic() - t0

    def kill_worker(self) -> float:
        """SIGKILL one gunicorn worker (gunicorn forks another): seconds until the API
        has as many workers answering as before."""
        before = self.workers()
        assert before, "no gunicorn worker"
        victim = before[len(before) // 2]
        os.kill(victim, signal.SIGKILL)
        t0 = time.monotonic()
        wait_for("a new gunicorn worker", lambda: len(set(self.workers()) - {victim}) >= len(before), 60)
        wait_for("the API answering", lambda: self._ready(), 60)
        return time.monotonic() - t0

    def kill_libvirtd(self, graceful: bool) -> float:
        """SIGKILL the local host's libvirtd (or restart it gracefully) and start it again:
        seconds until the appliance sees the host up again (its guests keep running)."""
        host = self.local_host
        assert host is not None, "kill_libvirtd needs a local host"
        seen = self._host()["last_seen"]
        t0 = time.monotonic()
        if graceful:
            host.restart_libvirtd()
        else:
            host.kill_libvirtd()
            host.start_libvirtd()
        answering = time.monotonic() - t0
        wait_for("the host up again", lambda: (h := self._host())["up"] and h["last_seen"] != seen, 120, 0.2)
        took = time.monotonic() - t0
        log.info("libvirtd %s: answering after %.1f s, the appliance saw it up after %.1f s",
                 "restarted" if graceful else "SIGKILLed and started", answering, took)
        return took

    def revive_libvirtds(self) -> list[str]:
        """The local hosts (ours, not the libvirtd part's, which kills its own) whose libvirtd
        died without being asked (libvirt 9.0's libvirtd segfaulted once in a kill-serve run),
        started again as systemd's Restart=on-failure would; recorded in libvirtd_crashes.
        Not for the libvirtd part, which kills and starts its host's libvirtd itself."""
        revived = []
        for host in (self.local_host, self.second_host):
            pid = host.libvirtd_pid() if host is not None else None
            if host is None or (pid is not None and _alive(pid, "libvirtd")):
                continue
            host.start_libvirtd()
            revived.append(host.name)
            self.libvirtd_crashes.append(f"{host.name} (libvirtd pid {pid}) at {time.strftime('%H:%M:%S')} UTC")
            log.warning("the libvirtd of local host %s (pid %s) died unasked: started again", host.name, pid)
        return revived

    def _host(self) -> dict:
        return self.app.api("GET", "/v1/hosts/local", timeout=30).json()

    def guests_twice(self) -> list[str]:
        """Domains of ours with more than one QEMU process (a guest running twice)."""
        return sorted(f"{n} x{c}" for n, c in self.guest_processes().items() if c > 1)

    def guest_processes(self) -> dict[str, int]:
        """Domain name -> how many QEMU processes of this machine run it (ours only)."""
        count: dict[str, int] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as f:
                    args = f.read().split(b"\0")
            except OSError:
                continue
            if args and args[0].endswith(b"qemu-system-x86_64") and b"-name" in args:
                name = args[args.index(b"-name") + 1].decode(errors="replace").split(",")[0]
                name = name.removeprefix("guest=")
                if name.startswith(self.app.prefix):
                    count[name] = count.get(name, 0) + 1
        return count

    def _ready(self) -> bool:
        try:
            return self.app.http.get(self.app.url + "/readyz", timeout=5).status_code == 200
        except OSError:
            return False

    def wait_mount(self) -> None:
        def serving() -> bool:
            try:
                return os.path.ismount(self.mnt) and os.path.isdir(self.mnt / "vms") and \
                    isinstance(os.listdir(self.mnt / "vms"), list)
            except OSError:
                return False
        wait_for("the mount serving", serving, 60)

    # -- the checks ----------------------------------------------------------------------------
    def vms(self) -> list[dict]:
        resp = self.app.api("GET", "/v1/vms", params={"all_projects": "true"}, timeout=30)
        resp.raise_for_status()
        return resp.json()["items"]

    def delete_all_vms(self, timeout: float = 120) -> None:
        for vm in self.vms():
            self.app.api("DELETE", f"/v1/vms/{vm['name']}", params={"force": "true", "wait": "false"})
        wait_for("every VM deleted", lambda: not self.vms(), timeout, 0.5)

    def converge(self, timeout: float) -> tuple[float | None, list[dict]]:
        """Seconds until every VM's observed state is its desired one and no operation is
        pending or running (None when not within timeout), and the VMs then."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            vms = self.vms()
            settled = all(vm["state"] == vm["desired_state"] for vm in vms) and not self.busy_operations()
            if settled:
                return time.monotonic() - t0, vms
            if time.monotonic() > deadline:
                return None, vms
            time.sleep(0.2)

    def busy_operations(self) -> list[dict]:
        resp = self.app.api("GET", "/v1/operations", timeout=30)
        resp.raise_for_status()
        return [op for op in resp.json()["items"] if op["status"] in ("pending", "running")]

    def orphans(self, vms: list[dict]) -> dict[str, list[str]]:
        """What is left that no VM or image of the store accounts for."""
        home = self.app.home
        ids = {vm["id"] for vm in vms}
        names = {self.app.prefix + vm["name"] for vm in vms}
        found: dict[str, list[str]] = {}
        from tests.soak.migrations import domain_orphans  # with two hosts: on each, and once

        found.update(domain_orphans(self, vms, names))
        vm_dirs = [p for p in (home / "vms").iterdir()] if (home / "vms").is_dir() else []
        found["vm dirs (disks, seed ISO)"] = sorted(p.name for p in vm_dirs if p.name not in ids)
        found["stray files in vm dirs"] = sorted(
            f"{p.name}/{f.name}" for p in vm_dirs if p.name in ids and p.is_dir()
            for f in p.iterdir() if f.name not in VM_DIR_FILES and not f.is_dir())
        images = self.app.api("GET", "/v1/images", timeout=30).json()["items"]
        image_files = {Path(i["path"]).name for i in images if i.get("path")}
        image_dir = home / "images"
        found["upload files"] = sorted(p.name for p in image_dir.iterdir() if p.name.startswith(".upload-"))
        found["image files"] = sorted(p.name for p in image_dir.iterdir()
                                      if p.is_file() and not p.name.startswith(".upload-")
                                      and p.name not in image_files)
        found["half images (no file)"] = sorted(i["name"] for i in images
                                                if i.get("path") and not Path(i["path"]).is_file())
        found["dhcp reservations"] = self._dhcp_orphans(ids)
        found["guests running twice"] = self.guests_twice()
        count = mounts_at(self.mnt)
        found["mounts"] = [] if count == 1 else [f"{count} mounts at {self.mnt}"]
        return {k: v for k, v in found.items() if v}

    def _dhcp_orphans(self, ids: set[str]) -> list[str]:
        """The DHCP reservations the store records (appliance/virt/dhcp.py: meta keys
        dhcp-reservation:VM_ID:HOST) for VMs it no longer has."""
        db = sqlite3.connect(f"file:{self.app.home / 'appliance.db'}?mode=ro", uri=True, timeout=30)
        try:
            keys = [row[0] for row in db.execute("SELECT key FROM meta WHERE key LIKE 'dhcp-reservation:%'")]
        finally:
            db.close()
        return sorted(k for k in keys if k.split(":")[1] not in ids)

    def integrity(self) -> str:
        db = sqlite3.connect(f"file:{self.app.home / 'appliance.db'}?mode=ro", uri=True, timeout=30)
        try:
            result = db.execute("PRAGMA integrity_check").fetchall()
            keys = db.execute("PRAGMA foreign_key_check").fetchall()
        finally:
            db.close()
        text = "; ".join(str(row[0]) for row in result)
        return text if not keys else f"{text}; foreign keys: {keys[:5]}"

    def remove_domains(self) -> None:
        remove_prefixed_domains(self.app.prefix, self.app.libvirt_uri)

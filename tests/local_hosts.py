"""Private libvirt hosts for tests, through packaging/local-hosts.

Each host is a libvirtd of its own in its own mount namespace (see the script's
header). Names are unique per use, so tests can run next to other users of the
script; `LocalHost.down` always runs when used as a context manager, and leaves
nothing behind (running domains are destroyed, the daemons stopped, the base
folder removed).
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "packaging" / "local-hosts"
BASE_DIR = Path(os.environ.get("LOCAL_HOSTS_DIR", "/var/lib/vm-appliance/local-hosts"))


def unique_name(prefix: str = "lh") -> str:
    return f"{prefix}{uuid.uuid4().hex[:6]}"


class LocalHostError(RuntimeError):
    pass


def _run(*args: str, timeout: float = 120) -> str:
    proc = subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise LocalHostError(f"local-hosts {' '.join(args)} exited {proc.returncode}:\n{proc.stderr}{proc.stdout}")
    return proc.stdout


class LocalHost:
    """netns: the libvirtd in a network namespace of its own too (`up --netns`): its
    networks' bridges, dnsmasq and guests' taps exist only in there."""

    def __init__(self, name: str | None = None, netns: bool = False):
        self.name = name or unique_name()
        self.netns = netns
        self.base = BASE_DIR / self.name
        self.uri: str | None = None

    def _uri_from(self, out: str) -> str:
        for line in out.splitlines():
            name, _, uri = line.partition(" ")
            if name == self.name:
                return uri
        raise LocalHostError(f"no URI for {self.name} in {out!r}")

    def up(self) -> "LocalHost":
        self.uri = self._uri_from(_run("up", *(["--netns"] if self.netns else []), self.name))
        return self

    def down(self) -> None:
        _run("down", self.name)

    def restart_libvirtd(self) -> None:
        _run("restart-libvirtd", self.name)

    def stop_libvirtd(self) -> None:
        _run("stop-libvirtd", self.name)

    def start_libvirtd(self) -> None:
        """Start it if it is not running (a no-op when it is); waits until it answers."""
        _run("start-libvirtd", self.name)

    def exec(self, *cmd: str, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command inside this host's mount and network namespaces (what its libvirtd sees)."""
        proc = subprocess.run([str(SCRIPT), "exec", self.name, "--", *cmd], capture_output=True, text=True,
                              timeout=60)
        if check and proc.returncode != 0:
            raise LocalHostError(f"{' '.join(cmd)} in {self.name} exited {proc.returncode}: {proc.stderr}")
        return proc

    def status(self) -> str:
        return _run("status", self.name).strip()

    def libvirtd_pid(self) -> int | None:
        try:
            return int((self.base / "libvirtd.pid").read_text())
        except (OSError, ValueError):
            return None

    def qemu_pid(self, domain_name: str) -> int:
        """The QEMU process of a running domain, from libvirt's pid file."""
        return int((self.base / "run" / "qemu" / f"{domain_name}.pid").read_text())

    def kill_libvirtd(self, timeout: float = 10) -> None:
        """SIGKILL this host's libvirtd, as a crash would (its guests keep running)."""
        pid = self.libvirtd_pid()
        if pid is None:
            raise LocalHostError(f"{self.name}: no libvirtd pid")
        self.kill_pid(pid, timeout)

    def kill_guest(self, domain_name: str, timeout: float = 10) -> None:
        """SIGKILL a guest's QEMU behind libvirt's back, as a crash would, and wait until it is gone."""
        self.kill_pid(self.qemu_pid(domain_name), timeout)

    @staticmethod
    def kill_pid(pid: int, timeout: float = 10) -> None:
        """SIGKILL one process this host runs and wait until it is gone."""
        os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
            except OSError:
                return
            if state in ("Z", "X"):
                return
            time.sleep(0.05)
        raise LocalHostError(f"pid {pid} still alive {timeout} s after SIGKILL")

    def __enter__(self) -> "LocalHost":
        try:
            return self.up()
        except BaseException:
            self.down()  # a host half up is still taken down
            raise

    def __exit__(self, *exc) -> None:
        self.down()

"""A Debian root booted with systemd as its PID 1 (systemd-nspawn --boot), for
the .deb's units under a real systemd (tests/integration/test_deb_systemd.py).

This machine runs no systemd as its own PID 1, so there is no machined to
register with nor a scope unit to run in: `--register=no --keep-unit` boots the
container from whatever cgroup this process puts it in. That cgroup is ours (one
per container, made here in the host's name=systemd and cgroup2 hierarchies),
so that nspawn's payload/supervisor groups land under it rather than at the
hierarchies' roots, and it is removed when the container is gone.

The container shares the host's network namespace (no --private-network): its
appliance reaches the host's libvirtd through /run/libvirt, bound read-only, and
starts no libvirtd of its own (the root's libvirt units are masked), so nothing
reconfigures the machine's network. /dev/fuse is bound in for the mount.

Commands run inside with nsenter (the container's mount, pid, uts and ipc
namespaces and root); its files are read from the host through
/proc/INIT/root. Everything started is stopped by pid: SIGTERM to nspawn (which
halts the container's systemd), then SIGKILL to the container's PID 1 and to
nspawn if the halt does not end within the bound."""
from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

CGROUP_ROOTS = (Path("/sys/fs/cgroup/systemd"), Path("/sys/fs/cgroup/unified"))
ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8", "HOME": "/root",
       "DEBIAN_FRONTEND": "noninteractive", "SYSTEMD_PAGER": "", "SYSTEMD_COLORS": "0"}

# The root's libvirt units, masked: the host's libvirtd serves the container.
LIBVIRT_UNITS = [f"{name}.service" for name in ("libvirtd", "virtlogd", "virtlockd",
                                                 "libvirt-guests", "virtqemud")] + [
    f"{name}.socket" for name in ("libvirtd", "libvirtd-ro", "libvirtd-admin", "libvirtd-tcp",
                                  "libvirtd-tls", "virtlogd", "virtlogd-admin", "virtlockd",
                                  "virtlockd-admin")]


def mask_units(root: Path, units: list[str]) -> None:
    for unit in units:
        link = root / "etc/systemd/system" / unit
        link.parent.mkdir(parents=True, exist_ok=True)
        link.unlink(missing_ok=True)
        link.symlink_to("/dev/null")


class BootedRoot:
    def __init__(self, root: Path, log_path: Path, binds: list[str], read_only_binds: list[str]):
        self.root = root
        self.log_path = log_path
        self.name = f"vmapp-deb-{uuid.uuid4().hex[:8]}"
        self.binds = binds
        self.read_only_binds = read_only_binds
        self.cgroups = [base / self.name for base in CGROUP_ROOTS if base.is_dir()]
        self.proc: subprocess.Popen | None = None
        self.init_pid = 0

    def _enter_cgroups(self) -> None:  # preexec_fn: only writes to files
        for group in self.cgroups:
            (group / "cgroup.procs").write_text("0")

    def boot(self, timeout: float) -> float:
        """Start nspawn and wait until systemd says the system is up; the seconds it took."""
        for group in self.cgroups:
            group.mkdir()
        args = ["systemd-nspawn", "--boot", "--register=no", "--keep-unit",
                "--machine", self.name, "--directory", str(self.root), "--console=read-only"]
        args += [f"--bind={b}" for b in self.binds]
        args += [f"--bind-ro={b}" for b in self.read_only_binds]
        started = time.monotonic()
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=log,  # noqa: S603
                                         stderr=subprocess.STDOUT, env=ENV,
                                         preexec_fn=self._enter_cgroups)
        deadline = started + timeout
        while not self.init_pid:
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children")
            try:
                pids = children.read_text().split()
            except OSError:
                pids = []
            if pids:
                self.init_pid = int(pids[0])
                break
            self._check_alive(deadline, "no container process")
            time.sleep(0.1)
        # systemctl answers once PID 1 listens on /run/systemd/private; --wait then
        # returns when the boot's jobs are done.
        while True:
            state = self.run("systemctl is-system-running --wait", check=False,
                             timeout=max(1.0, deadline - time.monotonic()))
            if state.stdout.strip() in ("running", "degraded"):
                break
            said = f"{state.stdout.strip()!r} {state.stderr.strip()!r}"
            self._check_alive(deadline, f"systemd: {said}")
            time.sleep(0.5)
        return time.monotonic() - started

    def _check_alive(self, deadline: float, what: str) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None or time.monotonic() > deadline:
            ended = self.proc.poll()
            how = "timed out" if ended is None else f"exited {ended}"
            raise AssertionError(f"the container did not boot ({what}); nspawn {how}:\n"
                                 + self.console()[-4000:])

    def console(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def run(self, command: str, check: bool = True,
            timeout: float = 120) -> subprocess.CompletedProcess:
        """A shell command inside the container, as root."""
        args = ["nsenter", "--target", str(self.init_pid), "--mount", "--uts", "--ipc", "--pid",
                "--root", "--wd", "--", "/bin/sh", "-ec", command]
        result = subprocess.run(args, capture_output=True, text=True, timeout=timeout,  # noqa: S603
                                env=ENV, check=False)
        if check:
            assert result.returncode == 0, (
                f"in the container: {command} exited {result.returncode}:\n"
                f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}")
        return result

    def show(self, unit: str, *properties: str) -> dict[str, str]:
        out = self.run(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in properties)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def path(self, inside: str) -> Path:
        """A file of the container, from the host (its mount namespace's view)."""
        return Path(f"/proc/{self.init_pid}/root") / inside.lstrip("/")

    def pids_in_namespace(self) -> dict[int, str]:
        """Every process of the container's pid namespace (host pid: command line)."""
        namespace = os.readlink(f"/proc/{self.init_pid}/ns/pid")
        found = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if os.readlink(entry / "ns/pid") == namespace:
                    cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ")
                    found[int(entry.name)] = cmdline.decode(errors="replace")
            except OSError:
                continue
        return found

    def stop(self, timeout: float = 90) -> None:
        """Halt the container (nspawn turns SIGTERM into a clean shutdown of its
        systemd), else kill its PID 1 and nspawn; then remove our cgroups."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                if self.init_pid:
                    try:
                        os.kill(self.init_pid, signal.SIGKILL)  # ends its whole pid namespace
                    except ProcessLookupError:
                        pass
                self.proc.kill()
                self.proc.wait(30)
        for group in self.cgroups:
            # nspawn's payload/supervisor groups (and what the container's
            # systemd made below them) once no process is left in them
            for sub in sorted((p for p in group.rglob("*") if p.is_dir()),
                              key=lambda p: len(p.parts), reverse=True):
                try:
                    sub.rmdir()
                except OSError:
                    pass
            try:
                group.rmdir()
            except OSError:
                pass

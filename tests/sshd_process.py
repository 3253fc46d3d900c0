"""A private OpenSSH server for tests: Debian's sshd on 127.0.0.1:PORT with a
config of its own (key authentication only, its host key and authorized_keys in
the test's folder, no PAM, no systemd), as a qemu+ssh host's sshd would be.

`stop` ends it by pid, and the per-connection sshd processes it forked first
(sshd's children call setsid(), so they are found by their parent pid, not by
process group), and what they run (libvirt's nc on the remote side).
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

SSHD = "/usr/sbin/sshd"


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        for child in _children(todo.pop()):
            out.append(child)
            todo.append(child)
    return out


class Sshd:
    def __init__(self, folder: Path, port: int, authorized_keys: str):
        self.folder = Path(folder)
        self.port = port
        self.authorized_keys = authorized_keys
        self.proc: subprocess.Popen | None = None
        self.host_key = self.folder / "ssh_host_ed25519_key"

    def new_host_key(self) -> None:
        """A fresh host key, as a reinstalled machine has (used at the next start)."""
        for path in (self.host_key, self.host_key.with_suffix(".pub")):
            path.unlink(missing_ok=True)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.host_key)],
                       check=True, timeout=30)

    def fingerprint(self) -> str:
        out = subprocess.run(["ssh-keygen", "-lf", str(self.host_key.with_suffix(".pub"))],
                             capture_output=True, text=True, check=True, timeout=30).stdout
        return out.split()[1]  # "256 SHA256:... comment (ED25519)"

    def start(self, timeout: float = 20) -> Sshd:
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.host_key.exists():
            self.new_host_key()
        keys = self.folder / "authorized_keys"
        keys.write_text(self.authorized_keys.strip() + "\n")
        config = self.folder / "sshd_config"
        config.write_text("\n".join([
            f"Port {self.port}", "ListenAddress 127.0.0.1", f"HostKey {self.host_key}",
            f"PidFile {self.folder / 'sshd.pid'}", f"AuthorizedKeysFile {keys}",
            "PubkeyAuthentication yes", "PasswordAuthentication no",
            "KbdInteractiveAuthentication no", "PermitRootLogin prohibit-password", "UsePAM no",
            "StrictModes no",  # the test's folders are not root's ~/.ssh
            "AllowTcpForwarding no", "X11Forwarding no", "PrintMotd no", ""]))
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # its privilege separation folder
        self.log = open(self.folder / "sshd.log", "ab")
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(config)], stdout=self.log,
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sshd exited {self.proc.returncode}: {self.log_text()}")
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"sshd not listening on 127.0.0.1:{self.port} in {timeout} s")

    def log_text(self, last: int = 3000) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")[-last:]

    def stop(self) -> None:
        if self.proc is None:
            return
        pids = descendants(self.proc.pid)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pid in pids:  # the sessions it forked, and their nc
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc = None
        self.log.close()

    def __enter__(self) -> Sshd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

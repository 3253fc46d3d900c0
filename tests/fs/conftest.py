"""FS fixtures: a real mount (a subprocess running fs/ with a controller on
libvirt's test driver), real shell commands, and cleanup of every mount and
process by pid even when a test fails."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from appliance.config import Config
from appliance.service import Service
from appliance.store import Store
from fs.mount import is_mounted

ROOT = Path(__file__).resolve().parents[2]


def sh(command: str, cwd: Path | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    """A real shell command; its exit status and stderr are what a user sees."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True, timeout=timeout,
                          check=False)


def unmount(mountpoint: Path) -> None:
    if is_mounted(mountpoint):
        subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], capture_output=True, check=False)


def stop_process(proc: subprocess.Popen, timeout: float = 15) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_mounted(mountpoint: Path, proc: subprocess.Popen | None, log: Path, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"the mount process exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if is_mounted(mountpoint):
            try:
                os.listdir(mountpoint / "vms")  # served by the file system, not a cached stale entry
                return
            except OSError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"{mountpoint} not mounted within {timeout} s:\n{log.read_text()[-3000:]}")


class Mount:
    """fs/ in a subprocess on HOME, mounted at MNT, with a test-driver controller."""

    def __init__(self, base: Path, controller: bool = True, mnt: Path | None = None, group: str | None = None,
                 args: tuple[str, ...] = ()):
        self.home = base / "home"
        self.mnt = mnt or base / "mnt"
        self.log = base / "fs.log"
        self.controller = controller
        self.group = group
        self.proc: subprocess.Popen | None = None
        self.args = args  # more of tests/fs/fs_server.py's options

    def start(self) -> Mount:
        args = [sys.executable, "-m", "tests.fs.fs_server", str(self.home), str(self.mnt)]
        if not self.controller:
            args.append("--no-controller")
        if self.group is not None:
            args += ["--allow-group", self.group]
        args += self.args
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT)
        wait_mounted(self.mnt, self.proc, self.log)
        # The test's own view of the same store, as REST has it.
        self.config = Config.load(self.home)
        self.service = Service(Store(self.config.db_path), self.config)
        return self

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc)
        unmount(self.mnt)

    def sh(self, command: str, timeout: float = 60) -> subprocess.CompletedProcess:
        return sh(command, cwd=self.mnt, timeout=timeout)

    def vm(self, name: str) -> Path:
        return self.mnt / "vms" / name

    def mkvm(self, name: str, state: str = "stopped") -> Path:
        result = self.sh(f"mkdir vms/{name}")
        assert result.returncode == 0, result.stderr
        if state != "stopped":
            result = self.sh(f"echo {state} > vms/{name}/state")
            assert result.returncode == 0, result.stderr
        return self.vm(name)


def run(m: Mount, command: str) -> str:
    """A shell command in the mount that must succeed; its stdout."""
    result = m.sh(command)
    assert result.returncode == 0, (command, result.stderr)
    return result.stdout


def refused(m: Mount, command: str, code: int) -> None:
    """A shell command in the mount that must fail with errno `code` (as the shell says it)."""
    result = m.sh(command)
    assert result.returncode != 0 and os.strerror(code) in result.stderr, (command, result.stderr)


@pytest.fixture
def mount(tmp_path):
    m = Mount(tmp_path)
    try:
        yield m.start()
    finally:
        m.stop()


@pytest.fixture
def held_processes():
    """Processes a test starts in the background (tail -f, holders); killed by pid at the end."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()


def as_nobody(command: str, cwd: Path, groups: str = "") -> subprocess.CompletedProcess:
    """The command as uid/gid 65534, in the given supplementary groups (or none)."""
    who = ["--reuid=65534", "--regid=65534", f"--groups={groups}" if groups else "--clear-groups"]
    return subprocess.run(["setpriv", *who, "bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


@pytest.fixture
def open_dir():
    """A mount point other users can reach (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix="fs-shared-"))
    os.chmod(path, 0o755)
    yield path
    unmount(path / "mnt")
    shutil.rmtree(path, ignore_errors=True)

"""Whether an import is still held by another process at a close (fs/image_imports.py
held_elsewhere): only its writer's processes count. The scan matched any process's fd
by the path string /proc/PID/fd shows: another uid's file at the same path (in a mount
namespace of its own: an unprivileged `unshare -Urm` and a tmpfs over the mount point;
or a file opened under the mount point before it was mounted) kept an admin's import
from finishing at its close (cp no longer heard the answer), and any user's fds, as
many as they can open, were read at every close of an import. Found by the security
review (session 14)."""
from __future__ import annotations

import os
import subprocess

import pytest

from fs.image_imports import held_elsewhere

WAIT = 30.0  # bound on the helper's start (never reached when the code is right)
NOBODY = 65534
PYTHON = "/usr/bin/python3"  # one another uid may run (the venv's may not be)
HOLD = """import os, resource, sys, time
_soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
fds = [3] + [os.dup(3) for _ in range(int(sys.argv[1]) - 1)]
print(len(fds), flush=True)
time.sleep(120)
"""


@pytest.fixture
def held_by(tmp_path):
    """A process of `uid` holding `count` fds on a file at the path."""
    started: list[subprocess.Popen] = []

    def hold(path: str, uid: int, count: int = 1) -> None:
        fd = os.open(path, os.O_RDONLY)  # handed down as fd 3 (the directory is root's alone)
        try:
            proc = subprocess.Popen([PYTHON, "-c", HOLD, str(count)], user=uid, pass_fds=(3,),
                                    stdout=subprocess.PIPE, text=True,
                                    preexec_fn=lambda: os.dup2(fd, 3))
        finally:
            os.close(fd)
        started.append(proc)
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == str(count)  # holding them

    yield hold
    for proc in started:
        proc.kill()
        proc.wait(WAIT)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another uid")
def test_another_users_fd_at_the_same_path_does_not_hold_an_import(tmp_path, held_by):
    file = tmp_path / "whole.raw"
    file.write_bytes(b"x")
    held_by(str(file), NOBODY)
    assert not held_elsewhere(str(file), uid=os.getuid())  # the writer's (root's): none
    assert held_elsewhere(str(file), uid=NOBODY)  # the holder's own are seen


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run a process as another uid")
def test_another_users_many_fds_are_not_read(tmp_path, held_by, monkeypatch):
    """Measured before the fix: 4 ms a scan, 96 ms with 15,000 fds of another uid."""
    file = tmp_path / "other"
    file.write_bytes(b"x")
    held_by(str(file), NOBODY, 15000)
    read: list[str] = []
    readlink = os.readlink

    def counted(path, *args, **kwargs):
        read.append(path)
        return readlink(path, *args, **kwargs)

    monkeypatch.setattr(os, "readlink", counted)
    assert not held_elsewhere(str(tmp_path / "whole.raw"), uid=os.getuid())
    assert len(read) < 15000, len(read)  # the other uid's are not read
